import { describe, expect, it } from "vitest";
import { newRequestId } from "../../../src/http/request-id.ts";

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("newRequestId", () => {
  it("gives version 4 UUIDs (RFC 9562), all different, across many draws of the pool", () => {
    // 256 ids per draw: 2,000 ids cross several draws and the boundaries between them.
    const ids = Array.from({ length: 2000 }, () => newRequestId());
    for (const id of ids) expect(id).toMatch(V4);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("spreads its random bits: every hex digit appears in every free position", () => {
    const ids = Array.from({ length: 4000 }, () => newRequestId().replaceAll("-", ""));
    // Position 12 is the version (always 4); position 16 the variant (8, 9, a or b).
    for (const pos of [0, 7, 13, 20, 31]) {
      expect(new Set(ids.map((id) => id[pos])).size, `position ${pos}`).toBe(16);
    }
    expect(new Set(ids.map((id) => id[12]))).toEqual(new Set(["4"]));
    expect(new Set(ids.map((id) => id[16]))).toEqual(new Set(["8", "9", "a", "b"]));
  });
});
