/**
 * The cron warm-up (`scheduled`) in workerd against the sandbox: from cold one tick costs the
 * partner one token and one vehicles request and leaves this data centre serving without the
 * partner; ticks within the token's life cost no token; a tick past its refresh time costs one;
 * a failing partner makes a tick log a warning, not throw, and cost at most two requests.
 */
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CACHE_NAME } from "../../src/cache/snapshot-entry.ts";
import worker from "../../src/runtimes/cloudflare/worker.ts";
import { tierCacheKey } from "../../src/vehicles/tiers.ts";
import {
  advanceClock,
  coldStart,
  get,
  health,
  NOTHING,
  sandbox,
  sandboxCounts,
  workerConfig,
} from "../support/harness.ts";

/**
 * One cron tick: the Worker's own `scheduled` export, called as the runtime calls it. (In this
 * pool `exports.default` has no usable `scheduled()`: it resolves to undefined, with no outcome
 * and no way to wait for the work.) Resolves when its waitUntil work, the L2 fill too, is done.
 */
async function tick(): Promise<void> {
  const controller = createScheduledController({ scheduledTime: Date.now(), cron: "* * * * *" });
  const ctx = createExecutionContext();
  // The handler returns nothing; everything runs in waitUntil, which this waits for.
  await worker.scheduled(controller, env, ctx);
  await waitOnExecutionContext(ctx);
}

/** The structured log lines written at `level` since the spy was set, parsed. */
function logged(spy: { mock: { calls: unknown[][] } }): { event?: string; code?: string }[] {
  return spy.mock.calls.map((args) => {
    try {
      return JSON.parse(String(args[0])) as { event?: string; code?: string };
    } catch {
      return {};
    }
  });
}

async function l2Filled(): Promise<boolean> {
  const hit = await (await caches.open(CACHE_NAME)).match(tierCacheKey(workerConfig()));
  await hit?.body?.cancel();
  return hit !== undefined;
}

describe("scheduled warm-up", () => {
  beforeEach(coldStart);
  afterEach(async () => {
    await sandbox.clearFaults();
  });

  it("from cold: one token request, one partner request, the feed asked once; nothing filled here; vehicles then cost the partner nothing", async () => {
    expect(await l2Filled()).toBe(false);
    await tick();
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
    // Cron runs where users are not: neither this data centre's cache nor isolate memory is filled.
    expect(await l2Filled()).toBe(false);
    const h = await health();
    expect(h.body.gateway.counters.feedRequests).toBe(1);
    expect(h.body.isolate).toMatchObject({ fills: 0, cacheReads: 0 });

    // The first request fills from the object's fresh snapshot: no partner call.
    const first = await get("/v1/vehicles?limit=2");
    expect(first.status).toBe(200);
    expect(first.headers.get("cache-status")).toMatch(/^gateway-object; fwd=miss; stored/);
    expect(((await first.json()) as { vehicles: unknown[] }).vehicles).toHaveLength(2);

    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("ticks within the token's life request no token; a tick past its refresh time requests exactly one", async () => {
    await tick();
    expect(await sandboxCounts()).toMatchObject({ token: 1, vehicles: 1 });

    // Right away: token and snapshot are both fresh, the partner hears nothing.
    await tick();
    expect(await sandboxCounts()).toMatchObject({ token: 1, vehicles: 1 });

    // The next minute: the snapshot is renewed, the 300 s token is still good past the next tick.
    advanceClock(60_000);
    await tick();
    expect(await sandboxCounts()).toMatchObject({ token: 1, vehicles: 2 });

    // 250 s after it was issued the token is past its refresh time (at most 240 s for 300 s)
    // and would not outlast the next tick: one refresh.
    advanceClock(190_000);
    await tick();
    expect(await sandboxCounts()).toMatchObject({ token: 2, vehicles: 3 });

    // And the new one is not refreshed again on the following tick.
    advanceClock(60_000);
    await tick();
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 2, vehicles: 4 });
  });

  it("with a failing partner a tick logs a warning, does not throw, and sends at most two partner requests", async () => {
    await sandbox.faults({ vehicles: { kind: "status", status: 500 } });
    const warn = vi.spyOn(console, "warn");
    const error = vi.spyOn(console, "error");

    let before = await sandboxCounts();
    for (let i = 0; i < 4; i++) {
      await expect(tick()).resolves.toBeUndefined();
      const now = await sandboxCounts();
      expect(now.vehicles - before.vehicles, `tick ${i}`).toBeLessThanOrEqual(2);
      expect(now.token - before.token, `tick ${i}`).toBeLessThanOrEqual(1);
      before = now;
      advanceClock(60_000);
    }
    expect(before.vehicles).toBeGreaterThanOrEqual(1);
    expect(before.token).toBe(1);

    const warnings = logged(warn);
    expect(warnings.filter((l) => l.event === "warmup_failed").length).toBe(4);
    expect(warnings.find((l) => l.event === "warmup_failed")?.code).toMatch(/^partner_/);
    expect(logged(error).filter((l) => l.event === "unhandled_error")).toEqual([]);
    expect(await l2Filled()).toBe(false);

    // Nothing was ever fetched, so nothing is served: an honest problem, not a hang.
    const res = await get("/v1/vehicles?limit=1");
    expect([502, 503]).toContain(res.status);
    await res.body?.cancel();
  });
});
