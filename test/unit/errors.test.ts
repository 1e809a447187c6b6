import { describe, expect, it } from "vitest";
import { AppError, problemResponse } from "../../src/errors.ts";

describe("problemResponse", () => {
  it("maps an AppError to RFC 9457 problem+json with its stable code", async () => {
    const res = problemResponse(new AppError("partner_rate_limited", { retryAfterS: 12.2 }), {
      instance: "/v1/vehicles",
    });
    expect(res.status).toBe(503);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(res.headers.get("retry-after")).toBe("13");
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ status: 503, code: "partner_rate_limited", instance: "/v1/vehicles" });
  });

  it("turns unknown errors into a generic 500 without their message", async () => {
    const res = problemResponse(new Error("secret detail s3cr3t"));
    expect(res.status).toBe(500);
    expect(await res.text()).not.toContain("s3cr3t");
  });
});
