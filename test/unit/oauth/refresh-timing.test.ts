import { describe, expect, it } from "vitest";
import {
  isUsable,
  refreshMarginMs,
  safetyRemainderMs,
  scheduleRefresh,
  shouldRefresh,
  usableUntil,
} from "../../../src/oauth/refresh-timing.ts";

const T0 = 1_700_000_000_000;
const token = (lifetimeS: number) => ({ obtainedAt: T0, expiresAt: T0 + lifetimeS * 1000 });
const LOW = () => 0;
const HIGH = () => 0.999_999;

describe("refresh timing", () => {
  it("renews a 300 s token 60-90 s before it ends, hands it out until 5 s before", () => {
    const t = token(300);
    expect(T0 + 300_000 - scheduleRefresh(t, LOW)).toBe(60_000);
    expect(T0 + 300_000 - scheduleRefresh(t, HIGH)).toBeCloseTo(90_000, -1);
    expect(usableUntil(t)).toBe(T0 + 295_000);
    expect(isUsable(t, T0 + 294_999)).toBe(true);
    expect(isUsable(t, T0 + 295_000)).toBe(false);
  });

  it("renews a 5 s token about 1 s before its end, not sooner than half its lifetime", () => {
    const t = token(5);
    const low = scheduleRefresh(t, LOW);
    const high = scheduleRefresh(t, HIGH);
    expect(low).toBe(T0 + 4_000);
    expect(high).toBeGreaterThan(T0 + 3_500 - 1);
    expect(high).toBeGreaterThanOrEqual(T0 + 2_500); // minimum interval: no hot loop
    expect(usableUntil(t)).toBe(T0 + 4_000); // safety remainder min(5 s, 1 s)
    expect(isUsable(t, T0 + 3_999)).toBe(true);
    expect(isUsable(t, T0 + 4_000)).toBe(false);
  });

  it("for a 1 s token, refreshes when it stops being usable and never before 0.8 s", () => {
    const t = token(1);
    expect(safetyRemainderMs(1000)).toBe(200);
    for (const r of [LOW, HIGH, () => 0.5]) expect(scheduleRefresh(t, r)).toBe(T0 + 800);
    expect(isUsable(t, T0 + 799)).toBe(true);
    expect(isUsable(t, T0 + 800)).toBe(false);
  });

  it("keeps jitter within [0, min(10% of lifetime, 30 s))", () => {
    for (const lifeS of [1, 5, 60, 300, 3600, 86_400]) {
      const life = lifeS * 1000;
      const base = Math.min(Math.max(life * 0.2, 1000), 60_000);
      const span = Math.min(life * 0.1, 30_000);
      for (let i = 0; i < 200; i++) {
        const m = refreshMarginMs(life);
        expect(m).toBeGreaterThanOrEqual(base);
        expect(m).toBeLessThan(base + span + 1e-9);
      }
      expect(refreshMarginMs(life, LOW)).toBe(base);
    }
  });

  it("never treats a token as usable at or past its expiry, whatever the lifetime", () => {
    for (const lifeS of [0.001, 1, 5, 300, 86_400]) {
      const t = token(lifeS);
      expect(isUsable(t, t.expiresAt)).toBe(false);
      expect(isUsable(t, t.expiresAt + 1)).toBe(false);
      expect(isUsable(t, t.expiresAt - safetyRemainderMs(lifeS * 1000))).toBe(false);
      for (const r of [LOW, HIGH]) {
        const at = scheduleRefresh(t, r);
        expect(at).toBeLessThanOrEqual(usableUntil(t));
        expect(at).toBeLessThan(t.expiresAt);
      }
    }
    expect(isUsable({ obtainedAt: T0, expiresAt: T0 }, T0 - 10)).toBe(false);
  });

  it("shouldRefresh: past the refresh time and still usable", () => {
    const t = { ...token(300), refreshAt: T0 + 230_000 };
    expect(shouldRefresh(t, T0 + 229_999)).toBe(false);
    expect(shouldRefresh(t, T0 + 230_000)).toBe(true);
    expect(shouldRefresh(t, T0 + 294_999)).toBe(true);
    expect(shouldRefresh(t, T0 + 295_000)).toBe(false); // unusable: callers must wait, not background
  });
});
