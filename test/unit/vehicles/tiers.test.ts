/**
 * The tiers through the app, with the ports faked: the versioned L2 key, a damaged L2 entry, and
 * one fill per isolate for concurrent cold requests (plain state and each waiter's own timers).
 */
import { describe, expect, it } from "vitest";
import { createApp } from "../../../src/app.ts";
import { MemoryResponseCache } from "../../../src/cache/memory-cache.ts";
import { envelopeToResponse } from "../../../src/cache/snapshot-entry.ts";
import { type Config, parseConfig } from "../../../src/config.ts";
import type { SnapshotEnvelope, SnapshotResult } from "../../../src/gateway/types.ts";
import type { Deps, SnapshotSource } from "../../../src/ports.ts";
import { newIsolateMemory } from "../../../src/vehicles/isolate-memory.ts";
import { loadPrepared, PREPARED_FORMAT, prepareSnapshot } from "../../../src/vehicles/prepared.ts";
import { VEHICLE_FIELDS, type Vehicle } from "../../../src/vehicles/schema.ts";
import {
  allowListVersion,
  FILL_DEADLINE_MS,
  loadTiers,
  PROBE_DEADLINE_MS,
  tierCacheKey,
} from "../../../src/vehicles/tiers.ts";
import { waitFor } from "../../support/wait.ts";

const vehicles: Vehicle[] = [1, 2, 3].map((i) => ({
  vin: `WME4530421Y00000${i}`,
  numberPlate: `B-SN ${i}`,
  position: { latitude: 52.5 + i / 100, longitude: 13.4 },
  fuelType: i === 2 ? "ELECTRIC" : "GASOLINE",
  fuelLevel: 20 * i,
}));

function envelope(fetchedAt: number, list: Vehicle[] = vehicles): Promise<SnapshotEnvelope> {
  return prepareSnapshot(list, { fetchedAt, dropped: 0 });
}

function setup(opts: { bypass?: boolean } = {}) {
  const config = parseConfig({
    PARTNER_CLIENT_ID: "unit-client",
    PARTNER_CLIENT_SECRET: "unit-secret",
    ...(opts.bypass ? { ALLOW_TIER_BYPASS: "true" } : {}),
  }) as Config;
  const calls = { gateway: 0, logs: [] as string[] };
  // The gateway answers when the test says so (`release`), or at once when `auto` is set.
  let fromGateway: SnapshotResult | undefined;
  const waiting: (() => void)[] = [];
  let auto = true;
  const gateway: SnapshotSource = {
    async getSnapshot() {
      calls.gateway++;
      if (!auto) await new Promise<void>((resolve) => waiting.push(resolve));
      fromGateway ??= { ok: true, snapshot: await envelope(Date.now()), stale: false };
      return fromGateway;
    },
    async status() {
      throw new Error("not used");
    },
    async warm() {
      throw new Error("not used");
    },
  };
  const cache = new MemoryResponseCache();
  const deps: Deps = {
    config,
    gateway,
    cache,
    clock: { now: () => Date.now() },
    log: { log: (level, event, fields) => calls.logs.push(JSON.stringify({ level, event, ...fields })) },
    rateLimit: undefined,
    allowTierBypass: opts.bypass === true,
    memory: newIsolateMemory(),
  };
  const pending: Promise<unknown>[] = [];
  const ctx = { waitUntil: (p: Promise<unknown>) => pending.push(p), passThroughOnException() {}, props: {} };
  const app = createApp();
  const get = (path: string, headers: Record<string, string> = {}, method = "GET") =>
    app.fetch(new Request(`https://gw.test${path}`, { headers, method }), { deps }, ctx);
  /** Everything handed to waitUntil so far, settled. */
  const settle = async () => {
    while (pending.length) await Promise.allSettled(pending.splice(0));
  };
  const putL2 = (env: SnapshotEnvelope, key = tierCacheKey(config)) => cache.put(key, envelopeToResponse(env, 150));
  return {
    get,
    calls,
    deps,
    cache,
    config,
    settle,
    putL2,
    setGateway: (r: SnapshotResult) => {
      fromGateway = r;
    },
    /** Gateway calls wait for `release()` from now on. */
    hold: () => {
      auto = false;
    },
    release: () => {
      auto = true;
      for (const w of waiting.splice(0)) w();
    },
    waitingCalls: () => waiting.length,
  };
}

