/**
 * The L2 (Cache API) path through the app, with the ports faked: the allow-list version in the
 * key, an unfiltered L2 hit served from the stored text without a parse, and L1 filled behind it.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../../src/app.ts";
import { MemoryResponseCache } from "../../../src/cache/memory-cache.ts";
import { envelopeToResponse } from "../../../src/cache/snapshot-entry.ts";
import { type Config, parseConfig } from "../../../src/config.ts";
import type { Deps, SnapshotEnvelope, SnapshotSource } from "../../../src/deps.ts";
import { newIsolateMemory } from "../../../src/deps.ts";
import { VEHICLE_FIELDS } from "../../../src/vehicles/schema.ts";
import { buildSnapshot, queryVehicles, serializeVehicles } from "../../../src/vehicles/snapshot.ts";
import { allowListVersion, SNAPSHOT_FORMAT, tierCacheKey } from "../../../src/vehicles/tiers.ts";

vi.mock("../../../src/vehicles/snapshot.ts", async (importOriginal) => {
  const mod = await importOriginal<typeof import("../../../src/vehicles/snapshot.ts")>();
  return { ...mod, buildSnapshot: vi.fn(mod.buildSnapshot) };
});

const parses = () => vi.mocked(buildSnapshot).mock.calls.length;

const vehicles = [1, 2, 3].map((i) => ({
  vin: `WME4530421Y00000${i}`,
  numberPlate: `B-SN ${i}`,
  position: { latitude: 52.5 + i / 100, longitude: 13.4 },
  fuelType: i === 2 ? "ELECTRIC" : "GASOLINE",
  fuelLevel: 20 * i,
}));

function envelope(fetchedAt: number, body = JSON.stringify(vehicles), count = vehicles.length): SnapshotEnvelope {
  return { body, fetchedAt, etag: `"unit-${fetchedAt}"`, count, dropped: 0 };
}

function setup(opts: { bypass?: boolean } = {}) {
  const config = parseConfig({
    PARTNER_CLIENT_ID: "unit-client",
    PARTNER_CLIENT_SECRET: "unit-secret",
    ...(opts.bypass ? { ALLOW_TIER_BYPASS: "true" } : {}),
  }) as Config;
  const calls = { gateway: 0, logs: [] as string[] };
  let fromGateway = envelope(Date.now());
  const gateway: SnapshotSource = {
    async getSnapshot() {
      calls.gateway++;
      return { ok: true, snapshot: fromGateway, stale: false };
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
    setGateway: (e: SnapshotEnvelope) => {
      fromGateway = e;
    },
  };
}

afterEach(() => {
  vi.mocked(buildSnapshot).mockClear();
});

describe("the L2 key", () => {
  it("changes with the allow-list (a field more, less, or in another order) and with the format", () => {
    const config = setup().config;
    const key = tierCacheKey(config);
    expect(tierCacheKey(config, allowListVersion())).toBe(key);
    expect(new URL(key).searchParams.get("v")).toBe(allowListVersion(VEHICLE_FIELDS, SNAPSHOT_FORMAT));
    const others = [
      allowListVersion([...VEHICLE_FIELDS, "fuelCardPin"]),
      allowListVersion(VEHICLE_FIELDS.slice(1)),
      allowListVersion([...VEHICLE_FIELDS].reverse()),
      allowListVersion(VEHICLE_FIELDS, SNAPSHOT_FORMAT + 1),
    ];
    for (const v of others) expect(tierCacheKey(config, v)).not.toBe(key);
    expect(new Set(others).size).toBe(others.length);
  });

  it("an entry written under another allow-list version is never read: the request goes to the gateway", async () => {
    const t = setup();
    const leaky = JSON.stringify(vehicles.map((v) => ({ ...v, fuelCardPin: "1234" })));
    await t.putL2(
      envelope(Date.now(), leaky),
      tierCacheKey(t.config, allowListVersion([...VEHICLE_FIELDS, "fuelCardPin"])),
    );
    const res = await t.get("/v1/vehicles");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-status")).toContain("gateway-object");
    const text = await res.text();
    expect(text).not.toContain("fuelCardPin");
    expect(t.calls.gateway).toBe(1);
  });
});

describe("an L2 hit", () => {
  it("of the full list answers from the stored text without a parse, byte-identical, and fills L1 behind it", async () => {
    const t = setup();
    const env = envelope(Date.now());
    await t.putL2(env);
    const res = await t.get("/v1/vehicles");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-status")).toMatch(/^gateway-cache; hit/);
    const body = await res.text();
    expect(parses()).toBe(0);
    expect(t.deps.memory.snapshot).toBeUndefined();

    const s = buildSnapshot(env);
    const q = { limit: 10_000 };
    expect(body).toBe(serializeVehicles(s, queryVehicles(s, q), { stale: false }));
    vi.mocked(buildSnapshot).mockClear();

    await t.settle();
    expect(parses()).toBe(1);
    expect(t.deps.memory.snapshot).toBeDefined();

    // The next request is a memory hit, with the same bytes and validator; no further parse.
    const again = await t.get("/v1/vehicles");
    expect(again.headers.get("cache-status")).toMatch(/^gateway-memory; hit/);
    expect(await again.text()).toBe(body);
    expect(again.headers.get("etag")).toBe(res.headers.get("etag"));
    expect(parses()).toBe(1);
    expect(t.calls.gateway).toBe(0);
  });

  it("of HEAD and of a 304 for the full list does not parse either", async () => {
    const t = setup();
    await t.putL2(envelope(Date.now()));
    const head = await t.get("/v1/vehicles", {}, "HEAD");
    expect(head.status).toBe(200);
    expect(head.headers.get("cache-status")).toMatch(/^gateway-cache; hit/);
    const etag = head.headers.get("etag") ?? "";
    expect(etag).not.toBe("");
    const cond = await t.get("/v1/vehicles", { "if-none-match": etag }, "GET");
    expect(cond.status).toBe(304);
    expect(cond.headers.get("cache-status")).toMatch(/^gateway-cache; hit/);
    expect(parses()).toBe(0);
  });

  it("of a filtered query, a small limit or the {vin} route parses inline and fills L1 at once", async () => {
    for (const path of ["/v1/vehicles?fuelType=electric", "/v1/vehicles?limit=2", `/v1/vehicles/${vehicles[1]?.vin}`]) {
      const t = setup();
      await t.putL2(envelope(Date.now()));
      const res = await t.get(path);
      expect(res.status).toBe(200);
      expect(res.headers.get("cache-status")).toMatch(/^gateway-cache; hit/);
      expect(parses()).toBe(1);
      expect(t.deps.memory.snapshot).toBeDefined();
      await t.settle();
      expect(parses()).toBe(1);
      vi.mocked(buildSnapshot).mockClear();
    }
  });

  it("with memory bypassed, fills no L1 and parses nothing for the full list", async () => {
    const t = setup({ bypass: true });
    await t.putL2(envelope(Date.now()));
    const res = await t.get("/v1/vehicles", { "x-gateway-bypass": "memory" });
    expect(res.headers.get("cache-status")).toMatch(/^gateway-cache; hit; ttl=\d+, gateway-memory; fwd=bypass/);
    await res.text();
    await t.settle();
    expect(parses()).toBe(0);
    expect(t.deps.memory.snapshot).toBeUndefined();
  });
});

describe("the L2 entry the gateway path writes", () => {
  it("is the text this deploy checked: a gateway envelope with a non-allow-listed field is stored re-redacted", async () => {
    const t = setup();
    const leaky = JSON.stringify(vehicles.map((v) => ({ ...v, fuelCardPin: "1234" })));
    t.setGateway(envelope(Date.now(), leaky));
    const res = await t.get("/v1/vehicles");
    expect(res.headers.get("cache-status")).toMatch(/^gateway-object/);
    const served = await res.text();
    expect(served).not.toContain("fuelCardPin");
    await t.settle();
    const hit = await t.cache.match(tierCacheKey(t.config));
    const stored = await hit?.text();
    expect(stored).toBeDefined();
    expect(stored).not.toContain("fuelCardPin");
    // A different representation, so a different validator than the envelope's (buildSnapshot).
    expect(hit?.headers.get("etag")).toMatch(/-r"$/);
    expect(served).toContain(`"vehicles":${stored}`);

    // A fresh isolate reading that entry serves the same text for the full list, without a parse.
    const other = setup();
    await other.putL2(envelope(Date.now(), stored ?? "", vehicles.length));
    vi.mocked(buildSnapshot).mockClear();
    const fromL2 = await other.get("/v1/vehicles");
    expect(fromL2.headers.get("cache-status")).toMatch(/^gateway-cache; hit/);
    expect(await fromL2.text()).not.toContain("fuelCardPin");
    expect(parses()).toBe(0);
  });
});
