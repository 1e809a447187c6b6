/**
 * Stale serving in workerd against the sandbox: past the TTL the last good copy is served at
 * once, marked stale, while one refresh runs behind it (stale-while-revalidate); with the partner
 * failing it stays served until TTL + stale (stale-if-error), then the failure shows as a
 * 502/503 problem; once the partner is back, fresh data returns. Config: TTL 30 s, stale 120 s.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  advanceClock,
  coldStartEachCapturingLogs,
  expectNoLeaks,
  health,
  type Observed,
  observe,
  observeJson,
  sandbox,
  sandboxCounts,
  type VehicleBody,
  type VehicleListBody,
} from "../support/harness.ts";
import { expectProblem } from "../support/problem.ts";
import { waitFor } from "../support/wait.ts";

const TTL_MS = 30_000;
const STALE_MS = 120_000;

/**
 * The first `ttl` of Cache-Status: `expected`, or up to 2 s less (real time passes during a
 * test too, and the clock under test is the real one plus the advances).
 */
function expectTtl(o: Observed, expected: number): void {
  const ttl = Number(/ttl=(-?\d+)/.exec(o.headers.get("cache-status") ?? "")?.[1]);
  expect(ttl, o.headers.get("cache-status") ?? "no Cache-Status").toBeLessThanOrEqual(expected);
  expect(ttl).toBeGreaterThanOrEqual(expected - 2);
}

/** The sandbox's partner count, once it has stopped moving (background refreshes done). */
async function settledPartnerRequests(expected: number): Promise<void> {
  await waitFor(`${expected} partner requests`, async () => (await sandboxCounts()).vehicles >= expected);
  // Nothing more trickles in behind.
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect((await sandboxCounts()).vehicles).toBe(expected);
}

const logs = coldStartEachCapturingLogs();

afterEach(async () => {
  await sandbox.clearFaults();
  await expectNoLeaks({ extra: logs() });
});