describe("the L2 key", () => {
  it("changes with the allow-list (a field more, less, or in another order) and with the format", () => {
    const config = setup().config;
    const key = tierCacheKey(config);
    expect(tierCacheKey(config, allowListVersion())).toBe(key);
    expect(new URL(key).searchParams.get("v")).toBe(allowListVersion(VEHICLE_FIELDS, PREPARED_FORMAT));
    const others = [
      allowListVersion([...VEHICLE_FIELDS, "fuelCardPin"]),
      allowListVersion(VEHICLE_FIELDS.slice(1)),
      allowListVersion([...VEHICLE_FIELDS].reverse()),
      allowListVersion(VEHICLE_FIELDS, PREPARED_FORMAT + 1),
    ];
    for (const v of others) expect(tierCacheKey(config, v)).not.toBe(key);
    expect(new Set(others).size).toBe(others.length);
  });

  it("an entry written under another allow-list version is never read: the request goes to the gateway", async () => {
    const t = setup();
    const leaky = vehicles.map((v) => ({ ...v, fuelCardPin: "1234" })) as Vehicle[];
    await t.putL2(
      await envelope(Date.now(), leaky),
      tierCacheKey(t.config, allowListVersion([...VEHICLE_FIELDS, "fuelCardPin"])),
    );
    const res = await t.get("/v1/vehicles");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-status")).toContain("gateway-object");
    expect(await res.text()).not.toContain("fuelCardPin");
    expect(t.calls.gateway).toBe(1);
    expect(t.deps.memory.counters).toMatchObject({ cacheReads: 0, gatewayCalls: 1, fills: 1 });
  });

  it("a damaged entry under the right key is a miss (logged), never served and never a 500", async () => {
    const t = setup();
    const env = await envelope(Date.now());
    const p = loadPrepared(env);
    // The column bytes (under the checksum): refused when it is loaded.
    const columns = env.data.slice();
    const at = p.lat.byteOffset - env.data.byteOffset;
    columns[at] = (columns[at] as number) ^ 1;
    await t.putL2({ ...env, data: columns });
    const res = await t.get("/v1/vehicles");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-status")).toContain("gateway-object");
    expect(t.calls.gateway).toBe(1);
    expect(t.calls.logs.some((l) => l.includes("cache_entry_invalid"))).toBe(true);
    expect(t.deps.memory.counters).toMatchObject({ cacheReads: 1, gatewayCalls: 1, fills: 1 });
  });

  it("an entry with a damaged item is found before that item is served: dropped, refilled from the object, replaced in L2", async () => {
    // Items are checked a block at a time when first served (prepared.ts), not when loaded: the
    // entry loads, and the request that would serve the damaged item serves the object's copy.
    const t = setup();
    const env = await envelope(Date.now());
    const p = loadPrepared(env);
    const data = env.data.slice();
    // The last item's opening brace: the text no longer cuts into whole objects there.
    data[p.text.byteOffset - env.data.byteOffset + (p.off[p.count - 1] as number)] = 0x20;
    await t.putL2({ ...env, data });
    const res = await t.get("/v1/vehicles");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-status")).toContain("gateway-object");
    expect(JSON.parse(await res.text()).vehicles).toHaveLength(vehicles.length);
    expect(t.calls.gateway).toBe(1);
    expect(t.calls.logs.filter((l) => l.includes("snapshot_damaged"))).toHaveLength(1);
    // One L2 read and load (the damaged copy), one object call and load (the good one).
    expect(t.deps.memory.counters).toMatchObject({ cacheReads: 1, gatewayCalls: 1, fills: 2 });
    // The object's copy replaced the entry: a new isolate fills from L2 and serves every item
    // (another query than the first: not an answer the response cache holds).
    await t.settle();
    t.deps.memory = newIsolateMemory();
    const again = await t.get(`/v1/vehicles?limit=${vehicles.length}`);
    expect(again.status).toBe(200);
    expect(again.headers.get("cache-status")).toMatch(/^gateway-cache; hit; ttl=\d+, gateway-memory/);
    expect(JSON.parse(await again.text()).vehicles).toHaveLength(vehicles.length);
    expect(t.calls.gateway).toBe(1);
    expect(t.deps.memory.counters).toMatchObject({ cacheReads: 1, fills: 1, responseHits: 0 });
  });

  it("a stale entry (nothing better in L2) is served, and the filling request refreshes behind it", async () => {
    const t = setup();
    // Past the TTL (30 s), within the stale window (300 s).
    await t.putL2(await envelope(Date.now() - 60_000));
    const res = await t.get("/v1/vehicles?limit=1");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-status")).toMatch(/^gateway-cache; hit; ttl=-?\d+/);
    expect(JSON.parse(await res.text()).stale).toBe(true);
    // The refresh runs under the request's waitUntil: one gateway call, a fresh L1.
    await t.settle();
    expect(t.calls.gateway).toBe(1);
    const next = await t.get("/v1/vehicles?limit=1");
    expect(next.headers.get("cache-status")).toMatch(/^gateway-memory; hit/);
    expect(JSON.parse(await next.text()).stale).toBe(false);
    expect(t.deps.memory.counters).toMatchObject({ cacheReads: 1, gatewayCalls: 1, fills: 2 });
  });

  it("a fresh entry fills L1 with one read: the next requests are memory hits", async () => {
    const t = setup();
    await t.putL2(await envelope(Date.now()));
    const first = await t.get("/v1/vehicles?limit=1");
    expect(first.headers.get("cache-status")).toMatch(/^gateway-cache; hit/);
    for (let i = 0; i < 5; i++) {
      const r = await t.get("/v1/vehicles?fuelType=electric");
      expect(r.headers.get("cache-status")).toMatch(/^gateway-memory; hit/);
    }
    expect(t.calls.gateway).toBe(0);
    expect(t.deps.memory.counters).toMatchObject({ cacheReads: 1, fills: 1, cacheHits: 1, memoryHits: 5 });
  });
});

