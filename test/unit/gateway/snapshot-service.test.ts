import { describe, expect, it } from "vitest";
import { AppError } from "../../../src/errors.ts";
import {
  loadStored,
  SNAPSHOT_STORE_KEY,
  STORED_PART_BYTES,
  storedSnapshotCodec,
  storeRecords,
} from "../../../src/gateway/snapshot-codec.ts";
import {
  FAILED_REFRESH_HOLD_MS,
  SnapshotService,
  type SnapshotServiceOptions,
} from "../../../src/gateway/snapshot-service.ts";
import type { SnapshotEnvelope, SnapshotResult } from "../../../src/gateway/types.ts";
import type { KeyValueStore, Logger } from "../../../src/ports.ts";
import { MemoryStore } from "../../../src/runtimes/standard-ports.ts";
import { loadPrepared } from "../../../src/vehicles/prepared.ts";
import type { Vehicle } from "../../../src/vehicles/schema.ts";

const T0 = 1_800_000_000_000;
const TTL = 30_000;
const STALE = 300_000;
/** A valid, redacted vehicle (the prepared snapshot needs a VIN and a position). */
const veh = (vin: string, extra: Record<string, unknown> = {}) =>
  ({ vin, position: { latitude: 52.5, longitude: 13.4 }, ...extra }) as Vehicle;
const VEHICLES = [veh("WME4530421Y000001"), veh("WME4530421Y000002")];
const OLD_VIN = "WME4530421Y111111";
const NEW_VIN = "WME4530421Y999999";
/** The JSON text of the vehicles in a prepared snapshot. */
const bodyText = (s: SnapshotEnvelope) => new TextDecoder().decode(loadPrepared(s).text);

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

type FetchResult = { vehicles: Vehicle[]; dropped: number };

/** fetchSnapshot with a queue of outcomes; counts calls; fails the test on an unexpected call. */
function fakeUpstream() {
  const outcomes: (() => Promise<FetchResult>)[] = [];
  let calls = 0;
  let unexpected = 0;
  const fetchSnapshot = () => {
    calls += 1;
    const next = outcomes.shift();
    if (!next) {
      unexpected += 1;
      return Promise.reject(new Error("unexpected fetchSnapshot call"));
    }
    return next();
  };
  return {
    fetchSnapshot,
    calls: () => calls,
    unexpected: () => unexpected,
    ok(vehicles: Vehicle[] = VEHICLES, dropped = 0) {
      outcomes.push(async () => ({ vehicles, dropped }));
    },
    fail(err: unknown) {
      outcomes.push(async () => {
        throw err;
      });
    },
    /** The next call waits until the returned handle settles it. */
    hold() {
      const d = deferred<FetchResult>();
      outcomes.push(() => d.promise);
      return d;
    },
  };
}

function setup(over: Partial<SnapshotServiceOptions> = {}) {
  const clock = {
    t: T0,
    now() {
      return this.t;
    },
  };
  const up = fakeUpstream();
  const scheduled: Promise<unknown>[] = [];
  const logs: string[] = [];
  const log: Logger = { log: (level, event, fields) => logs.push(JSON.stringify({ level, event, ...fields })) };
  const service = new SnapshotService({
    fetchSnapshot: up.fetchSnapshot,
    clock,
    log,
    ttlMs: TTL,
    staleMs: STALE,
    schedule: (p) => scheduled.push(p),
    ...over,
  });
  return { service, clock, up, scheduled, logs, flush: () => Promise.all(scheduled.splice(0)) };
}

function snap(r: SnapshotResult) {
  if (!r.ok) throw new Error(`expected a snapshot, got ${r.error.code}`);
  return r.snapshot;
}