describe("vehicles endpoint: stale serving", () => {
  it("a partner failing with 500: stale within TTL + stale, one background refresh, then 502, then fresh again", async () => {
    const fresh = await observeJson<VehicleListBody>("/v1/vehicles?limit=3");
    expect(fresh.body.stale).toBe(false);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });

    await sandbox.faults({ vehicles: { kind: "status", status: 500 } });
    advanceClock(TTL_MS + 1_000);
    const stale = await observeJson<VehicleListBody>("/v1/vehicles?limit=3");
    expect(stale.status).toBe(200);
    expect(stale.body.stale).toBe(true);
    expect(stale.body.fetchedAt).toBe(fresh.body.fetchedAt);
    expect(stale.body.vehicles).toEqual(fresh.body.vehicles);
    expect(stale.headers.get("cache-status")).toMatch(/^gateway-memory; hit; ttl=-\d+$/);
    expectTtl(stale, -1);
    expect(stale.headers.get("cache-control")).toBe("public, max-age=0, must-revalidate");
    expect(Number(stale.headers.get("age"))).toBeGreaterThanOrEqual(31);

    // One background refresh: one partner fetch, which the client retries once after a 5xx.
    await settledPartnerRequests(3);
    const h = await health();
    expect(h.body.gateway.counters).toMatchObject({ snapshotFetches: 2, partnerRequests: 3, partnerFailures: 1 });
    expect(h.body.gateway.snapshot.fetchedAt).toBe(Date.parse(fresh.body.fetchedAt));

    // More readers within the stale window get the same stale copy; the single vehicle route too.
    // (The clock stays under 210 s in this test: the token's refresh, with its jitter, may come
    // from there on, and this test counts one token request.)
    advanceClock(30_000);
    const later = await observeJson<VehicleListBody>("/v1/vehicles?limit=3");
    expect(later.status).toBe(200);
    expect(later.body).toMatchObject({ stale: true, fetchedAt: fresh.body.fetchedAt });
    expectTtl(later, -31);
    const vin = fresh.body.vehicles[0]!.vin;
    const one = await observeJson<VehicleBody>(`/v1/vehicles/${vin}`);
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ stale: true, fetchedAt: fresh.body.fetchedAt, vehicle: fresh.body.vehicles[0] });
    // That is one more refresh attempt (another guard window), again retried once.
    await settledPartnerRequests(5);

    // Past TTL + stale (at 151 s) with the partner still failing: nothing left to serve.
    advanceClock(TTL_MS + STALE_MS - 61_000 + 1_000);
    const failed = await observe("/v1/vehicles?limit=3");
    const problem = expectProblem(failed, { status: 502, code: "partner_error" });
    expect(failed.headers.get("retry-after")).toBeNull();
    expect(problem.detail).toBe("HTTP 500");
    expect(failed.text).not.toContain("<html");
    await settledPartnerRequests(7);

    // The partner recovers: fresh data at once.
    await sandbox.clearFaults();
    const back = await observeJson<VehicleListBody>("/v1/vehicles?limit=3");
    expect(back.status).toBe(200);
    expect(back.body.stale).toBe(false);
    expect(Date.parse(back.body.fetchedAt)).toBeGreaterThan(Date.parse(fresh.body.fetchedAt) + TTL_MS + STALE_MS);
    expect(back.headers.get("cache-status")).toMatch(/^gateway-object; fwd=miss; stored/);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 8, unexpected: 0, steal: 0 });
  });

  it("with a failing partner, readers of the stale copy start at most one refresh per isolate per guard window", async () => {
    await observeJson<VehicleListBody>("/v1/vehicles?limit=1");
    await sandbox.faults({ vehicles: { kind: "status", status: 502 } });
    advanceClock(TTL_MS + 1_000);
    // Many readers at once, then more after the first refresh failed, all within 5 s.
    const first = await Promise.all(
      Array.from({ length: 20 }, () => observeJson<VehicleListBody>("/v1/vehicles?limit=1")),
    );
    for (const r of first) expect(r.body.stale).toBe(true);
    await settledPartnerRequests(3);
    for (let i = 0; i < 3; i++) {
      advanceClock(1_000);
      const r = await observeJson<VehicleListBody>("/v1/vehicles?limit=1");
      expect(r.body.stale).toBe(true);
    }
    await settledPartnerRequests(3);
    // Once the window (5 s) has passed, the next reader tries again (once).
    advanceClock(2_500);
    await Promise.all(Array.from({ length: 5 }, () => observeJson<VehicleListBody>("/v1/vehicles?limit=1")));
    await settledPartnerRequests(5);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 5, unexpected: 0, steal: 0 });
  });

  it("a partner failing with 503 and Retry-After: stale, then 503 with Retry-After, and no call inside the window", async () => {
    const fresh = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    await sandbox.faults({ vehicles: { kind: "status", status: 503, retryAfter: 7 } });
    advanceClock(TTL_MS + 5_000);
    const stale = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    expect(stale.status).toBe(200);
    expect(stale.body).toMatchObject({ stale: true, fetchedAt: fresh.body.fetchedAt });
    expect(stale.headers.get("cache-status")).toMatch(/^gateway-memory; hit; ttl=-\d+$/);
    expectTtl(stale, -5);
    // A 503 is not retried at once: one background attempt, one partner request.
    await settledPartnerRequests(2);

    advanceClock(STALE_MS);
    const failed = await observe("/v1/vehicles?limit=2");
    expectProblem(failed, { status: 503, code: "partner_unavailable" });
    expect(failed.headers.get("retry-after")).toBe("7");
    await settledPartnerRequests(3);

    // Inside the partner's Retry-After window nothing goes out; the client is told how long is left.
    advanceClock(3_000);
    const again = await observe("/v1/vehicles?limit=2");
    expectProblem(again, { status: 503, code: "partner_unavailable" });
    expect(Number(again.headers.get("retry-after"))).toBeGreaterThanOrEqual(3);
    expect(Number(again.headers.get("retry-after"))).toBeLessThanOrEqual(4);
    await settledPartnerRequests(3);

    // The partner is back; once its window has passed, fresh data.
    await sandbox.clearFaults();
    advanceClock(5_000);
    const back = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    expect(back.status).toBe(200);
    expect(back.body.stale).toBe(false);
    expect(Date.parse(back.body.fetchedAt)).toBeGreaterThan(Date.parse(fresh.body.fetchedAt));
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 4, unexpected: 0, steal: 0 });
  });

  it("a partner answering 429: stale within the window, past it 503 with Retry-After", async () => {
    await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    await sandbox.faults({ vehicles: { kind: "tooManyRequests", retryAfter: 4 } });
    advanceClock(TTL_MS + STALE_MS - 10_000);
    const stale = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    expect(stale.body.stale).toBe(true);
    await settledPartnerRequests(2);
    advanceClock(20_000);
    const failed = await observe("/v1/vehicles?limit=2");
    expectProblem(failed, { status: 503, code: "partner_rate_limited" });
    expect(failed.headers.get("retry-after")).toBe("4");
    await settledPartnerRequests(3);
    await sandbox.clearFaults();
    advanceClock(5_000);
    const back = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    expect(back.body.stale).toBe(false);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 4, unexpected: 0, steal: 0 });
  });

  it("stale-while-revalidate with a healthy partner: the stale copy now, fresh data on the next request", async () => {
    const fresh = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    advanceClock(TTL_MS + 10_000);
    const stale = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    expect(stale.body).toMatchObject({ stale: true, fetchedAt: fresh.body.fetchedAt });
    await settledPartnerRequests(2);
    const next = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    expect(next.body.stale).toBe(false);
    expect(Date.parse(next.body.fetchedAt)).toBeGreaterThanOrEqual(Date.parse(fresh.body.fetchedAt) + TTL_MS + 10_000);
    expect(next.headers.get("cache-status")).toMatch(/^gateway-memory; hit; ttl=(29|30)$/);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 2, unexpected: 0, steal: 0 });
  });

  it("the gateway object serves its own stale copy to a new isolate (stale-if-error, named in Cache-Status)", async () => {
    const fresh = await observeJson<VehicleListBody>("/v1/vehicles?limit=2");
    await sandbox.faults({ vehicles: { kind: "status", status: 500 } });
    advanceClock(TTL_MS + 20_000);
    // Skip this isolate's tiers. The feed asks the object for a fresh snapshot (what it answers is
    // kept by Workers Cache for the rest of a TTL): the object tries its one refresh, which fails,
    // and then serves its stale copy, saying why (stale-if-error).
    const bypass = { headers: { "x-gateway-bypass": "memory,cache" } };
    const first = await observeJson<VehicleListBody>("/v1/vehicles?limit=2", bypass);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ stale: true, fetchedAt: fresh.body.fetchedAt });
    expect(first.headers.get("cache-status")).toMatch(
      /^gateway-object; hit; ttl=-\d+; detail=stale-if-error, gateway-cache; fwd=bypass, gateway-memory; fwd=bypass$/,
    );
    expectTtl(first, -20);
    const afterFirst = (await sandboxCounts()).vehicles;
    // The initial fetch, then one refresh with its retries; nothing left running behind the answer.
    expect(afterFirst).toBeGreaterThanOrEqual(2);
    const second = await observeJson<VehicleListBody>("/v1/vehicles?limit=2", bypass);
    expect(second.body.stale).toBe(true);
    expect(second.headers.get("cache-status")).toMatch(/^gateway-object; hit; ttl=-\d+; detail=stale-if-error, /);
    expectTtl(second, -20);
    // The object's backoff after the failed refresh: the second answer cost the partner nothing.
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: afterFirst, unexpected: 0, steal: 0 });
  });
});