/**
 * 200 concurrent cold requests (the full page and `limit=2`), the gateway held until the first
 * call reached it, then released: their answers, all checked 200.
 */
async function coldBurst(t: ReturnType<typeof setup>): Promise<Response[]> {
  t.hold();
  const answers = Array.from({ length: 200 }, (_, i) => t.get(i % 2 ? "/v1/vehicles" : "/v1/vehicles?limit=2"));
  await waitFor("the one gateway call", () => t.waitingCalls() === 1, 2_000, 1);
  t.release();
  const res = await Promise.all(answers);
  for (const r of res) expect(r.status).toBe(200);
  return res;
}

describe("one fill per isolate", () => {
  it("200 concurrent cold requests: one gateway call, one load; the rest wait and are served from memory", async () => {
    const t = setup();
    const res = await coldBurst(t);
    expect(t.calls.gateway).toBe(1);
    expect(t.deps.memory.counters).toMatchObject({ gatewayCalls: 1, fills: 1, joined: 199, takeovers: 0 });
    const statuses = new Set(res.map((r) => r.headers.get("cache-status")));
    expect(statuses).toEqual(
      new Set([
        "gateway-object; fwd=miss; stored, gateway-cache; fwd=miss, gateway-memory; fwd=miss; stored",
        "gateway-memory; fwd=miss; collapsed; stored",
      ]),
    );
  });

  it("a failed fill: every waiter gets the same error, with no second gateway call", async () => {
    const t = setup();
    t.hold();
    t.setGateway({ ok: false, error: { code: "partner_unavailable", status: 503, retryAfterS: 7 } });
    const answers = Array.from({ length: 50 }, () => t.get("/v1/vehicles"));
    await waitFor("the one gateway call", () => t.waitingCalls() === 1, 2_000, 1);
    t.release();
    const res = await Promise.all(answers);
    for (const r of res) {
      expect(r.status).toBe(503);
      expect(r.headers.get("content-type")).toContain("application/problem+json");
    }
    expect(t.calls.gateway).toBe(1);
    expect(t.deps.memory.counters).toMatchObject({ gatewayCalls: 1, fills: 0, takeovers: 0 });
  });

  it("a fill that hangs past the deadline is taken over by one waiter", async () => {
    const t = setup();
    // The first fill never finishes (its request's I/O was cancelled, say): it stays marked.
    t.deps.memory.fill = { seq: 99, startedAt: Date.now() };
    t.deps.memory.fillSeq = 99;
    let slept = 0;
    const ctx = { deps: t.deps, config: t.config, waitUntil: () => {} };
    const sleep = async (ms: number) => {
      slept += ms;
      await new Promise((r) => setTimeout(r, 0));
    };
    const served = await Promise.all(Array.from({ length: 5 }, () => loadTiers({ ...ctx, sleep })));
    expect(served.every((s) => s.tier !== "response" && s.snapshot.count === vehicles.length)).toBe(true);
    // Waited on their own timers up to the deadline, then exactly one took over; the others joined it.
    expect(slept).toBeGreaterThanOrEqual(FILL_DEADLINE_MS);
    expect(t.calls.gateway).toBe(1);
    expect(t.deps.memory.counters).toMatchObject({ takeovers: 1, gatewayCalls: 1, fills: 1, joined: 4 });
  });

  it("HEAD and 304 build no body; a page carries Link rel=next and next, the last page neither", async () => {
    const t = setup();
    const page1 = await t.get("/v1/vehicles?limit=2");
    const body = (await page1.json()) as { vehicles: Vehicle[]; next?: string; count: number; total: number };
    expect(body).toMatchObject({ count: 2, total: 3 });
    expect(body.next).toMatch(/^\/v1\/vehicles\?limit=2&cursor=[A-Za-z0-9_-]+$/);
    expect(page1.headers.get("link")).toBe(`<${body.next}>; rel="next"`);
    const page2 = await t.get(body.next as string);
    const body2 = (await page2.json()) as { vehicles: Vehicle[]; next?: string };
    expect(body2.vehicles.map((v) => v.vin)).toEqual([vehicles[2]?.vin]);
    expect(body2.next).toBeUndefined();
    expect(page2.headers.get("link")).toBeNull();
    const head = await t.get("/v1/vehicles?limit=2", {}, "HEAD");
    expect(head.status).toBe(200);
    expect(head.headers.get("link")).toBe(page1.headers.get("link"));
    expect(await head.text()).toBe("");
    const etag = page1.headers.get("etag") as string;
    const notModified = await t.get("/v1/vehicles?limit=2", { "if-none-match": etag });
    expect(notModified.status).toBe(304);
    expect(notModified.headers.get("link")).toBe(page1.headers.get("link"));
  });
});