describe("SnapshotService.get", () => {
  it("cold: 500 concurrent callers share exactly one upstream fetch", async () => {
    const { service, up, scheduled } = setup();
    const held = up.hold();
    const all = Promise.all(Array.from({ length: 500 }, () => service.get()));
    await Promise.resolve();
    held.resolve({ vehicles: VEHICLES, dropped: 3 });
    const results = await all;
    expect(up.calls()).toBe(1);
    expect(scheduled).toHaveLength(0);
    for (const r of results) expect(r).toMatchObject({ ok: true, stale: false });
    const s = snap(results[0]!);
    expect(results.every((r) => r.ok && r.snapshot === s)).toBe(true);
    expect(JSON.parse(bodyText(s))).toEqual(VEHICLES);
    expect(s).toMatchObject({ fetchedAt: T0, count: 2, dropped: 3 });
    expect(s.etag).toMatch(/^"[0-9a-f]{32}"$/);
    expect(service.counters()).toEqual({
      snapshotFetches: 1,
      snapshotFetchFailures: 0,
      snapshotServed: 500,
      droppedVehicles: 3,
    });
  });

  it("the ETag is a strong validator of the body: same body, same ETag; other body, other ETag", async () => {
    const { service, up, clock } = setup();
    up.ok();
    up.ok();
    up.ok([veh(NEW_VIN)]);
    const a = snap(await service.get());
    clock.t += TTL;
    const b = snap(await service.get({ notOlderThan: clock.t }));
    clock.t += TTL;
    const c = snap(await service.get({ notOlderThan: clock.t }));
    expect(b.etag).toBe(a.etag);
    expect(c.etag).not.toBe(a.etag);
  });

  it("within the TTL: no fetch at all", async () => {
    const { service, up, clock } = setup();
    up.ok();
    await service.get();
    clock.t += TTL - 1;
    for (let i = 0; i < 100; i++) expect(await service.get()).toMatchObject({ ok: true, stale: false });
    expect(up.calls()).toBe(1);
    expect(up.unexpected()).toBe(0);
  });

  it("notOlderThan: a fresh snapshot older than asked for is refetched, one newer is served", async () => {
    const { service, up, clock } = setup();
    up.ok();
    await service.get();
    clock.t += 1_000;
    expect(snap(await service.get({ notOlderThan: T0 })).fetchedAt).toBe(T0);
    expect(up.calls()).toBe(1);
    up.ok();
    const r = await service.get({ notOlderThan: T0 + 1 });
    expect(r).toMatchObject({ ok: true, stale: false });
    expect(snap(r).fetchedAt).toBe(T0 + 1_000);
    expect(up.calls()).toBe(2);
  });

  it("stale: served at once to every caller, with exactly one background refresh", async () => {
    const { service, up, clock, scheduled, flush } = setup();
    up.ok();
    const first = snap(await service.get());
    clock.t += TTL + 5_000;
    const held = up.hold();
    const results = await Promise.all(Array.from({ length: 200 }, () => service.get()));
    for (const r of results) expect(r).toEqual({ ok: true, snapshot: first, stale: true });
    expect(up.calls()).toBe(2);
    expect(scheduled).toHaveLength(1);

    // More stale readers while the refresh runs: still the one refresh.
    for (let i = 0; i < 50; i++) expect((await service.get()).ok).toBe(true);
    expect(up.calls()).toBe(2);
    expect(scheduled).toHaveLength(1);

    held.resolve({ vehicles: [veh(NEW_VIN)], dropped: 0 });
    await flush();
    const next = await service.get();
    expect(next).toMatchObject({ ok: true, stale: false });
    expect(bodyText(snap(next))).toBe(JSON.stringify([veh(NEW_VIN)]));
    expect(snap(next).fetchedAt).toBe(clock.t);
    expect(up.calls()).toBe(2);
  });

  it("stale-if-error (waiting caller): the last good copy, marked stale, with the error", async () => {
    const { service, up, clock } = setup();
    up.ok();
    const good = snap(await service.get());
    clock.t += TTL + 10_000;
    up.fail(new AppError("partner_error", { detail: "HTTP 500" }));
    const r = await service.get({ notOlderThan: clock.t });
    expect(r).toEqual({
      ok: true,
      snapshot: good,
      stale: true,
      error: { code: "partner_error", status: 502, detail: "HTTP 500" },
    });
  });

  it("stale-if-error (background refresh failed): later stale readers get the error, counted down", async () => {
    const { service, up, clock, flush, logs } = setup();
    up.ok();
    await service.get();
    clock.t += TTL;
    up.fail(new AppError("partner_rate_limited", { retryAfterS: 20 }));
    expect(await service.get()).toMatchObject({ ok: true, stale: true });
    await flush();
    expect(logs.some((l) => l.includes("snapshot_fetch_failed"))).toBe(true);
    clock.t += 5_000;
    up.ok();
    const r = await service.get();
    expect(r).toMatchObject({ ok: true, stale: true, error: { code: "partner_rate_limited", retryAfterS: 15 } });
    await flush();
    // Once a refresh succeeds the error is gone.
    expect(await service.get()).toEqual({ ok: true, snapshot: expect.any(Object), stale: false });
    expect(up.calls()).toBe(3);
  });

  it("a failed fetch does not stick: the next caller starts a new one", async () => {
    const { service, up } = setup();
    up.fail(new AppError("partner_timeout"));
    expect(await service.get()).toEqual({ ok: false, error: { code: "partner_timeout", status: 504 } });
    up.ok();
    expect(await service.get()).toMatchObject({ ok: true, stale: false });
    expect(up.calls()).toBe(2);
  });

  it("asking for newer data right after a failed refresh: the servable copy with the error, no second fetch until the hold ends", async () => {
    const { service, up, clock } = setup();
    up.ok();
    await service.get();
    clock.t += TTL + 1_000;
    up.fail(new AppError("partner_unavailable"));
    const first = await service.get({ notOlderThan: clock.t - TTL + 1 });
    expect(first).toMatchObject({ ok: true, stale: true, error: { code: "partner_unavailable" } });
    expect(up.calls()).toBe(2);
    clock.t += FAILED_REFRESH_HOLD_MS - 1;
    for (let i = 0; i < 20; i++) {
      expect(await service.get({ notOlderThan: clock.t - TTL + 1 })).toMatchObject({ ok: true, stale: true });
    }
    expect(up.calls()).toBe(2);
    clock.t += 1;
    up.ok();
    expect(await service.get({ notOlderThan: clock.t - TTL + 1 })).toMatchObject({ ok: true, stale: false });
    expect(up.calls()).toBe(3);
  });

  it("nothing to serve: ok:false with the upstream's code and Retry-After", async () => {
    const { service, up } = setup();
    const held = up.hold();
    const all = Promise.all(Array.from({ length: 50 }, () => service.get()));
    await Promise.resolve();
    held.reject(new AppError("partner_rate_limited", { retryAfterS: 12 }));
    for (const r of await all) {
      expect(r).toEqual({ ok: false, error: { code: "partner_rate_limited", status: 503, retryAfterS: 12 } });
    }
    expect(up.calls()).toBe(1);
    expect(service.counters()).toMatchObject({ snapshotFetches: 1, snapshotFetchFailures: 1, snapshotServed: 0 });
  });

  it("past the stale window: the old copy is not served", async () => {
    const { service, up, clock } = setup();
    up.ok();
    await service.get();
    clock.t += TTL + STALE;
    up.fail(new AppError("token_endpoint_unavailable"));
    expect(await service.get()).toEqual({ ok: false, error: { code: "token_endpoint_unavailable", status: 503 } });
  });

  it("never throws: unknown errors, synchronous throws and a broken clock become plain data", async () => {
    const { service, up } = setup();
    up.fail(new Error("secret internals"));
    const r = await service.get();
    expect(r).toEqual({ ok: false, error: { code: "internal", status: 500 } });
    expect(JSON.stringify(r)).not.toContain("secret internals");

    const sync = setup({
      fetchSnapshot: () => {
        throw new AppError("partner_error");
      },
    });
    expect(await sync.service.get()).toEqual({ ok: false, error: { code: "partner_error", status: 502 } });

    const broken = setup({
      clock: {
        now() {
          throw new Error("no clock");
        },
      },
    });
    await expect(broken.service.get()).resolves.toEqual({ ok: false, error: { code: "internal", status: 500 } });
  });

  it("results are plain, structured-cloneable data (they cross an RPC boundary)", async () => {
    const { service, up, clock } = setup();
    up.ok();
    await service.get();
    clock.t += TTL + 1;
    up.fail(new AppError("partner_circuit_open", { retryAfterS: 30 }));
    const r = await service.get({ notOlderThan: clock.t });
    expect(structuredClone(r)).toEqual(r);
  });
});

