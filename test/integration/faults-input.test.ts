/**
 * Bad input: every query parameter malformed, oversized URLs, wrong methods, bodies, invalid VINs
 * and path tricks. Each case asserts its status and problem document and that it cost no token
 * and no partner request (the Worker answers before any tier is touched); afterAll, the leak scan.
 */
import { describe, expect, it } from "vitest";
import { NOTHING, sandboxCounts } from "../support/harness.ts";
import { scanSuite } from "../support/leak-scan.ts";
import { expectNoInternals, expectProblem } from "../support/problem.ts";

const scan = scanSuite({ logLines: false });

const VIN = "WME4533911K123456";
const list = (n: number, item: (i: number) => string) => Array.from({ length: n }, (_, i) => item(i)).join(",");

/** Malformed values of every parameter of GET /v1/vehicles (each sent alone, or with what it needs). */
const MALFORMED: Record<string, string[]> = {
  bbox: [
    "",
    "1,2,3",
    "1,2,3,4,5",
    "a,b,c,d",
    "13.5,52.5,13.3,52.4",
    "200,0,201,1",
    "0,-91,1,1",
    "Infinity,0,1,1",
    "NaN,0,1,1",
    "0x1,0,2,1",
    "1e1,0,20,1",
    "1,,2,3",
    "1;2;3;4",
  ],
  near: ["", "52.5", "52.5,13.4,1", "91,0", "0,181", "a,b", "NaN,1", "52.5,", ",13.4", "52.5 13.4"],
  radius: ["0", "-1", "50001", "abc", "1e3", "", "Infinity", "0x10"],
  fuelType: ["", ",", "ELEC TRIC", "a".repeat(33), list(17, (i) => `F${i}`), "<script>", "ELECTRIC,,DIESEL"],
  minFuelLevel: ["-1", "101", "abc", "", "1e2", "0x10", "50%", "NaN"],
  transmission: ["", "X", "GAA", "auto", "GA,GM"],
  seats: ["0", "21", "1.5", "a", "", list(17, () => "4"), "-1", "4,,5", "100"],
  limit: ["0", "-1", "5001", "1.5", "abc", "", "1e3", "99999999", " 1", "0x10", "１"],
};

describe("malformed query parameters: 400 invalid_parameter naming the parameter, no request upstream", () => {
  it.each(Object.entries(MALFORMED))("%s", async (name, values) => {
    for (const value of values) {
      const extra = name === "radius" ? "&near=52.52,13.405" : "";
      const a = await scan.fetch(`/v1/vehicles?${name}=${encodeURIComponent(value)}${extra}`);
      const body = expectProblem(a, { status: 400, code: "invalid_parameter", retryAfter: "absent" });
      expect(body.parameter, `${name}=${value}`).toBe(name);
    }
    expect(await sandboxCounts()).toEqual(NOTHING);
  });

  it("unknown, repeated, case-shifted and dependent parameters", async () => {
    const cases: [string, string][] = [
      ["foo=1", "foo"],
      ["_=1700000000000", "_"],
      ["cb=123", "cb"],
      ["Limit=1", "Limit"],
      ["url=https://evil.example", "url"],
      ["api=https://evil.example", "api"],
      ["limit=1&limit=1", "limit"],
      ["fuelType=ELECTRIC&fuelType=DIESEL", "fuelType"],
      ["radius=500", "radius"],
      ["=1", ""],
      ["%=1", "%"],
      [`${"x".repeat(100)}=1`, "x".repeat(64)],
    ];
    for (const [query, parameter] of cases) {
      const body = expectProblem(await scan.fetch(`/v1/vehicles?${query}`), {
        status: 400,
        code: "invalid_parameter",
        retryAfter: "absent",
      });
      expect(body.parameter, query).toBe(parameter);
    }
    // The VIN route takes no query at all.
    expectProblem(await scan.fetch(`/v1/vehicles/${VIN}?limit=1`), {
      status: 400,
      code: "invalid_parameter",
      retryAfter: "absent",
    });
    expect(await sandboxCounts()).toEqual(NOTHING);
  });
});