describe("an honest L2", () => {
  /** A Cache API that resolves every put and keeps nothing (what `*.workers.dev` deployments get). */
  function storesNothing() {
    const calls = { put: 0, match: 0 };
    return {
      calls,
      cache: {
        async match() {
          calls.match++;
          return undefined;
        },
        async put(_key: string, response: Response) {
          calls.put++;
          await response.body?.cancel();
        },
      },
    };
  }

  it("finds out that the Cache API stores nothing, says so once, and stops claiming `stored`", async () => {
    const t = setup();
    const fake = storesNothing();
    t.deps.cache = fake.cache;
    const first = await t.get("/v1/vehicles?limit=1");
    // Unknown yet: no `stored` claim for the cache.
    expect(first.headers.get("cache-status")).toBe(
      "gateway-object; fwd=miss; stored, gateway-cache; fwd=miss, gateway-memory; fwd=miss; stored",
    );
    await t.settle();
    expect(t.deps.memory.l2?.state).toBe("not-storing");
    expect(t.calls.logs.filter((l) => l.includes("cache_not_storing"))).toHaveLength(1);
    // The answer's lookup, the snapshot's read, put and read-back; the rendered answer was not
    // written (by then the read-back had found the cache dead).
    expect(fake.calls).toEqual({ put: 1, match: 3 });
    // The next fill (a new snapshot) neither reads nor writes the dead cache, and says why.
    t.deps.memory.snapshot = undefined;
    t.setGateway({ ok: true, snapshot: await envelope(Date.now() + 1), stale: false });
    const second = await t.get("/v1/vehicles?limit=1");
    expect(second.headers.get("cache-status")).toBe(
      "gateway-object; fwd=miss; stored, gateway-cache; fwd=bypass; detail=not-storing, gateway-memory; fwd=miss; stored",
    );
    await t.settle();
    expect(fake.calls).toEqual({ put: 1, match: 3 });
    expect(t.calls.logs.filter((l) => l.includes("cache_not_storing"))).toHaveLength(1);
    const health = (await (await t.get("/health")).json()) as { isolate: { cacheApi: string } };
    expect(health.isolate.cacheApi).toBe("not-storing");
  });

  it("a Cache API that keeps entries is marked storing, and later fills say `stored`", async () => {
    const t = setup();
    await t.get("/v1/vehicles?limit=1");
    await t.settle();
    expect(t.deps.memory.l2?.state).toBe("storing");
    // Much later: L1 and the L2 entry are past serving, so the next fill comes from the object.
    const later = Date.now() + 400_000;
    t.deps.clock = { now: () => later };
    t.setGateway({ ok: true, snapshot: await envelope(later), stale: false });
    const next = await t.get("/v1/vehicles?limit=1");
    expect(next.headers.get("cache-status")).toBe(
      "gateway-object; fwd=miss; stored, gateway-cache; fwd=miss; stored, gateway-memory; fwd=miss; stored",
    );
    expect(t.calls.logs.some((l) => l.includes("cache_not_storing"))).toBe(false);
  });
});

