/**
 * Filters of GET /v1/vehicles, each against a brute-force computation over the same data: the
 * sandbox's fleet at the tick the gateway fetched it, redacted here. Every filter alone, some
 * combinations, and a few dozen random queries from a seeded PRNG. All within one TTL: one token
 * request and one partner request per test, whatever the queries.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mulberry32, pick } from "../../sandbox/prng.ts";
import {
  captureLogs,
  coldStart,
  distanceM,
  expectNoLeaks,
  type Observed,
  observe,
  redactForComparison,
  SERVED_VEHICLE_KEYS,
  type ServedVehicle,
  sandbox,
  sandboxCounts,
  type VehicleListBody,
} from "../support/harness.ts";

const MAX_LIMIT = 5000;

/** A query in parsed form, plus how it is spelled on the wire. */
interface Query {
  bbox?: [minLon: number, minLat: number, maxLon: number, maxLat: number];
  near?: [lat: number, lon: number];
  radius?: number;
  fuelTypes?: string[];
  minFuelLevel?: number;
  transmission?: "GA" | "GM";
  seats?: number[];
  limit?: number;
  /** The query string; built from the fields when absent. */
  wire?: string;
}

function wireOf(q: Query): string {
  if (q.wire !== undefined) return q.wire;
  const p: string[] = [];
  if (q.bbox) p.push(`bbox=${q.bbox.join(",")}`);
  if (q.near) p.push(`near=${q.near.join(",")}`);
  if (q.radius !== undefined) p.push(`radius=${q.radius}`);
  if (q.fuelTypes) p.push(`fuelType=${q.fuelTypes.join(",")}`);
  if (q.minFuelLevel !== undefined) p.push(`minFuelLevel=${q.minFuelLevel}`);
  if (q.transmission) p.push(`transmission=${q.transmission}`);
  if (q.seats) p.push(`seats=${q.seats.join(",")}`);
  if (q.limit !== undefined) p.push(`limit=${q.limit}`);
  return p.join("&");
}

/** Brute force: every vehicle tested against every filter, then sorted and cut. */
function bruteForce(
  fleet: readonly ServedVehicle[],
  q: Query,
): { expected: ServedVehicle[]; total: number; boundary: number } {
  const radius = q.radius ?? 1000;
  const fuel = q.fuelTypes ? new Set(q.fuelTypes.map((f) => f.toUpperCase())) : undefined;
  const seats = q.seats ? new Set(q.seats) : undefined;
  let boundary = 0;
  const hits: { v: ServedVehicle; d: number }[] = [];
  for (const v of fleet) {
    const { latitude: lat, longitude: lon } = v.position;
    if (q.bbox) {
      const [minLon, minLat, maxLon, maxLat] = q.bbox;
      if (lon < minLon || lon > maxLon || lat < minLat || lat > maxLat) continue;
    }
    if (fuel && (v.fuelType === undefined || !fuel.has(v.fuelType.toUpperCase()))) continue;
    if (q.minFuelLevel !== undefined && (v.fuelLevel === undefined || v.fuelLevel < q.minFuelLevel)) continue;
    if (q.transmission && v.transmissionType !== q.transmission) continue;
    if (seats && (v.numberOfSeats === undefined || !seats.has(v.numberOfSeats))) continue;
    let d = 0;
    if (q.near) {
      d = distanceM(q.near[0], q.near[1], lat, lon);
      // Within a micrometre of the circle, floating point may decide either way: counted, and
      // the caller makes sure no query lands there.
      if (Math.abs(d - radius) < 1e-6) boundary++;
      if (d > radius) continue;
    }
    hits.push({ v, d });
  }
  if (q.near) hits.sort((a, b) => a.d - b.d || (a.v.vin < b.v.vin ? -1 : 1));
  const limit = q.limit ?? MAX_LIMIT;
  const expected = hits.slice(0, limit).map((h) => (q.near ? { ...h.v, distanceM: Math.round(h.d) } : h.v));
  return { expected, total: hits.length, boundary };
}

let fleet: ServedVehicle[] = [];
let fullList: VehicleListBody;
let fetchedAt = "";
let logs: string[] = [];

/**
 * A cold start, then the snapshot the gateway fetched and the sandbox's fleet at that same tick
 * (the fleet moves every 10 s of real time: read it before and after the gateway's fetch, and
 * retry in the rare case a tick boundary fell in between).
 */
