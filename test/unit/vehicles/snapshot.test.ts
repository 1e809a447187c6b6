import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { mulberry32, pick } from "../../../sandbox/prng.ts";
import type { SnapshotEnvelope } from "../../../src/deps.ts";
import { parseVehicleQuery, type VehicleQuery } from "../../../src/vehicles/query.ts";
import {
  redactVehicles,
  type Vehicle,
  VehicleListSchema,
  VehicleResponseSchema,
} from "../../../src/vehicles/schema.ts";
import {
  buildSnapshot,
  queryVehicles,
  serializeFullList,
  serializeVehicle,
  serializeVehicles,
} from "../../../src/vehicles/snapshot.ts";
import { haversineM } from "../../../src/vehicles/spatial-index.ts";

const VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/** Partner-shaped items: secrets, unknown fields, sloppy case, missing fields, some clustered. */
function partnerFleet(rnd: () => number, n: number): Record<string, unknown>[] {
  const items: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const vin = Array.from({ length: 17 }, () => pick(rnd, [...VIN_CHARS])).join("");
    const clustered = rnd() < 0.8;
    const item: Record<string, unknown> = {
      vin: rnd() < 0.1 ? vin.toLowerCase() : vin,
      numberPlate: `B-SN ${i}`,
      vehicleName: pick(rnd, ["MINI Cooper", "BMW i3", "Mercedes A-Class"]),
      position: clustered
        ? { latitude: 52.4 + rnd() * 0.25, longitude: 13.2 + rnd() * 0.4 }
        : { latitude: rnd() * 170 - 85, longitude: rnd() * 360 - 180 },
      fuelType: pick(rnd, ["GASOLINE", "DIESEL", "ELECTRIC", "electric", "Hybrid", null]),
      fuelLevel: rnd() < 0.9 ? Math.floor(rnd() * 101) : null,
      fuelCardPin: String(1000 + Math.floor(rnd() * 9000)),
      transmissionType: pick(rnd, ["GA", "GM", "ga", null]),
      numberOfSeats: pick(rnd, [2, 4, 5, 7, null]),
      charging: rnd() < 0.2,
      secretFleetNote: "do not serve",
    };
    // Exact ties in position, for the distance tie-break by VIN.
    if (i > 0 && rnd() < 0.03) item.position = { ...(items[i - 1] as { position: object }).position };
    items.push(item);
  }
  return items;
}

function envelopeOf(vehicles: Vehicle[], fetchedAt = Date.UTC(2025, 0, 2, 3, 4, 5, 678)): SnapshotEnvelope {
  return { body: JSON.stringify(vehicles), fetchedAt, etag: '"abc123"', count: vehicles.length, dropped: 0 };
}

type Out = Vehicle & { distanceM?: number };

/** The reference: every filter by brute force over the array. */
function brute(vehicles: readonly Vehicle[], q: VehicleQuery): { vehicles: Out[]; total: number } {
  const matches: { veh: Vehicle; d: number }[] = [];
  for (const veh of vehicles) {
    const { latitude: lat, longitude: lon } = veh.position;
    if (q.bbox && !(lat >= q.bbox.minLat && lat <= q.bbox.maxLat && lon >= q.bbox.minLon && lon <= q.bbox.maxLon))
      continue;
    const d = q.near ? haversineM(q.near.lat, q.near.lon, lat, lon) : 0;
    if (q.near && d > q.near.radiusM) continue;
    if (q.fuelTypes && !(veh.fuelType !== undefined && q.fuelTypes.includes(veh.fuelType.toUpperCase()))) continue;
    if (q.minFuelLevel !== undefined && !(veh.fuelLevel !== undefined && veh.fuelLevel >= q.minFuelLevel)) continue;
    if (q.transmission && veh.transmissionType !== q.transmission) continue;
    if (q.seats && !(veh.numberOfSeats !== undefined && q.seats.includes(veh.numberOfSeats))) continue;
    matches.push({ veh, d });
  }
  if (q.near) matches.sort((a, b) => a.d - b.d || (a.veh.vin < b.veh.vin ? -1 : 1));
  else matches.sort((a, b) => (a.veh.vin < b.veh.vin ? -1 : 1));
  const out = matches.slice(0, q.limit).map((m) => (q.near ? { ...m.veh, distanceM: Math.round(m.d) } : m.veh));
  return { vehicles: out, total: matches.length };
}

