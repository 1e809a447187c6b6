/**
 * What reaches the partner, counted by the sandbox: one token request and one partner request
 * for a burst on a cold start, none for cache-busting filters within the TTL, about one partner
 * request per TTL under steady traffic, and the Cache API answering when isolate memory is
 * bypassed. Config: TTL 30 s, stale 120 s.
 */
import { afterEach, describe, expect, it } from "vitest";
import { mulberry32, pick } from "../../sandbox/prng.ts";
import { resetIsolate } from "../../src/runtimes/cloudflare/isolate.ts";
import {
  advanceClock,
  cachedFetchedAt,
  coldStartEachCapturingLogs,
  expectNoLeaks,
  health,
  observe,
  sandboxCounts,
  type VehicleListBody,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

const TTL_MS = 30_000;

/** Runs `n` requests, at most `width` at a time. */
async function inBatches<T>(n: number, width: number, one: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let start = 0; start < n; start += width) {
    const batch = await Promise.all(Array.from({ length: Math.min(width, n - start) }, (_, k) => one(start + k)));
    out.push(...batch);
  }
  return out;
}

/** `n` different, valid filter strings from a seeded PRNG. */
function filterStrings(n: number, seed: number): string[] {
  const rnd = mulberry32(seed);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const p = new URLSearchParams();
    const lat = (40 + rnd() * 16).toFixed(4);
    const lon = (-4 + rnd() * 21).toFixed(4);
    if (rnd() < 0.4) {
      p.set("near", `${lat},${lon}`);
      p.set("radius", String(Math.ceil(rnd() * 20_000)));
    } else if (rnd() < 0.5) {
      p.set("bbox", `${lon},${lat},${(Number(lon) + rnd() * 2).toFixed(4)},${(Number(lat) + rnd()).toFixed(4)}`);
    }
    if (rnd() < 0.4) p.set("fuelType", pick(rnd, ["ELECTRIC", "gasoline", "DIESEL,electric", "hydrogen"]));
    // Every string unique whatever the draw (a cache-busting client's trick: a changing value).
    const level = rnd() < 0.3 ? Math.floor(rnd() * 100) : 0;
    p.set("minFuelLevel", `${level}.${String(i).padStart(4, "0")}`);
    if (rnd() < 0.3) p.set("transmission", pick(rnd, ["GA", "GM", "manual", "Automatic"]));
    if (rnd() < 0.3) p.set("seats", pick(rnd, ["2", "4", "5", "4,5", "2,5"]));
    p.set("limit", String((i % 50) + 1));
    out.push(p.toString());
  }
  return out;
}

const logs = coldStartEachCapturingLogs();

afterEach(async () => {
  await expectNoLeaks({ extra: logs() });
});