async function snapshotAndFleet(): Promise<VehicleListBody> {
  for (let attempt = 0; ; attempt++) {
    await coldStart();
    logs = captureLogs();
    const before = await sandbox.fleet();
    const all = await observe("/v1/vehicles");
    const after = await sandbox.fleet();
    if (JSON.stringify(before) === JSON.stringify(after) || attempt === 2) {
      expect(all.status).toBe(200);
      fleet = redactForComparison(after);
      const body = JSON.parse(all.text) as VehicleListBody;
      fetchedAt = body.fetchedAt;
      return body;
    }
  }
}

async function expectQuery(q: Query): Promise<{ total: number; count: number }> {
  const wire = wireOf(q);
  const { expected, total, boundary } = bruteForce(fleet, q);
  expect(boundary, `a vehicle on the circle of ${wire}`).toBe(0);
  const o: Observed = await observe(`/v1/vehicles?${wire}`);
  expect(o.status, `${wire}: ${o.text.slice(0, 200)}`).toBe(200);
  const body = JSON.parse(o.text) as VehicleListBody;
  expect(body.fetchedAt, wire).toBe(fetchedAt);
  expect(body.stale).toBe(false);
  expect(body.total, `total of ${wire}`).toBe(total);
  expect(body.count, `count of ${wire}`).toBe(expected.length);
  expect(
    body.vehicles.map((v) => v.vin),
    `VINs of ${wire}`,
  ).toEqual(expected.map((v) => v.vin));
  expect(body.vehicles, wire).toEqual(expected);
  const keys = q.near ? [...SERVED_VEHICLE_KEYS, "distanceM"].sort() : [...SERVED_VEHICLE_KEYS];
  for (const v of body.vehicles) expect(Object.keys(v).sort()).toEqual(keys);
  return { total, count: body.count };
}

beforeEach(async () => {
  fullList = await snapshotAndFleet();
});

afterEach(async () => {
  await expectNoLeaks({ extra: logs });
});

const BERLIN: [number, number] = [52.52, 13.405];
const MADRID: [number, number] = [40.4168, -3.7038];