describe("oversized requests: 414 query_too_large, nothing echoed, no request upstream", () => {
  it("a query string over 2 KiB, a URL over 4 KiB, many parameters, a long path", async () => {
    const urls = [
      `/v1/vehicles?fuelType=${"A".repeat(2100)}`,
      `/v1/vehicles?near=${"1".repeat(5000)}`,
      `/v1/vehicles?${list(600, (i) => `p${i}=1`).replaceAll(",", "&")}`,
      `/v1/vehicles?${"&".repeat(3000)}`,
      `/v1/vehicles/${"A".repeat(5000)}`,
      `/v1/${"a".repeat(5000)}`,
    ];
    for (const url of urls) {
      const a = await scan.fetch(url);
      expectProblem(a, { status: 414, code: "query_too_large", retryAfter: "absent" });
      expect(a.text.length).toBeLessThan(url.length);
    }
    expect(await sandboxCounts()).toEqual(NOTHING);
  });
});

describe("wrong methods: 405 with Allow, no request upstream", () => {
  const routes = ["/v1/vehicles", `/v1/vehicles/${VIN}`, "/health"];
  const methods = ["POST", "PUT", "PATCH", "DELETE", "TRACE", "PROPFIND", "MKCOL", "LOCK", "PURGE"];
  it.each(routes)("%s", async (route) => {
    for (const method of methods) {
      const a = await scan.fetch(route, { method });
      expectProblem(a, { status: 405, code: "method_not_allowed", retryAfter: "absent" });
      expect(a.headers.get("allow"), `${method} ${route}`).toBe("GET, HEAD, OPTIONS");
    }
    expect(await sandboxCounts()).toEqual(NOTHING);
  });

  it("an unknown route is 404 not_found whatever the method", async () => {
    for (const method of ["GET", "POST", "DELETE"]) {
      expectProblem(await scan.fetch("/v2/vehicles", { method }), {
        status: 404,
        code: "not_found",
        retryAfter: "absent",
      });
    }
    expect(await sandboxCounts()).toEqual(NOTHING);
  });
});

describe("bodies: 413 body_not_allowed on GET and HEAD, 405 on other methods, no request upstream", () => {
  it("GET and HEAD announcing a body (Content-Length, Transfer-Encoding): 413", async () => {
    const requests: [string, RequestInit][] = [
      ["/v1/vehicles", { headers: { "content-length": "3" } }],
      ["/v1/vehicles", { headers: { "transfer-encoding": "chunked" } }],
      [`/v1/vehicles/${VIN}`, { headers: { "content-length": "10" } }],
      ["/health", { headers: { "content-length": "1" } }],
    ];
    for (const [path, init] of requests) {
      expectProblem(await scan.fetch(path, init), { status: 413, code: "body_not_allowed", retryAfter: "absent" });
    }
    const head = await scan.fetch("/v1/vehicles", { method: "HEAD", headers: { "content-length": "3" } });
    expect(head.status).toBe(413);
    expect(head.headers.get("cache-control")).toBe("no-store");
    expect(head.headers.get("x-content-type-options")).toBe("nosniff");
    // Content-Length: 0 is no body.
    expect((await scan.fetch("/health", { headers: { "content-length": "0" } })).status).toBe(200);
    expect(await sandboxCounts()).toEqual(NOTHING);
  });

  it("POST, PUT and PATCH with a body (small, 1 MB, streamed): 405, the method being the first mistake; the body is never read", async () => {
    const stream = () =>
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode('{"limit":1}'));
          c.close();
        },
      });
    const requests: [string, RequestInit][] = [
      ["/v1/vehicles", { method: "POST", body: '{"limit":1}' }],
      ["/v1/vehicles", { method: "PUT", body: "x".repeat(1_000_000) }],
      [`/v1/vehicles/${VIN}`, { method: "PATCH", body: stream() }],
      ["/v1/vehicles", { method: "POST", body: stream(), headers: { "content-length": "11" } }],
    ];
    for (const [path, init] of requests) {
      const a = await scan.fetch(path, init);
      expectProblem(a, { status: 405, code: "method_not_allowed", retryAfter: "absent" });
      expect(a.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
    }
    expect(await sandboxCounts()).toEqual(NOTHING);
  });
});