describe("vehicles endpoint: what reaches the partner", () => {
  // A load test: 500 answers of the whole isolate and gateway object, each a full snapshot transfer.
  it("500 concurrent requests on a cold start make 1 token request and 1 partner request", {
    timeout: 120_000,
  }, async () => {
    const answers = await Promise.all(
      Array.from({ length: 500 }, (_, i) => observe(`/v1/vehicles?limit=${(i % 20) + 1}`)),
    );
    const fetchedAt = new Set<string>();
    for (const a of answers) {
      expect(a.status).toBe(200);
      const body = JSON.parse(a.text) as VehicleListBody;
      expect(body.stale).toBe(false);
      fetchedAt.add(body.fetchedAt);
    }
    // One snapshot served them all.
    expect(fetchedAt.size).toBe(1);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
    const h = await health();
    expect(h.body.gateway.counters).toMatchObject({ tokenRequests: 1, partnerRequests: 1, snapshotFetches: 1 });
    // One transfer for the isolate: one object call and one load; the other 499 waited for it.
    expect(h.body.isolate).toMatchObject({ gatewayCalls: 1, cacheReads: 0, fills: 1, joined: 499, takeovers: 0 });
    const { memoryHits, cacheHits, gatewayCalls } = h.body.isolate;
    expect(memoryHits + cacheHits + gatewayCalls).toBe(500);
  });

  it("1,000 requests with 1,000 different filter strings within the TTL make no partner request beyond the first", async () => {
    const first = await observe("/v1/vehicles?limit=1");
    expect(first.status).toBe(200);
    const queries = filterStrings(1000, 20260101);
    expect(new Set(queries).size).toBe(1000);
    const answers = await inBatches(1000, 100, (i) => observe(`/v1/vehicles?${queries[i]}`));
    for (const [i, a] of answers.entries()) {
      expect(a.status, queries[i]).toBe(200);
      expect(a.headers.get("cache-status"), queries[i]).toMatch(/^gateway-memory; hit; ttl=\d+$/);
    }
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
    const h = await health();
    expect(h.body.isolate).toMatchObject({ memoryHits: 1000, cacheHits: 0, gatewayCalls: 1 });
    // The object answered once: filters never reach it, nor the partner.
    expect(h.body.gateway.counters).toMatchObject({ snapshotServed: 1, snapshotFetches: 1, partnerRequests: 1 });
  });

  it("steady traffic over 5 TTLs makes about one partner request per TTL", async () => {
    const stepMs = 3_000;
    const steps = (5 * TTL_MS) / stepMs;
    const isStale = (o: { text: string }) => (JSON.parse(o.text) as VehicleListBody).stale;
    let stale = 0;
    for (let step = 0; step <= steps; step++) {
      if (step > 0) advanceClock(stepMs);
      const answers = await Promise.all(
        ["limit=1", "fuelType=ELECTRIC&limit=2", "near=52.52,13.405&radius=2000"].map((q) =>
          observe(`/v1/vehicles?${q}`),
        ),
      );
      for (const a of answers) expect(a.status).toBe(200);
      if (answers.some(isStale)) {
        stale++;
        // Real time and the test's clock move together in production: let the refresh behind the
        // stale answer land (traffic keeps coming meanwhile) before the clock moves on.
        await waitFor("the refresh behind a stale answer", async () => !isStale(await observe("/v1/vehicles?limit=1")));
      }
    }
    const counts = await sandboxCounts();
    expect(counts.vehicles).toBeGreaterThanOrEqual(5);
    expect(counts.vehicles).toBeLessThanOrEqual(6);
    expect(counts).toEqual({ token: 1, vehicles: counts.vehicles, unexpected: 0, steal: 0 });
    // Every refresh after the first was stale-while-revalidate: nobody waited for the partner.
    expect(stale).toBe(counts.vehicles - 1);
    const h = await health();
    expect(h.body.gateway.counters.partnerRequests).toBe(counts.vehicles);
    // One object call per snapshot for this isolate: the cold step's three concurrent requests
    // joined one fill (two waited for it), and each later snapshot came from one revalidation.
    expect(h.body.isolate.gatewayCalls).toBe(counts.vehicles);
    expect(h.body.isolate.joined).toBe(2);
    expect(h.body.isolate.fills).toBe(counts.vehicles);
  });

  it("with isolate memory and rendered answers bypassed, the Cache API's snapshot answers: no gateway-object call beyond the first", async () => {
    const bypass = { headers: { "x-gateway-bypass": "memory,responses" } };
    const first = await observe("/v1/vehicles?limit=1", bypass);
    expect(first.headers.get("cache-status")).toMatch(/^gateway-object; fwd=miss; stored, gateway-cache; fwd=miss, /);
    await waitFor("the L2 entry", async () => (await cachedFetchedAt()) !== undefined);
    // The isolate read its entry back: the Cache API here keeps what it is given.
    await waitFor("the L2 check", async () => (await health()).body.isolate.cacheApi === "storing");

    const answers = await inBatches(100, 25, (i) => observe(`/v1/vehicles?limit=${i + 1}`, bypass));
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.headers.get("cache-status")).toMatch(/^gateway-cache; hit; ttl=\d+/);
    }
    // Each answer rebuilt from L2 is the same representation as the object's.
    expect(answers[0]!.headers.get("etag")).toBe(first.headers.get("etag"));

    const h = await health();
    expect(h.body.isolate).toMatchObject({ memoryHits: 0, cacheHits: 100, gatewayCalls: 1 });
    expect(h.body.gateway.counters).toMatchObject({ snapshotServed: 1, partnerRequests: 1 });
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("with both edge tiers bypassed, the gateway object answers every request from its one snapshot", async () => {
    const bypass = { headers: { "x-gateway-bypass": "memory,cache" } };
    const answers = await inBatches(60, 20, (i) => observe(`/v1/vehicles?limit=${i + 1}`, bypass));
    for (const a of answers) expect(a.status).toBe(200);
    const h = await health();
    expect(h.body.isolate).toMatchObject({ memoryHits: 0, cacheHits: 0, gatewayCalls: 60 });
    expect(h.body.gateway.counters).toMatchObject({ snapshotServed: 60, snapshotFetches: 1, partnerRequests: 1 });
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("a new isolate in the same data centre is served by the Cache API, not by the partner", async () => {
    const first = await observe("/v1/vehicles?limit=1");
    await waitFor("the L2 entry", async () => (await cachedFetchedAt()) !== undefined);
    await waitFor("the rendered answer in L2", async () => (await health()).body.isolate.responsePuts === 1);
    resetIsolate();
    advanceClock(5_000);
    // The same query: the rendered answer, passed through; L1 stays empty.
    const same = await observe("/v1/vehicles?limit=1");
    expect(same.headers.get("cache-status")).toMatch(
      /^gateway-cache; hit; ttl=2[45]; detail=response, gateway-memory; fwd=miss$/,
    );
    expect(same.headers.get("etag")).toBe(first.headers.get("etag"));
    expect(same.text).toBe(first.text);
    // Another query: the snapshot, which fills L1.
    const other = await observe("/v1/vehicles?limit=2");
    expect(other.headers.get("cache-status")).toMatch(
      /^gateway-cache; hit; ttl=2[45], gateway-memory; fwd=miss; stored$/,
    );
    const again = await observe("/v1/vehicles?limit=1");
    expect(again.headers.get("cache-status")).toMatch(/^gateway-memory; hit/);
    expect(again.headers.get("etag")).toBe(first.headers.get("etag"));
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });
});
