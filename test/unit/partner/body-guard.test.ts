import { describe, expect, it } from "vitest";
import { createFleet } from "../../../sandbox/fleet.ts";
import { mulberry32 } from "../../../sandbox/prng.ts";
import {
  bodyLimits,
  CONTAINERS_PER_VEHICLE,
  checkBodyShape,
  VALUES_PER_VEHICLE,
} from "../../../src/partner/body-guard.ts";

const repeat = (unit: string, n: number): string => Array.from({ length: n }, () => unit).join(",");

describe("checkBodyShape", () => {
  it("accepts real partner bodies up to the vehicle cap, in both shapes, with exact counts", () => {
    const fleet = createFleet(7, 2_000).body(0).toString();
    // Each sandbox vehicle: 15 members + 2 in position + its place = 18 values, 2 containers.
    expect(checkBodyShape(fleet, 2_000)).toEqual({ ok: true, counts: { values: 36_000, containers: 4_001 } });
    const wrapped = `{"vehicles":${fleet}}`;
    expect(checkBodyShape(wrapped, 2_000)).toEqual({ ok: true, counts: { values: 36_001, containers: 4_002 } });
    expect(checkBodyShape("[]", 1)).toEqual({ ok: true, counts: { values: 1, containers: 1 } });
  });

  it("refuses 16 MiB of empty objects after counting past the container limit, not to the end", () => {
    const text = `[${repeat("{}", 5_592_400)}]`;
    expect(text.length).toBeGreaterThan(16 * 1024 * 1024 - 16);
    const v = checkBodyShape(text, 50_000);
    const max = bodyLimits(50_000).maxContainers;
    expect(v).toEqual({
      ok: false,
      counts: { values: max + 1, containers: max + 1 },
      reason: `more than ${max} objects and arrays`,
    });
  });

  it("refuses nested runs of small values (the vehicle cap alone would see one item)", () => {
    const { maxValues, maxContainers } = bodyLimits(10);
    expect(maxValues).toBe(10 * VALUES_PER_VEHICLE + 2);
    expect(maxContainers).toBe(10 * CONTAINERS_PER_VEHICLE + 2);
    // Exactly at the limit: accepted. One more: refused.
    expect(checkBodyShape(`[[${repeat("1", maxValues - 2 + 1)}]]`, 10).ok).toBe(true);
    expect(checkBodyShape(`[[${repeat("1", maxValues - 2 + 2)}]]`, 10)).toMatchObject({
      ok: false,
      reason: `more than ${maxValues} values`,
    });
    expect(checkBodyShape(`[[${repeat("[]", maxContainers - 2)}]]`, 10).ok).toBe(true);
    expect(checkBodyShape(`[[${repeat("[]", maxContainers - 1)}]]`, 10)).toMatchObject({
      ok: false,
      reason: `more than ${maxContainers} objects and arrays`,
    });
    expect(checkBodyShape("[".repeat(maxContainers + 1), 10).ok).toBe(false);
  });

  it("counts characters inside strings too: an upper bound, so it can refuse but never let more through", () => {
    const inString = `["${",".repeat(VALUES_PER_VEHICLE * 2)}"]`;
    expect(JSON.parse(inString)).toHaveLength(1);
    expect(checkBodyShape(inString, 1).ok).toBe(false);
    // A legitimate vehicle with a few commas and braces in its strings still passes.
    const vehicle =
      '{"vin":"WME4530421Y000001","vehicleName":"smart, fortwo {EQ}","position":{"latitude":1,"longitude":2}}';
    expect(checkBodyShape(`[${repeat(vehicle, 100)}]`, 100).ok).toBe(true);
  });

  it("leaves malformed JSON to the parser (it is small, or it would have been refused)", () => {
    expect(checkBodyShape('[{"vin":"x"', 1).ok).toBe(true);
    expect(checkBodyShape("not json", 1).ok).toBe(true);
  });
});

/** A random JSON value; strings may hold structural characters when `tricky`. */
function randomJson(r: () => number, depth: number, tricky: boolean): unknown {
  const pick = r();
  if (depth > 4 || pick < 0.35) {
    const k = Math.floor(r() * 5);
    if (k === 0) return Math.floor(r() * 1000) / 7;
    if (k === 1) return r() < 0.5;
    if (k === 2) return null;
    const chars = tricky ? 'ab,{}[]:"\\ é' : "abc xyz-.é";
    return Array.from({ length: Math.floor(r() * 8) }, () => chars[Math.floor(r() * chars.length)]).join("");
  }
  const n = Math.floor(r() * 6);
  if (pick < 0.65) return Array.from({ length: n }, () => randomJson(r, depth + 1, tricky));
  return Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, randomJson(r, depth + 1, tricky)]));
}

/** Exact counts of the parsed tree: containers, elements + members, and empty containers. */
function actual(v: unknown): { containers: number; values: number; empty: number } {
  if (v === null || typeof v !== "object") return { containers: 0, values: 0, empty: 0 };
  const kids = Array.isArray(v) ? v : Object.values(v);
  const out = { containers: 1, values: kids.length, empty: kids.length === 0 ? 1 : 0 };
  for (const k of kids) {
    const c = actual(k);
    out.containers += c.containers;
    out.values += c.values;
    out.empty += c.empty;
  }
  return out;
}

describe("checkBodyShape against the parsed tree (seeded random bodies)", () => {
  it("without structural characters in strings the counts are exact; with them, upper bounds; never accepts past a limit", () => {
    let refusedChecks = 0;
    for (let seed = 1; seed <= 400; seed++) {
      const r = mulberry32(seed);
      const tricky = seed % 2 === 0;
      const text = JSON.stringify(Array.from({ length: 1 + Math.floor(r() * 6) }, () => randomJson(r, 1, tricky)));
      const truth = actual(JSON.parse(text));
      const v = checkBodyShape(text, 1_000_000);
      expect(v.ok, `seed ${seed}`).toBe(true);
      if (tricky) {
        expect(v.counts.containers, `seed ${seed}`).toBeGreaterThanOrEqual(truth.containers);
        expect(v.counts.values, `seed ${seed}`).toBeGreaterThanOrEqual(truth.values);
      } else {
        expect(v.counts, `seed ${seed}`).toEqual({
          containers: truth.containers,
          values: truth.values + truth.empty,
        });
      }
      // With limits just below the truth, never accepted.
      const vehicles = Math.max(1, Math.floor((truth.containers - 3) / 4));
      const limits = bodyLimits(vehicles);
      if (truth.containers > limits.maxContainers || truth.values > limits.maxValues) {
        expect(checkBodyShape(text, vehicles).ok, `seed ${seed}`).toBe(false);
        refusedChecks++;
      }
    }
    expect(refusedChecks).toBeGreaterThan(100);
  });
});