describe("invalid VINs: 400 invalid_vin, no request upstream", () => {
  it("too short, too long, I/O/Q, punctuation, unicode, encoded bytes", async () => {
    const vins = [
      "abc",
      "WME4533911K12345",
      "WME4533911K1234567",
      "WME4533911K12345I",
      "WME4533911K12345O",
      "WME4533911K12345Q",
      "WME4533911K12345-",
      "WME4533911K12345_",
      "WME4533911K12345%20",
      "%00",
      "%",
      "%zz",
      "%C4%B0",
      encodeURIComponent("ＷＭＥ4533911K123456"),
      encodeURIComponent("WMЕ4533911K123456"), // a Cyrillic Е
      "..%2f..%2fhealth",
      "WME4533911K123456%2f",
      "'%20OR%201=1--",
      "%3Cscript%3E",
    ];
    for (const vin of vins) {
      const a = await scan.fetch(`/v1/vehicles/${vin}`);
      const body = expectProblem(a, { status: 400, code: "invalid_vin", retryAfter: "absent" });
      expect(body.detail, vin).toBe("a VIN is 17 characters of A-H, J-N, P, R-Z and 0-9");
    }
    expect(await sandboxCounts()).toEqual(NOTHING);
  });
});

describe("path tricks", () => {
  it("dot segments, encoded slashes and dots, double and trailing slashes, case, unicode: 404 not_found, no request upstream", async () => {
    const paths = [
      "/v1/vehicles/",
      "/v1/vehicles//",
      "/v1//vehicles",
      "//v1/vehicles",
      "/v1/vehicles/..",
      "/v1/vehicles/%2e%2e",
      "/v1/vehicles/.%2E/",
      "/v1/vehicles%2f",
      `/v1/vehicles%2F${VIN}`,
      "/v1%2fvehicles",
      "/v1/vehicles%00",
      "/v1/vehicles;x=1",
      `/v1/vehicles/${VIN}/`,
      `/v1/vehicles/${VIN}/extra`,
      "/V1/VEHICLES",
      "/v1/vehículos",
      "/v1/vehicles%E2%80%8B",
      "/v1/vehicles\\",
      "/health/",
      "/HEALTH",
      "/.env",
      "/api/rental/partner/vehicles",
      "/auth/realms/partner/protocol/openid-connect/token",
      "/__sandbox/secrets",
    ];
    for (const path of paths) {
      const a = await scan.fetch(path);
      expectProblem(a, { status: 404, code: "not_found", retryAfter: "absent" });
    }
    expect(await sandboxCounts()).toEqual(NOTHING);
  });

  it("dot segments that resolve (WHATWG URL) to /health answer /health: no request upstream", async () => {
    for (const path of ["/v1/vehicles/../../health", "/v1/vehicles/%2e%2e/%2E%2E/health", "/x/./../health"]) {
      const a = await scan.fetch(path);
      expect(a.status, path).toBe(200);
      expect(a.json()).toMatchObject({ status: "ok" });
      expectNoInternals(a);
    }
    expect(await sandboxCounts()).toEqual(NOTHING);
  });

  it("percent-encoded unreserved characters name the same resource (RFC 3986 §6.2.2.2): one partner request for all of them", async () => {
    expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
    expect((await scan.fetch("/v1/ve%68icles?limit=1")).status).toBe(200);
    expect((await scan.fetch("/v1/%76ehicles?%6Cimit=1")).status).toBe(200);
    const vin = (await scan.fetch("/v1/vehicles?limit=1")).json<{ vehicles: { vin: string }[] }>().vehicles[0]!.vin;
    const encoded = `${vin.slice(0, -1)}%${vin.charCodeAt(16).toString(16)}`;
    expect((await scan.fetch(`/v1/vehicles/${encoded}`)).status).toBe(200);
    expect((await scan.fetch(`/v1/vehicles/${vin.toLowerCase()}`)).status).toBe(200);
    expectProblem(await scan.fetch(`/v1/vehicles/${VIN}`), {
      status: 404,
      code: "vehicle_not_found",
      retryAfter: "absent",
    });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });
});
