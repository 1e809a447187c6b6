/**
 * The response cache (DESIGN.md): rendered answers in this data centre's Cache API, keyed by the
 * versioned snapshot key and the canonical query (or VIN), passed through to a cold isolate
 * without loading the snapshot. Each test counts what the answer cost: object calls, snapshot
 * reads and partner requests. Config: TTL 30 s, stale 120 s, CORS for https://app.example.com.
 */
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { responseEntry } from "../../src/cache/response-entry.ts";
import { CACHE_NAME } from "../../src/cache/snapshot-entry.ts";
import { resetIsolate } from "../../src/runtimes/cloudflare/isolate.ts";
import { canonicalQueryKey, parseVehicleQuery } from "../../src/vehicles/query.ts";
import { listView, vinView } from "../../src/vehicles/routes.ts";
import { VEHICLE_FIELDS } from "../../src/vehicles/schema.ts";
import { allowListVersion, responseCacheKey } from "../../src/vehicles/tiers.ts";
import {
  advanceClock,
  cachedFetchedAt,
  coldStartEachCapturingLogs,
  expectNoLeaks,
  health,
  observe,
  observeJson,
  sandbox,
  sandboxCounts,
  type VehicleListBody,
  workerConfig,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

const ALLOWED_ORIGIN = "https://app.example.com";
const OTHER_ORIGIN = "https://elsewhere.example.org";
const RESPONSE_HIT = /^gateway-cache; hit; ttl=\d+; detail=response, gateway-memory; fwd=miss$/;

/** The response cache key of `GET /v1/vehicles<search>` (its canonical query), under `version`. */
function listKey(search: string, version?: string): string {
  const config = workerConfig();
  const view = listView(canonicalQueryKey(parseVehicleQuery(search, { maxLimit: config.vehiclesMaxLimit })));
  return responseCacheKey(config, view, version);
}

async function cache(): Promise<Cache> {
  return caches.open(CACHE_NAME);
}

/** The stored entry under `key` as text (status, headers, body), or undefined. */
async function entryText(key: string): Promise<string | undefined> {
  const hit = await (await cache()).match(key);
  if (!hit) return undefined;
  const head = [...hit.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
  return `${hit.status}\n${head}\n\n${await hit.text()}`;
}

/** Headers the Cache API adds to whatever it answers (not part of what was put). */
const CACHE_OWN = new Set(["age", "cf-cache-status", "content-length", "date"]);

/** Waits (bounded) until the Worker's write of `key` has landed. */
async function stored(key: string): Promise<void> {
  await waitFor("the rendered answer in the Cache API", async () => (await entryText(key)) !== undefined);
}

/** Plants an entry of our own format under `key` (as another isolate or deploy would have written it). */
async function plant(key: string, body: string, meta: { fetchedAt: number; snapshotEtag: string; etag: string }) {
  await (await cache()).put(key, responseEntry(body, meta, 30));
}

const logs = coldStartEachCapturingLogs();

afterEach(async () => {
  await expectNoLeaks({ extra: logs() });
});

describe("the response cache", () => {
  it("a second cold isolate answers the same query from it: no object call, no snapshot read, no partner request; the same bytes and ETag", async () => {
    const first = await observe("/v1/vehicles?fuelType=ELECTRIC&limit=50");
    expect(first.headers.get("cache-status")).toMatch(/^gateway-object; fwd=miss; stored/);
    await waitFor("the rendered answer's put", async () => (await health()).body.isolate.responsePuts === 1);
    await stored(listKey("?fuelType=ELECTRIC&limit=50"));
    const partner = await sandboxCounts();
    const object = (await health()).body.gateway.counters;

    resetIsolate();
    // The same query spelled another way: the key is the canonical query, never the URL as sent.
    const second = await observe("/v1/vehicles?limit=50&fuelType=electric");
    expect(second.status).toBe(200);
    expect(second.headers.get("cache-status")).toMatch(RESPONSE_HIT);
    expect(second.text).toBe(first.text);
    expect(second.headers.get("etag")).toBe(first.headers.get("etag"));
    expect(second.headers.get("content-type")).toBe(first.headers.get("content-type"));
    expect(second.headers.get("cache-control")).toMatch(/^public, max-age=(29|30), stale-while-revalidate=120/);
    expect(Number(second.headers.get("age"))).toBeLessThanOrEqual(1);

    // A burst on that cold isolate: every answer from the response cache, still nothing else.
    const burst = await Promise.all(
      Array.from({ length: 50 }, () => observe("/v1/vehicles?fuelType=ELECTRIC&limit=50")),
    );
    for (const b of burst) {
      expect(b.headers.get("cache-status")).toMatch(RESPONSE_HIT);
      expect(b.text).toBe(first.text);
    }
    const h = await health();
    expect(h.body.isolate).toMatchObject({
      responseHits: 51,
      responsePuts: 0,
      memoryHits: 0,
      gatewayCalls: 0,
      cacheReads: 0,
      cacheHits: 0,
      fills: 0,
    });
    expect(h.body.gateway.counters).toEqual(object);
    expect(await sandboxCounts()).toEqual(partner);
    expect(partner).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("If-None-Match gets a 304 and HEAD the headers alone, from the stored answer; a GET after them gets it whole", async () => {
    const path = "/v1/vehicles?limit=2";
    const first = await observe(path);
    const etag = first.headers.get("etag") as string;
    const link = first.headers.get("link");
    expect(link).toMatch(/^<\/v1\/vehicles\?limit=2&cursor=[^>]+>; rel="next"$/);
    await stored(listKey("?limit=2"));

    resetIsolate();
    const notModified = await observe(path, { headers: { "if-none-match": etag } });
    expect(notModified.status).toBe(304);
    expect(notModified.text).toBe("");
    expect(notModified.headers.get("etag")).toBe(etag);
    expect(notModified.headers.get("link")).toBe(link);
    expect(notModified.headers.get("cache-status")).toMatch(RESPONSE_HIT);

    const head = await observe(path, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.text).toBe("");
    expect(head.headers.get("etag")).toBe(etag);
    expect(head.headers.get("link")).toBe(link);
    expect(head.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(head.headers.get("cache-status")).toMatch(RESPONSE_HIT);

    const again = await observe(path);
    expect(again.text).toBe(first.text);
    expect((await health()).body.isolate).toMatchObject({ responseHits: 3, notModified: 1, gatewayCalls: 0, fills: 0 });
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("the VIN route is stored and served the same way", async () => {
    const list = await observeJson<VehicleListBody>("/v1/vehicles?limit=1");
    const vin = list.body.vehicles[0]?.vin as string;
    // Only a request that missed L1 writes: a new isolate's first request for this VIN.
    resetIsolate();
    const first = await observe(`/v1/vehicles/${vin.toLowerCase()}`);
    await stored(responseCacheKey(workerConfig(), vinView(vin)));
    resetIsolate();
    const second = await observe(`/v1/vehicles/${vin}`);
    expect(second.headers.get("cache-status")).toMatch(RESPONSE_HIT);
    expect(second.text).toBe(first.text);
    expect(second.headers.get("etag")).toBe(first.headers.get("etag"));
    expect((await health()).body.isolate).toMatchObject({ responseHits: 1, gatewayCalls: 0, fills: 0 });
  });

  it("an entry written under another allow-list version is never read", async () => {
    const leakyVersion = allowListVersion([...VEHICLE_FIELDS, "fuelCardPin"]);
    // What a deploy that still served fuelCardPin would have stored for the same query, fresh.
    await plant(listKey("?limit=3", leakyVersion), '{"vehicles":[{"fuelCardPin":"1234"}],"count":1}', {
      fetchedAt: Date.now(),
      snapshotEtag: '"older-deploy"',
      etag: 'W/"older-deploy"',
    });
    const res = await observe("/v1/vehicles?limit=3");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-status")).toMatch(/^gateway-object; fwd=miss/);
    expect(res.text).not.toContain("fuelCardPin");
    expect((JSON.parse(res.text) as VehicleListBody).count).toBe(3);
    expect((await health()).body.isolate).toMatchObject({ responseHits: 0, gatewayCalls: 1 });
  });

  it("an entry past the TTL (by its snapshot's fetchedAt) is not served, though the Cache API still holds it", async () => {
    const path = "/v1/vehicles?limit=4";
    const first = await observeJson<VehicleListBody>(path);
    await stored(listKey("?limit=4"));
    await waitFor("the L2 snapshot", async () => (await cachedFetchedAt()) !== undefined);
    advanceClock(31_000);
    resetIsolate();
    expect(await entryText(listKey("?limit=4"))).toContain(first.text);

    // Not the stored (now stale) answer: the stale snapshot of L2, refreshed behind it.
    const later = await observeJson<VehicleListBody>(path);
    expect(later.headers.get("cache-status")).toMatch(/^gateway-cache; hit; ttl=-\d+$/);
    expect(later.body.stale).toBe(true);
    expect((await health()).body.isolate).toMatchObject({ responseHits: 0, responsePuts: 0, cacheReads: 1 });
  });

  it("an entry older than L1's snapshot is not served, though fresh; a cold isolate would serve it", async () => {
    const path = "/v1/vehicles?limit=5";
    const first = await observeJson<VehicleListBody>(path);
    await stored(listKey("?limit=5"));
    await waitFor("the L2 snapshot", async () => (await cachedFetchedAt()) !== undefined);
    // As rendered from a snapshot a second older than the current one, and still fresh.
    const planted = '{"planted":true}';
    await plant(listKey("?limit=5"), planted, {
      fetchedAt: Date.parse(first.body.fetchedAt) - 1_000,
      snapshotEtag: '"older"',
      etag: 'W/"older"',
    });

    resetIsolate();
    // With nothing in L1, the planted entry is a valid, fresh answer.
    const cold = await observe(path);
    expect(cold.headers.get("cache-status")).toMatch(RESPONSE_HIT);
    expect(cold.text).toBe(planted);
    // Another query fills L1 with the current snapshot (from L2)...
    expect((await observe("/v1/vehicles?limit=6")).headers.get("cache-status")).toMatch(/^gateway-cache; hit; ttl/);
    // ...and from then on the older entry is not served, even with L1 skipped.
    const after = await observe(path, { headers: { "x-gateway-bypass": "memory" } });
    expect(after.headers.get("cache-status")).toMatch(/^gateway-cache; hit; ttl=\d+, gateway-memory; fwd=bypass$/);
    expect(after.text).toBe(first.text);
    expect(after.headers.get("etag")).toBe(first.headers.get("etag"));
    expect((await health()).body.isolate).toMatchObject({ responseHits: 1, gatewayCalls: 0 });
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("what it stores: the body and its own headers; no CORS header, request id, Cache-Status, Age, Vary, token or secret", async () => {
    const list = await observeJson<VehicleListBody>("/v1/vehicles?limit=2", { headers: { origin: ALLOWED_ORIGIN } });
    expect(list.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
    const vin = list.body.vehicles[0]?.vin as string;
    resetIsolate();
    await observe(`/v1/vehicles/${vin}`, { headers: { origin: ALLOWED_ORIGIN } });
    const keys = [listKey("?limit=2"), responseCacheKey(workerConfig(), vinView(vin))];
    const texts: string[] = [];
    for (const key of keys) {
      await stored(key);
      texts.push((await entryText(key)) as string);
    }
    for (const [i, text] of texts.entries()) {
      const [status, ...lines] = text.slice(0, text.indexOf("\n\n")).split("\n");
      expect(status).toBe("200");
      // Exactly what was put: nothing per client or per request (CORS, x-request-id, Cache-Status, Vary).
      const names = lines.map((l) => l.slice(0, l.indexOf(":"))).filter((n) => !CACHE_OWN.has(n));
      const link = i === 0 ? ["link"] : [];
      expect(names.sort()).toEqual(
        ["cache-control", "content-type", "etag", ...link, "x-gateway-fetched-at", "x-gateway-snapshot-etag"].sort(),
      );
      expect(lines).toContainEqual(expect.stringMatching(/^cache-control: public, max-age=(29|30)$/));
      expect(text).not.toContain(env.PARTNER_CLIENT_SECRET as string);
      expect(text).not.toContain(env.PARTNER_CLIENT_ID as string);
    }
    const { accessTokens } = await sandbox.secrets();
    expect(accessTokens.length).toBeGreaterThan(0);
    for (const token of accessTokens) for (const text of texts) expect(text).not.toContain(token);
    // And the full scan: no fuelCardPin, token or client secret of the sandbox in any of them.
    await expectNoLeaks({ extra: texts, everyPin: true });
  });

  it("CORS is the client's: a stored answer gets the allowed origin's headers, another origin none", async () => {
    const path = "/v1/vehicles?limit=7";
    const first = await observe(path);
    expect(first.headers.get("access-control-allow-origin")).toBeNull();
    await stored(listKey("?limit=7"));
    resetIsolate();

    const allowed = await observe(path, { headers: { origin: ALLOWED_ORIGIN } });
    expect(allowed.headers.get("cache-status")).toMatch(RESPONSE_HIT);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
    expect(allowed.headers.get("access-control-expose-headers")?.toLowerCase()).toContain("cache-status");
    expect(allowed.headers.get("access-control-allow-credentials")).toBeNull();
    const vary = (allowed.headers.get("vary") ?? "").toLowerCase().split(/,\s*/);
    expect(vary.filter((v) => v === "origin")).toHaveLength(1);
    expect(allowed.headers.get("x-request-id")).toBeTruthy();
    expect(allowed.headers.get("x-content-type-options")).toBe("nosniff");
    // The Cache API's own headers stay behind.
    expect(allowed.headers.get("cf-cache-status")).toBeNull();
    expect(allowed.text).toBe(first.text);

    const other = await observe(path, { headers: { origin: OTHER_ORIGIN } });
    expect(other.headers.get("cache-status")).toMatch(RESPONSE_HIT);
    expect([...other.headers.keys()].filter((k) => k.startsWith("access-control-"))).toEqual([]);
    expect(other.headers.get("vary")?.toLowerCase()).toContain("origin");
    expect(other.headers.get("x-request-id")).not.toBe(allowed.headers.get("x-request-id"));
  });

  it("x-gateway-bypass: `memory` is answered by it, `memory,responses` by the snapshot in L2, `memory,cache` by the object", async () => {
    const path = "/v1/vehicles?limit=8";
    const first = await observe(path);
    await stored(listKey("?limit=8"));
    await waitFor("the L2 snapshot", async () => (await cachedFetchedAt()) !== undefined);
    const bypass = (tiers: string) => observe(path, { headers: { "x-gateway-bypass": tiers } });

    const responses = await bypass("memory");
    expect(responses.headers.get("cache-status")).toMatch(
      /^gateway-cache; hit; ttl=\d+; detail=response, gateway-memory; fwd=bypass$/,
    );
    const snapshot = await bypass("memory,responses");
    expect(snapshot.headers.get("cache-status")).toMatch(/^gateway-cache; hit; ttl=\d+, gateway-memory; fwd=bypass$/);
    const object = await bypass("memory,cache");
    expect(object.headers.get("cache-status")).toMatch(
      /^gateway-object; fwd=miss; stored, gateway-cache; fwd=bypass, /,
    );
    for (const r of [responses, snapshot, object]) expect(r.text).toBe(first.text);
    expect((await health()).body.isolate).toMatchObject({ responseHits: 1, cacheReads: 1, gatewayCalls: 2 });
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });
});