const rnd = mulberry32(99);
const { vehicles: fleet } = redactVehicles(partnerFleet(rnd, 5000), 100_000);
const snapshot = buildSnapshot(envelopeOf(fleet));
const MAX = 5000;

function randomQuery(): string {
  const parts: string[] = [];
  const r = rnd();
  if (r < 0.35) {
    const lat = 52.4 + rnd() * 0.3 - 0.02;
    const lon = 13.2 + rnd() * 0.45 - 0.02;
    const h = 10 ** (rnd() * 3 - 3.3); // ~0.0005 .. 0.5 degrees
    parts.push(`bbox=${lon},${lat},${lon + h * 1.5},${lat + h}`);
  } else if (r < 0.5) {
    parts.push(`bbox=${rnd() * 300 - 180},${rnd() * 100 - 90},180,90`);
  }
  if (rnd() < 0.45) {
    const anchor = pick(rnd, fleet).position;
    const lat = rnd() < 0.3 ? anchor.latitude : 52.4 + rnd() * 0.25;
    const lon = rnd() < 0.3 ? anchor.longitude : 13.2 + rnd() * 0.4;
    parts.push(`near=${lat},${lon}`);
    if (rnd() < 0.8) parts.push(`radius=${Math.ceil(10 ** (rnd() * 4.7))}`);
  }
  if (rnd() < 0.3) parts.push(`fuelType=${pick(rnd, ["electric", "GASOLINE,diesel", "hybrid", "HYDROGEN"])}`);
  if (rnd() < 0.3) parts.push(`minFuelLevel=${Math.floor(rnd() * 101)}`);
  if (rnd() < 0.3) parts.push(`transmission=${pick(rnd, ["GA", "GM", "automatic", "manual"])}`);
  if (rnd() < 0.3) parts.push(`seats=${pick(rnd, ["4", "2,7", "5,4", "3"])}`);
  if (rnd() < 0.4) parts.push(`limit=${1 + Math.floor(rnd() * 60)}`);
  return parts.join("&");
}

describe("serializeFullList (an L2 hit served from its text)", () => {
  it("is byte for byte what serializeVehicles gives for the full list, fresh and stale, empty or not", () => {
    for (const vehicles of [fleet, fleet.slice(0, 1), []]) {
      const env = envelopeOf(vehicles);
      const s = buildSnapshot(env);
      for (const stale of [false, true]) {
        for (const limit of [vehicles.length, MAX]) {
          const q = parseVehicleQuery(limit === MAX ? "" : `?limit=${Math.max(1, limit)}`, { maxLimit: MAX });
          if (q.limit < vehicles.length) continue;
          const expected = serializeVehicles(s, queryVehicles(s, q), { stale, query: q });
          expect(serializeFullList(env, { stale })).toBe(expected);
        }
      }
    }
  });
});