describe("vehicles endpoint: filters against brute force", () => {
  it("the unfiltered list is the partner's fleet without fuelCardPin, sorted by VIN", async () => {
    const body = fullList;
    expect(body.vehicles.length).toBe(2000);
    expect(body.total).toBe(2000);
    expect(body.count).toBe(2000);
    expect(body.vehicles).toEqual(fleet);
    for (const v of body.vehicles) {
      expect(Object.keys(v).sort()).toEqual([...SERVED_VEHICLE_KEYS]);
      expect(Object.keys(v.position).sort()).toEqual(["latitude", "longitude"]);
    }
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("each filter alone", async () => {
    const queries: Query[] = [
      // bbox: a box over central Berlin, a degenerate box on one vehicle, an empty box at sea.
      { bbox: [13.3, 52.45, 13.5, 52.55] },
      {
        bbox: [
          fleet[7]!.position.longitude,
          fleet[7]!.position.latitude,
          fleet[7]!.position.longitude,
          fleet[7]!.position.latitude,
        ],
      },
      { bbox: [-30, 30, -20, 35] },
      { bbox: [-180, -90, 180, 90] },
      // near: with a radius, with the default radius (1 km), the largest radius.
      { near: BERLIN, radius: 500 },
      { near: BERLIN, radius: 2500 },
      { near: MADRID },
      { near: [fleet[3]!.position.latitude, fleet[3]!.position.longitude], radius: 1 },
      { near: [48.1374, 11.5755], radius: 50_000 },
      // fuelType, any case, lists with duplicates and unknown types.
      { fuelTypes: ["ELECTRIC"] },
      { fuelTypes: ["electric"] },
      { fuelTypes: ["Diesel", "GASOLINE", "diesel"] },
      { fuelTypes: ["HYDROGEN"] },
      // minFuelLevel: bounds and a fraction.
      { minFuelLevel: 0 },
      { minFuelLevel: 50 },
      { minFuelLevel: 99.5 },
      { minFuelLevel: 100 },
      // transmission, with its aliases.
      { transmission: "GA" },
      { transmission: "GM" },
      { transmission: "GM", wire: "transmission=manual" },
      { transmission: "GA", wire: "transmission=Automatic" },
      { transmission: "GM", wire: "transmission=gm" },
      // seats.
      { seats: [2] },
      { seats: [4, 5] },
      { seats: [3] },
      // limit.
      { limit: 1 },
      { limit: 17 },
      { limit: 2000 },
      { limit: MAX_LIMIT },
    ];
    for (const q of queries) await expectQuery(q);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("near: sorted by distance, each with distanceM; limit takes the nearest", async () => {
    const all = await observe(`/v1/vehicles?near=${BERLIN.join(",")}&radius=3000`);
    const body = JSON.parse(all.text) as VehicleListBody;
    expect(body.count).toBeGreaterThan(10);
    const d = body.vehicles.map((v) => v.distanceM as number);
    for (let i = 1; i < d.length; i++) expect(d[i]).toBeGreaterThanOrEqual(d[i - 1]!);
    for (const v of body.vehicles) {
      expect(Number.isInteger(v.distanceM)).toBe(true);
      expect(v.distanceM).toBeLessThanOrEqual(3000);
    }
    const nearest = await observe(`/v1/vehicles?near=${BERLIN.join(",")}&radius=3000&limit=5`);
    const top = JSON.parse(nearest.text) as VehicleListBody;
    expect(top.vehicles).toEqual(body.vehicles.slice(0, 5));
    expect(top.total).toBe(body.total);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("combinations", async () => {
    const queries: Query[] = [
      { bbox: [13.3, 52.45, 13.5, 52.55], fuelTypes: ["ELECTRIC"], limit: 7 },
      { bbox: [13.3, 52.45, 13.5, 52.55], fuelTypes: ["GASOLINE"], transmission: "GM", seats: [4] },
      { near: BERLIN, radius: 4000, transmission: "GA", seats: [2, 4] },
      { near: BERLIN, radius: 5000, bbox: [13.3, 52.45, 13.41, 52.6] },
      { near: MADRID, radius: 6000, minFuelLevel: 40, fuelTypes: ["electric", "diesel"], limit: 10 },
      {
        near: [45.4642, 9.19],
        radius: 8000,
        fuelTypes: ["GASOLINE"],
        transmission: "GM",
        minFuelLevel: 20,
        seats: [4, 5],
        limit: 3,
      },
      { bbox: [-4, 40, 17, 56], minFuelLevel: 90, seats: [5], limit: 50 },
      { fuelTypes: ["ELECTRIC"], minFuelLevel: 75.5, transmission: "GA", limit: 100 },
      { fuelTypes: ["ELECTRIC"], transmission: "GM" },
    ];
    for (const q of queries) await expectQuery(q);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("48 random queries from a seeded PRNG", async () => {
    const rnd = mulberry32(0x5eed_c0de);
    // City centres of the sandbox's fleet, and a point with no car near it.
    const centres: [number, number][] = [
      [52.52, 13.405],
      [53.5511, 9.9937],
      [48.1374, 11.5755],
      [50.9375, 6.9603],
      [52.3676, 4.9041],
      [48.2082, 16.3738],
      [45.4642, 9.19],
      [41.9028, 12.4964],
      [48.8566, 2.3522],
      [40.4168, -3.7038],
      [55.6761, 12.5683],
      [0, 0],
    ];
    const round = (x: number, n: number) => Number(x.toFixed(n));
    let nonEmpty = 0;
    for (let i = 0; i < 48; i++) {
      const [clat, clon] = pick(rnd, centres);
      const lat = round(clat + (rnd() - 0.5) * 0.15, 5);
      const lon = round(clon + (rnd() - 0.5) * 0.2, 5);
      const q: Query = {};
      const spatial = rnd();
      if (spatial < 0.4) {
        q.near = [lat, lon];
        if (rnd() < 0.8) q.radius = round(50 + rnd() * 9950, 1);
      }
      if (spatial > 0.3 && spatial < 0.8) {
        const w = 0.01 + rnd() * 0.3;
        const h = 0.01 + rnd() * 0.2;
        q.bbox = [round(lon - w / 2, 4), round(lat - h / 2, 4), round(lon + w / 2, 4), round(lat + h / 2, 4)];
      }
      if (rnd() < 0.35) {
        const all = ["ELECTRIC", "GASOLINE", "DIESEL", "electric", "Gasoline"];
        q.fuelTypes = Array.from({ length: 1 + Math.floor(rnd() * 2) }, () => pick(rnd, all));
      }
      if (rnd() < 0.3) q.minFuelLevel = round(rnd() * 100, 1);
      if (rnd() < 0.3) q.transmission = pick(rnd, ["GA", "GM"] as const);
      if (rnd() < 0.3) q.seats = Array.from({ length: 1 + Math.floor(rnd() * 2) }, () => pick(rnd, [2, 4, 5]));
      if (rnd() < 0.5) q.limit = 1 + Math.floor(rnd() * 60);
      const r = await expectQuery(q);
      if (r.count > 0) nonEmpty++;
    }
    // The draw exercises real answers, not just empty ones.
    expect(nonEmpty).toBeGreaterThan(20);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });
});