describe("the response cache", () => {
  /** Counts the lookups of rendered answers and records their writes; `hold` keeps those writes pending. */
  function watch(t: ReturnType<typeof setup>) {
    const inner = t.cache;
    const seen = { lookups: 0, puts: [] as string[] };
    let held: (() => void)[] | undefined;
    const isAnswer = (key: string) => new URL(key).pathname === "/v1/responses";
    t.deps.cache = {
      match(key) {
        if (isAnswer(key)) seen.lookups++;
        return inner.match(key);
      },
      async put(key, response) {
        if (isAnswer(key)) {
          seen.puts.push(key);
          const wait = held;
          if (wait) await new Promise<void>((resolve) => wait.push(resolve));
        }
        return inner.put(key, response);
      },
    };
    return {
      seen,
      hold: () => {
        held = [];
      },
      release: () => {
        for (const r of held ?? []) r();
        held = undefined;
      },
    };
  }

  const RESPONSE_HIT = /^gateway-cache; hit; ttl=(29|30); detail=response, gateway-memory; fwd=miss$/;

  it("a cold stampede with nothing stored: one lookup, then one gateway call and one fill; one write", async () => {
    const t = setup();
    const w = watch(t);
    await coldBurst(t);
    expect(w.seen.lookups).toBe(1);
    expect(t.calls.gateway).toBe(1);
    expect(t.deps.memory.counters).toMatchObject({ gatewayCalls: 1, fills: 1, joined: 199, responseHits: 0 });
    await t.settle();
    // Only the request that looked up and missed writes its answer.
    expect(w.seen.puts).toHaveLength(1);
    expect(t.deps.memory.counters.responsePuts).toBe(1);
  });

  it("a new isolate with the answer stored: a concurrent burst is passed through, no gateway call, no fill", async () => {
    const t = setup();
    const first = await t.get("/v1/vehicles?limit=2");
    const body = await first.text();
    await t.settle();
    // Another isolate of the same data centre: the same Cache API, nothing in memory.
    t.deps.memory = newIsolateMemory();
    const w = watch(t);
    const res = await Promise.all(Array.from({ length: 100 }, () => t.get("/v1/vehicles?limit=2")));
    for (const r of res) {
      expect(r.headers.get("cache-status")).toMatch(RESPONSE_HIT);
      expect(r.headers.get("etag")).toBe(first.headers.get("etag"));
      expect(r.headers.get("link")).toBe(first.headers.get("link"));
      expect(await r.text()).toBe(body);
    }
    // One lookup each (one had to find out first; the rest then looked up at once), nothing else.
    expect(w.seen.lookups).toBe(100);
    expect(t.calls.gateway).toBe(1);
    expect(t.deps.memory.counters).toMatchObject({ responseHits: 100, gatewayCalls: 0, fills: 0, cacheReads: 0 });
    expect(t.deps.memory.snapshot).toBeUndefined();
  });

  it("a stale L1 gives way to a fresh stored answer; other queries are served stale and refreshed", async () => {
    const t = setup();
    await t.get("/v1/vehicles?limit=1");
    await t.settle();
    // This isolate holds an older snapshot, past the TTL but within the stale window.
    t.deps.memory = newIsolateMemory();
    t.deps.memory.snapshot = { snapshot: loadPrepared(await envelope(Date.now() - 40_000)) };
    const fresh = await t.get("/v1/vehicles?limit=1");
    expect(fresh.headers.get("cache-status")).toMatch(
      /^gateway-cache; hit; ttl=\d+; detail=response, gateway-memory; fwd=stale$/,
    );
    const other = await t.get("/v1/vehicles?limit=3");
    expect(other.headers.get("cache-status")).toMatch(/^gateway-memory; hit; ttl=-\d+$/);
    await t.settle();
    // Refreshed from the snapshot in L2 (the first request's), behind the stale answer.
    expect((await t.get("/v1/vehicles?limit=3")).headers.get("cache-status")).toMatch(
      /^gateway-memory; hit; ttl=(29|30)$/,
    );
    expect(t.deps.memory.counters).toMatchObject({ responseHits: 1, staleServed: 1, cacheHits: 1, gatewayCalls: 0 });
    expect(t.deps.memory.counters.responsePuts).toBe(0);
  });

  it("writes are bounded: one per key at a time, four at once at most", async () => {
    const t = setup({ bypass: true });
    const w = watch(t);
    w.hold();
    const skipL1 = { "x-gateway-bypass": "memory" };
    for (let i = 1; i <= 6; i++) expect((await t.get(`/v1/vehicles?limit=${i}`, skipL1)).status).toBe(200);
    expect((await t.get("/v1/vehicles?limit=1", skipL1)).status).toBe(200);
    expect(w.seen.puts).toHaveLength(4);
    expect(new Set(w.seen.puts).size).toBe(4);
    w.release();
    await t.settle();
    expect(t.deps.memory.counters.responsePuts).toBe(4);
    // Written: served from the response cache. Not written (the fifth): written now.
    expect((await t.get("/v1/vehicles?limit=1", skipL1)).headers.get("cache-status")).toContain("detail=response");
    expect((await t.get("/v1/vehicles?limit=5", skipL1)).headers.get("cache-status")).not.toContain("detail=response");
    await t.settle();
    expect(t.deps.memory.counters.responsePuts).toBe(5);
  });

  it("`responses` skips rendered answers only, `cache` both kinds of L2 entry", async () => {
    const t = setup({ bypass: true });
    await t.get("/v1/vehicles?limit=1");
    await t.settle();
    const w = watch(t);
    const status = async (tiers: string) =>
      (await t.get("/v1/vehicles?limit=1", { "x-gateway-bypass": tiers })).headers.get("cache-status");
    expect(await status("memory")).toMatch(
      /^gateway-cache; hit; ttl=\d+; detail=response, gateway-memory; fwd=bypass$/,
    );
    expect(await status("memory,responses")).toMatch(/^gateway-cache; hit; ttl=\d+, gateway-memory; fwd=bypass$/);
    expect(await status("memory,cache")).toMatch(/^gateway-object; fwd=miss; stored, gateway-cache; fwd=bypass, /);
    expect(w.seen.lookups).toBe(1);
  });

  it("a lookup that never ends holds the other cold requests back for PROBE_DEADLINE_MS at most", async () => {
    const t = setup();
    // A lookup whose request was cancelled: its flag is never cleared by it.
    t.deps.memory.responses.probing = true;
    let slept = 0;
    const ctx = { deps: t.deps, config: t.config, waitUntil: () => {}, view: "vehicles?limit=1" };
    const sleep = async (ms: number) => {
      slept += ms;
      await new Promise((r) => setTimeout(r, 0));
    };
    const served = await Promise.all(Array.from({ length: 5 }, () => loadTiers({ ...ctx, sleep })));
    expect(served.every((s) => s.tier !== "response" && s.snapshot.count === vehicles.length)).toBe(true);
    expect(slept).toBeGreaterThanOrEqual(5 * PROBE_DEADLINE_MS);
    // Then each looked up for itself (all missed): one fill, which the others joined or found done.
    expect(t.calls.gateway).toBe(1);
    expect(t.deps.memory.counters).toMatchObject({ gatewayCalls: 1, fills: 1, takeovers: 0 });
    expect(t.deps.memory.responses.probing).toBe(false);
  });
});