describe("buildSnapshot", () => {
  it("parses the body once: VIN map, index, fetchedAt and etag", () => {
    expect(snapshot.vehicles).toHaveLength(fleet.length);
    expect(snapshot.byVin.size).toBe(fleet.length);
    expect(snapshot.index.size).toBe(fleet.length);
    expect(snapshot.etag).toBe('"abc123"');
    expect(snapshot.fetchedAt).toBe(Date.UTC(2025, 0, 2, 3, 4, 5, 678));
    const some = fleet[1234] as Vehicle;
    expect(snapshot.byVin.get(some.vin)).toEqual(some);
    expect(snapshot.body).toBe(JSON.stringify(fleet));
  });

  it("redacts again an envelope that carries fields off the allow-list, with a new ETag", () => {
    const dirty = fleet
      .slice(0, 3)
      .map((veh) => ({ ...veh, fuelCardPin: "8642", position: { ...veh.position, pin: 1 } }));
    const s = buildSnapshot({ body: JSON.stringify(dirty), fetchedAt: 1, etag: '"e1"', count: 3, dropped: 0 });
    expect(s.body).not.toContain("8642");
    expect(s.body).not.toContain("pin");
    expect(s.vehicles).toEqual(fleet.slice(0, 3));
    expect(s.etag).not.toBe('"e1"');
    expect(s.etag).toMatch(/^"[^"]+"$/);
    const served = serializeVehicles(s, queryVehicles(s, { limit: 10 }), { stale: false });
    expect(served).not.toContain("8642");
  });

  it("redacts again a body with a secret nested in an allowed field, or out of VIN order", () => {
    const nested = [{ ...fleet[0], numberPlate: { fuelCardPin: "8642" } }];
    expect(buildSnapshot({ ...envelopeOf([]), body: JSON.stringify(nested) }).body).toBe("[]");
    const reversed = fleet.slice(0, 5).reverse();
    const s = buildSnapshot({ ...envelopeOf([]), body: JSON.stringify(reversed) });
    expect(s.vehicles.map((x) => x.vin)).toEqual(fleet.slice(0, 5).map((x) => x.vin));
  });

  it("throws on a body that is not a JSON array", () => {
    expect(() => buildSnapshot({ ...envelopeOf([]), body: "{" })).toThrow();
    expect(() => buildSnapshot({ ...envelopeOf([]), body: '{"vehicles":[]}' })).toThrow();
  });
});

describe("queryVehicles", () => {
  it("equals a brute-force computation for 1,500 random queries", () => {
    let withNear = 0;
    let empty = 0;
    let limited = 0;
    for (let i = 0; i < 1500; i++) {
      const qs = randomQuery();
      const q = parseVehicleQuery(qs, { maxLimit: MAX });
      const got = queryVehicles(snapshot, q);
      const want = brute(fleet, q);
      // Compared as VIN:distance strings (deep equality of thousands of objects is slow), and in full for a few.
      const key = (xs: readonly Out[]) => xs.map((x) => `${x.vin}:${x.distanceM ?? "-"}`).join(" ");
      expect({ qs, total: got.total, vehicles: key(got.vehicles) }).toEqual({
        qs,
        total: want.total,
        vehicles: key(want.vehicles),
      });
      expect(got.vehicles.slice(0, 3)).toEqual(want.vehicles.slice(0, 3));
      if (q.near) withNear++;
      if (want.total === 0) empty++;
      if (want.total > q.limit) limited++;
    }
    expect(withNear).toBeGreaterThan(400);
    expect(empty).toBeGreaterThan(50);
    expect(limited).toBeGreaterThan(50);
  }, 30_000);

  it("returns the snapshot's own array for the unfiltered, unlimited list", () => {
    const r = queryVehicles(snapshot, { limit: MAX });
    expect(r.vehicles).toBe(snapshot.vehicles);
    expect(r.total).toBe(fleet.length);
    const limited = queryVehicles(snapshot, { limit: 10 });
    expect(limited.vehicles).toEqual(fleet.slice(0, 10));
    expect(limited.total).toBe(fleet.length);
  });

  it("sorts near answers by distance, ties by VIN, with distanceM rounded to 1 m", () => {
    const a = fleet[10] as Vehicle;
    const twin = fleet.find(
      (x) => x !== a && x.position.latitude === a.position.latitude && x.position.longitude === a.position.longitude,
    );
    const s = twin
      ? snapshot
      : buildSnapshot(
          envelopeOf(
            redactVehicles([...fleet, { ...a, vin: "ZZZZZZZZZZZZZZZZZ" }, { ...a, vin: "00000000000000000" }], 1e6)
              .vehicles,
          ),
        );
    const r = queryVehicles(s, {
      near: { lat: a.position.latitude, lon: a.position.longitude, radiusM: 3000 },
      limit: MAX,
    });
    const out = r.vehicles as (Vehicle & { distanceM: number })[];
    expect(out.length).toBeGreaterThan(2);
    expect(out[0]?.distanceM).toBe(0);
    for (let i = 1; i < out.length; i++) {
      const p = out[i - 1] as Vehicle & { distanceM: number };
      const c = out[i] as Vehicle & { distanceM: number };
      expect(Number.isInteger(c.distanceM)).toBe(true);
      expect(c.distanceM).toBeGreaterThanOrEqual(p.distanceM);
      if (c.position.latitude === p.position.latitude && c.position.longitude === p.position.longitude) {
        expect(c.vin > p.vin).toBe(true);
      }
    }
  });

  it("does not touch the snapshot's vehicles when adding distances", () => {
    const q = parseVehicleQuery("near=52.5,13.4&radius=2000", { maxLimit: MAX });
    queryVehicles(snapshot, q);
    expect(snapshot.vehicles.some((x) => "distanceM" in x)).toBe(false);
  });
});

