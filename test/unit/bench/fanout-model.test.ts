import { describe, expect, it } from "vitest";
import { fanout, fanoutMarkdown } from "../../../bench/fanout-model.ts";

// One object call at 20,000 vehicles: 8 MB and 10 ms of CPU (round numbers, the shape of a measurement).
const COST = { size: 20000, bytes: 8_000_000, cpuUs: 10_000 };

describe("fan-out model (issue 11 item 4)", () => {
  it("without the tiered feed, one object call per data centre per TTL", () => {
    const [r50, r300] = fanout([COST], [50, 300], 30, 20);
    expect(r50!.without).toMatchObject({ calls: 50, mbPerTtl: 400 });
    expect(r300!.without.calls).toBe(300);
    expect(r300!.without.mbPerTtl).toBe(2400);
    expect(r300!.without.mbPerS).toBe(80);
    expect(r300!.without.cpuSPerTtl).toBeCloseTo(3, 9);
    expect(r300!.without.busy).toBeCloseTo(0.1, 9);
  });

  it("with the tiered feed, calls are bounded by the upper tiers, not by the data centres", () => {
    const rows = fanout([COST], [10, 50, 300], 30, 20);
    expect(rows.map((r) => r.tiered.calls)).toEqual([10, 20, 20]);
    expect(rows[2]!.tiered.mbPerTtl).toBe(160);
    expect(fanout([COST], [300], 30, 1)[0]!.tiered.calls).toBe(1);
  });

  it("one row per fleet size and data-centre count, in a markdown table", () => {
    const md = fanoutMarkdown(fanout([COST, { ...COST, size: 50000 }], [50, 300], 30, 20), 30, 20);
    const lines = md.split("\n");
    expect(lines).toHaveLength(2 + 4);
    expect(lines[0]).toContain("tiered feed (<= 20 upper tiers)");
    expect(lines[3]).toBe(
      "| 20,000 | 300 | 8.00 / 10.0 | 300 | 2400 (80.0) | 3.00 (10 %) | 20 | 160 (5.3) | 0.20 (0.7 %) |",
    );
  });
});