describe("SnapshotService.status", () => {
  it("reports nothing before the first fetch, then fetchedAt, age and count", async () => {
    const { service, up, clock } = setup();
    expect(await service.status()).toEqual({ fetchedAt: undefined, ageS: undefined, count: undefined });
    up.ok();
    await service.get();
    clock.t += 12_900;
    expect(await service.status()).toEqual({ fetchedAt: T0, ageS: 12, count: 2 });
  });
});

describe("SnapshotService persistence", () => {
  it("a new instance (a reset object) loads the last good copy: fresh needs no fetch", async () => {
    const store = new MemoryStore();
    const a = setup({ store });
    a.up.ok(VEHICLES, 4);
    const original = snap(await a.service.get());
    await a.flush();

    const b = setup({ store });
    const r = await b.service.get();
    expect(r).toEqual({ ok: true, snapshot: original, stale: false });
    expect(b.up.calls()).toBe(0);
  });

  it("a new instance serves the stored copy for stale-if-error", async () => {
    const store = new MemoryStore();
    const a = setup({ store });
    a.up.ok();
    const original = snap(await a.service.get());
    await a.flush();

    const b = setup({ store });
    b.clock.t += TTL + 60_000;
    b.up.fail(new AppError("partner_unavailable", { retryAfterS: 30 }));
    const r = await b.service.get({ notOlderThan: b.clock.t });
    expect(r).toMatchObject({ ok: true, stale: true, error: { code: "partner_unavailable" } });
    expect(snap(r)).toEqual(original);
    expect(await b.service.status()).toMatchObject({ fetchedAt: T0, count: 2 });
  });

  it("stores the prepared bytes as they are, in parts under the value limit, and reads them back whole", async () => {
    const store = new MemoryStore();
    const a = setup({ store });
    // About 2.6 MB prepared: two parts.
    const big = Array.from({ length: 5_000 }, (_, i) =>
      veh(`WME4530421Y${String(i).padStart(6, "0")}`, { imageUrl: `https://img.example/${"x".repeat(400)}` }),
    );
    a.up.ok(big);
    const s = snap(await a.service.get());
    await a.flush();
    const head = await store.get<{ v: number; parts: number; bytes: number; data: Uint8Array }>(SNAPSHOT_STORE_KEY);
    expect(head).toMatchObject({ v: 3, parts: 2, bytes: s.data.byteLength });
    const part = await store.get<{ etag: string; data: Uint8Array }>(`${SNAPSHOT_STORE_KEY}:1`);
    expect(part?.etag).toBe(s.etag);
    for (const d of [head?.data, part?.data]) expect(d?.byteLength).toBeLessThanOrEqual(STORED_PART_BYTES);
    const loaded = await loadStored(store);
    expect(loaded).not.toBe("unreadable");
    if (loaded === undefined || loaded === "unreadable") throw new Error("nothing stored");
    expect(loaded.parts).toBe(2);
    expect(Buffer.compare(loaded.envelope.data, s.data)).toBe(0);

    // A smaller snapshot later: one part, and the second part of the big one is deleted.
    a.clock.t += TTL;
    a.up.ok([veh(NEW_VIN)]);
    await a.service.get({ notOlderThan: a.clock.t });
    await a.flush();
    expect(await store.get(SNAPSHOT_STORE_KEY)).toMatchObject({ v: 3, parts: 1 });
    expect(await store.get(`${SNAPSHOT_STORE_KEY}:1`)).toBeUndefined();

    // After a reset (a new service on the same store), the stored copy serves stale-if-error.
    const b = setup({ store });
    b.clock.t = a.clock.t + TTL + 60_000;
    b.up.fail(new AppError("partner_unavailable", { retryAfterS: 30 }));
    const r = await b.service.get({ notOlderThan: b.clock.t });
    expect(r).toMatchObject({ ok: true, stale: true });
    expect(bodyText(snap(r))).toBe(JSON.stringify([veh(NEW_VIN)]));
  });

  it("a smaller snapshot persisted while a larger one is still being written deletes the larger one's extra part, in whatever order the writes settle", async () => {
    // Writes land in the store at once; their promises settle only once released (and at once after).
    const inner = new MemoryStore();
    const held: (() => void)[] = [];
    let open = false;
    const hold = (done: Promise<void>) =>
      open ? done : new Promise<void>((resolve, reject) => held.push(() => done.then(resolve, reject)));
    const store: KeyValueStore = {
      get: (key) => inner.get(key),
      put: (key, value) => hold(inner.put(key, value)),
      delete: (key) => hold(inner.delete(key)),
    };
    const a = setup({ store });
    a.up.ok(
      Array.from({ length: 5_000 }, (_, i) =>
        veh(`WME4530421Y${String(i).padStart(6, "0")}`, { imageUrl: `https://img.example/${"x".repeat(400)}` }),
      ),
    );
    await a.service.get();
    expect(await inner.get(SNAPSHOT_STORE_KEY)).toMatchObject({ v: 3, parts: 2 });
    a.clock.t += TTL;
    a.up.ok([veh(NEW_VIN)]);
    await a.service.get({ notOlderThan: a.clock.t });
    // The later writes settle first: nothing may depend on the store settling in order.
    open = true;
    for (const release of held.splice(0).reverse()) release();
    await a.flush();
    expect(await inner.get(SNAPSHOT_STORE_KEY)).toMatchObject({ v: 3, parts: 1 });
    expect(await inner.get(`${SNAPSHOT_STORE_KEY}:1`)).toBeUndefined();
  });

  it("stored parts: a missing or foreign part reads as unreadable; too many parts are not written; the gzip record of earlier versions still reads", async () => {
    const a = setup();
    a.up.ok(Array.from({ length: 30 }, (_, i) => veh(`WME4530421Y${String(i).padStart(6, "0")}`)));
    const s = snap(await a.service.get());
    const records = storeRecords(s, 1_000, 100);
    if (!records) throw new Error("no records");
    expect(records.length).toBe(Math.ceil(s.data.byteLength / 1_000));
    const write = async (rs: typeof records) => {
      const store = new MemoryStore();
      for (const [k, v] of rs) await store.put(k, v);
      return store;
    };
    const whole = await loadStored(await write(records));
    expect(whole !== undefined && whole !== "unreadable" && Buffer.compare(whole.envelope.data, s.data)).toBe(0);
    expect(await loadStored(await write(records.filter((_, i) => i !== 2)))).toBe("unreadable");
    const foreign = records.map(
      ([k, v], i) => [k, i === 1 ? { ...v, etag: '"other"' } : v] as (typeof records)[number],
    );
    expect(await loadStored(await write(foreign))).toBe("unreadable");
    expect(storeRecords(s, 1_000, 2)).toBeUndefined();
    expect(await loadStored(new MemoryStore())).toBeUndefined();

    const old = new MemoryStore();
    await old.put(SNAPSHOT_STORE_KEY, await storedSnapshotCodec.encode(s));
    const fromOld = await loadStored(old);
    expect(fromOld !== undefined && fromOld !== "unreadable" && Buffer.compare(fromOld.envelope.data, s.data)).toBe(0);
  });

  it("a newer snapshot is never overwritten by an older one", async () => {
    const store = new MemoryStore();
    const a = setup({ store });
    a.up.ok([veh(OLD_VIN)]);
    await a.service.get();
    a.clock.t += TTL;
    a.up.ok([veh(NEW_VIN)]);
    await a.service.get({ notOlderThan: a.clock.t });
    await a.flush();
    const b = setup({ store });
    b.clock.t = a.clock.t;
    expect(bodyText(snap(await b.service.get()))).toBe(JSON.stringify([veh(NEW_VIN)]));
  });

  it("ignores an unreadable stored record and a failing store", async () => {
    const store = new MemoryStore();
    await store.put(SNAPSHOT_STORE_KEY, { v: 1, fetchedAt: "soon", body: "[]" });
    const a = setup({ store });
    a.up.ok();
    expect(await a.service.get()).toMatchObject({ ok: true, stale: false });
    expect(a.up.calls()).toBe(1);

    const failing: KeyValueStore = {
      get: () => Promise.reject(new Error("storage down")),
      put: () => Promise.reject(new Error("storage down")),
      delete: () => Promise.reject(new Error("storage down")),
    };
    const b = setup({ store: failing });
    b.up.ok();
    expect(await b.service.get()).toMatchObject({ ok: true, stale: false });
    await expect(b.flush()).resolves.toBeDefined();
    expect(b.logs.some((l) => l.includes("snapshot_load_failed"))).toBe(true);
    expect(b.logs.some((l) => l.includes("snapshot_persist_failed"))).toBe(true);
  });

  it("loads the store once, however many concurrent first callers", async () => {
    const inner = new MemoryStore();
    let gets = 0;
    const store: KeyValueStore = {
      get: (k) => {
        gets += 1;
        return inner.get(k);
      },
      put: (k, v) => inner.put(k, v),
      delete: (k) => inner.delete(k),
    };
    const a = setup({ store });
    a.up.ok();
    await Promise.all(Array.from({ length: 100 }, () => a.service.get()));
    expect(gets).toBe(1);
    expect(a.up.calls()).toBe(1);
  });
});