describe("serializeVehicles", () => {
  it("splices the stored JSON for the full list", () => {
    const r = queryVehicles(snapshot, { limit: MAX });
    const text = serializeVehicles(snapshot, r, { stale: false });
    expect(text.startsWith(`{"vehicles":${snapshot.body},`)).toBe(true);
    const body = JSON.parse(text);
    expect(body).toEqual({
      vehicles: fleet,
      count: fleet.length,
      total: fleet.length,
      fetchedAt: "2025-01-02T03:04:05.678Z",
      stale: false,
    });
    expect(v.is(VehicleListSchema, body)).toBe(true);
  });

  it("serializes a filtered answer, with count, total and stale", () => {
    const q = parseVehicleQuery("near=52.5,13.4&radius=1500&limit=5", { maxLimit: MAX });
    const r = queryVehicles(snapshot, q);
    const body = JSON.parse(serializeVehicles(snapshot, r, { stale: true }));
    expect(body.count).toBe(r.vehicles.length);
    expect(body.count).toBeLessThanOrEqual(5);
    expect(body.total).toBe(r.total);
    expect(body.stale).toBe(true);
    expect(body.vehicles).toEqual(r.vehicles);
    expect(v.is(VehicleListSchema, body)).toBe(true);
  });

  it("is byte-for-byte JSON.stringify of the answer, memo cold or warm", () => {
    const s = buildSnapshot(envelopeOf(fleet));
    for (let i = 0; i < 200; i++) {
      const q = parseVehicleQuery(randomQuery(), { maxLimit: MAX });
      const r = queryVehicles(s, q);
      const expected = JSON.stringify({
        vehicles: r.vehicles,
        count: r.vehicles.length,
        total: r.total,
        fetchedAt: "2025-01-02T03:04:05.678Z",
        stale: i % 2 === 0,
      });
      expect(serializeVehicles(s, r, { stale: i % 2 === 0 })).toBe(expected);
      expect(serializeVehicles(s, queryVehicles(s, q), { stale: i % 2 === 0 })).toBe(expected);
    }
    expect(s.itemJson.some((t) => t !== undefined)).toBe(true);
  });

  it("never carries a secret, whatever the query", () => {
    for (const qs of ["", "limit=3", "fuelType=electric", "near=52.5,13.4", "bbox=13,52,14,53"]) {
      const q = parseVehicleQuery(qs, { maxLimit: MAX });
      const text = serializeVehicles(snapshot, queryVehicles(snapshot, q), { stale: false });
      expect(text).not.toContain("fuelCardPin");
      expect(text).not.toContain("secretFleetNote");
    }
  });

  it("serializes one vehicle", () => {
    const veh = fleet[3] as Vehicle;
    const body = JSON.parse(serializeVehicle(snapshot, veh, { stale: false }));
    expect(body).toEqual({ vehicle: veh, fetchedAt: "2025-01-02T03:04:05.678Z", stale: false });
    expect(v.is(VehicleResponseSchema, body)).toBe(true);
  });
});
