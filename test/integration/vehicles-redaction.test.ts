/**
 * Redaction: no fuelCardPin of the sandbox's fleet (nor an access token or client secret) in any
 * answer of the gateway, whatever its kind: list, each filter, single vehicle, HEAD, 304,
 * /health, errors, stale answers. Nor in what the gateway keeps: the Cache API entry and the
 * gateway object's persisted snapshot. Served vehicles carry exactly the allow-listed keys.
 */
import { runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { CACHE_NAME } from "../../src/cache/snapshot-entry.ts";
import { loadStored } from "../../src/gateway/snapshot-codec.ts";
import { preparedText } from "../../src/vehicles/prepared.ts";
import { tierCacheKey } from "../../src/vehicles/tiers.ts";
import {
  advanceClock,
  cachedFetchedAt,
  coldStartEachCapturingLogs,
  expectNoLeaks,
  gatewayStub,
  type Observed,
  observe,
  SERVED_VEHICLE_KEYS,
  type ServedVehicle,
  sandbox,
  sandboxCounts,
  type VehicleBody,
  type VehicleListBody,
  workerConfig,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

const KEYS = [...SERVED_VEHICLE_KEYS];

function expectAllowListed(v: ServedVehicle, extra: string[] = []): void {
  expect(Object.keys(v).sort()).toEqual([...KEYS, ...extra].sort());
  expect(Object.keys(v.position).sort()).toEqual(["latitude", "longitude"]);
  expect(v).not.toHaveProperty("fuelCardPin");
}

const logs = coldStartEachCapturingLogs();

afterEach(async () => {
  await sandbox.clearFaults();
});

describe("vehicles endpoint: redaction", () => {
  it("no fuelCardPin, token or client secret in any kind of answer; exactly the allow-listed keys", async () => {
    const seen: Observed[] = [];
    const go = async (path: string, init?: RequestInit) => {
      const o = await observe(path, init);
      seen.push(o);
      return o;
    };

    // The full list and every filter.
    const all = JSON.parse((await go("/v1/vehicles")).text) as VehicleListBody;
    expect(all.vehicles).toHaveLength(2000);
    for (const v of all.vehicles) expectAllowListed(v);
    const filters = [
      "bbox=13.3,52.45,13.5,52.55",
      "near=52.52,13.405&radius=5000",
      "near=40.4168,-3.7038",
      "fuelType=ELECTRIC",
      "fuelType=gasoline,diesel",
      "minFuelLevel=30",
      "transmission=GM",
      "transmission=automatic",
      "seats=4,5",
      "limit=10",
      "bbox=-4,40,17,56&fuelType=ELECTRIC&minFuelLevel=10&transmission=GA&seats=2,4&limit=200",
    ];
    for (const f of filters) {
      const o = await go(`/v1/vehicles?${f}`);
      expect(o.status, f).toBe(200);
      const body = JSON.parse(o.text) as VehicleListBody;
      expect(body.count, f).toBeGreaterThan(0);
      for (const v of body.vehicles) expectAllowListed(v, f.includes("near=") ? ["distanceM"] : []);
    }

    // Single vehicles, HEAD, 304.
    for (const v of all.vehicles.slice(0, 25)) {
      const o = await go(`/v1/vehicles/${v.vin}`);
      expect(o.status).toBe(200);
      expectAllowListed((JSON.parse(o.text) as VehicleBody).vehicle);
    }
    const vin = all.vehicles[0]!.vin;
    expect((await go(`/v1/vehicles/${vin}`, { method: "HEAD" })).status).toBe(200);
    expect((await go("/v1/vehicles?limit=3", { method: "HEAD" })).status).toBe(200);
    const etag = (await go("/v1/vehicles?limit=3")).headers.get("etag") as string;
    expect((await go("/v1/vehicles?limit=3", { headers: { "if-none-match": etag } })).status).toBe(304);
    const vinTag = (await go(`/v1/vehicles/${vin}`)).headers.get("etag") as string;
    expect((await go(`/v1/vehicles/${vin}`, { headers: { "if-none-match": vinTag } })).status).toBe(304);

    // /health, CORS preflight, and errors of every kind.
    expect((await go("/health")).status).toBe(200);
    expect((await go("/health", { method: "HEAD" })).status).toBe(200);
    const preflight = { origin: "https://app.example.com", "access-control-request-method": "GET" };
    expect((await go("/v1/vehicles", { method: "OPTIONS", headers: preflight })).status).toBe(204);
    const errors: [string, RequestInit | undefined, number][] = [
      ["/v1/vehicles?fuelCardPin=1", undefined, 400],
      ["/v1/vehicles?fields=fuelCardPin", undefined, 400],
      ["/v1/vehicles?limit=0", undefined, 400],
      ["/v1/vehicles/not-a-vin", undefined, 400],
      ["/v1/vehicles/AAA4533911K123456", undefined, 404],
      [`/v1/vehicles/${vin}/fuelCardPin`, undefined, 404],
      ["/v1/nothing", undefined, 404],
      ["/v1/vehicles", { method: "POST", body: "{}" }, 405],
      ["/v1/vehicles", { headers: { "content-length": "4" } }, 413],
      [`/v1/vehicles?near=${"9".repeat(3000)}`, undefined, 414],
    ];
    for (const [path, init, status] of errors) expect((await go(path, init)).status, path.slice(0, 60)).toBe(status);

    // Stale answers, and the error once nothing is left to serve.
    await sandbox.faults({ vehicles: { kind: "status", status: 500 } });
    advanceClock(40_000);
    const stale = await go("/v1/vehicles?limit=5");
    expect((JSON.parse(stale.text) as VehicleListBody).stale).toBe(true);
    const staleOne = await go(`/v1/vehicles/${vin}`);
    expect((JSON.parse(staleOne.text) as VehicleBody).stale).toBe(true);
    await waitFor("the background refresh", async () => (await sandboxCounts()).vehicles === 3);
    advanceClock(120_000);
    expect((await go("/v1/vehicles?limit=5")).status).toBe(502);
    expect((await go("/health")).status).toBe(200);

    // Every answer: nosniff; and the leak scan over all of them and every log line.
    for (const o of seen) expect(o.headers.get("x-content-type-options")).toBe("nosniff");
    const scanned = await expectNoLeaks({ extra: logs(), everyPin: true });
    expect(scanned).toBeGreaterThanOrEqual(seen.length);
    const { fuelCardPins, accessTokens } = await sandbox.secrets();
    expect(fuelCardPins.length).toBe(2000);
    expect(accessTokens.length).toBeGreaterThan(0);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 5, unexpected: 0, steal: 0 });
  });

  it("the leak scan itself finds a PIN, with or without its marker, and a token", async () => {
    expect((await observe("/v1/vehicles?limit=1")).status).toBe(200);
    const { fuelCardPins, accessTokens } = await sandbox.secrets();
    const pin = fuelCardPins[1234]!;
    await expect(expectNoLeaks({ extra: [`{"pin":"${pin}"}`] })).rejects.toThrow(/fuelCardPin/);
    const bare = pin.slice("sbxpin-".length);
    await expect(expectNoLeaks({ extra: [`{"pin":"${bare}"}`], everyPin: true })).rejects.toThrow(/fuelCardPin/);
    await expect(expectNoLeaks({ extra: [`Bearer ${accessTokens[0]}`] })).rejects.toThrow(/token/);
    await expectNoLeaks({ extra: logs(), everyPin: true });
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("nothing the gateway keeps holds a fuelCardPin: the Cache API entry and the object's stored snapshot", async () => {
    expect((await observe("/v1/vehicles?limit=1")).status).toBe(200);
    await waitFor("the L2 entry", async () => (await cachedFetchedAt()) !== undefined);
    const hit = await (await caches.open(CACHE_NAME)).match(tierCacheKey(workerConfig()));
    const entry = new Uint8Array(await hit!.arrayBuffer());
    // The prepared snapshot: its vehicles' JSON text, and every byte of it (columns included) for the scan.
    const cached = `${preparedText(entry)}\n${new TextDecoder("latin1").decode(entry)}`;
    const headers = [...hit!.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
    const items = JSON.parse(preparedText(entry)) as ServedVehicle[];
    expect(items).toHaveLength(2000);
    for (const v of items) expectAllowListed(v);

    // The object's persisted last good copy (its parts, read back whole), straight from its storage.
    // (The object also stores its access token, by design: only the snapshot records are scanned here.)
    let stored = "";
    await waitFor("the persisted snapshot", async () => {
      stored = await runInDurableObject(gatewayStub(), async (_instance, state) => {
        const r = await loadStored({ get: (key) => state.storage.get(key) });
        if (r === undefined || r === "unreadable") return "";
        const data = r.envelope.data;
        return `${preparedText(data)}\n${new TextDecoder("latin1").decode(data)}`;
      });
      return stored.includes('"vin"');
    });
    expect(JSON.parse(stored.slice(0, stored.indexOf("\n")))).toHaveLength(2000);
    await expectNoLeaks({ extra: [cached, headers, stored, ...logs()], everyPin: true });
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });
});
