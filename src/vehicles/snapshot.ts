/**
 * A snapshot in isolate memory: the redacted vehicles parsed once, a VIN map and the spatial
 * index, so each request only filters, projects and serializes. Built once per snapshot per
 * isolate (on an L1 miss), never per request.
 */
import type { SnapshotEnvelope } from "../deps.ts";
import { AppError } from "../errors.ts";
import { hasFilters, type VehicleQuery } from "./query.ts";
import { redactVehicles, VEHICLE_FIELDS, type Vehicle, type VehicleWithDistance, VIN_PATTERN } from "./schema.ts";
import { SpatialIndex } from "./spatial-index.ts";

/** The parsed snapshot. Plain data plus an immutable index: safe to keep in isolate memory. */
export interface Snapshot {
  /** Served order: VIN ascending (as `redactVehicles` emits). */
  readonly vehicles: readonly Vehicle[];
  readonly byVin: ReadonlyMap<string, Vehicle>;
  readonly index: SpatialIndex;
  /** Epoch ms at which the partner answered. */
  readonly fetchedAt: number;
  /** Strong validator of `body`. */
  readonly etag: string;
  /** JSON text of `vehicles`: the full list is served by splicing it, not re-stringifying. */
  readonly body: string;
  /** Partner items dropped as malformed. */
  readonly dropped: number;
  /** `fuelType` upper-cased, per vehicle (the filter is case-insensitive). */
  readonly fuelTypeKeys: readonly (string | undefined)[];
  /**
   * Memo of each vehicle's JSON text, filled on demand by `serializeVehicles`: a large filtered
   * answer is then a join of strings, not thousands of `JSON.stringify` calls per request.
   * Plain strings, so it is safe in isolate memory; it grows at most to the size of `body`.
   */
  readonly itemJson: (string | undefined)[];
}

/** An answer to a query: at most `limit` vehicles; `total` counts every match. */
export interface QueryResult {
  readonly vehicles: readonly (Vehicle | VehicleWithDistance)[];
  readonly total: number;
  /** Positions in `snapshot.vehicles`, aligned with `vehicles` (lets serialization reuse `itemJson`). */
  readonly indices?: readonly number[];
}

const FIELD_SET: ReadonlySet<string> = new Set(VEHICLE_FIELDS);

const inRange = (x: unknown, lo: number, hi: number): boolean => typeof x === "number" && x >= lo && x <= hi;

/**
 * A cheap structural check that an item is what `redactVehicles` emits: allow-listed keys only,
 * scalar values (no object where a secret could hide), a valid VIN and position. Full schema
 * validation of every item on every L1 miss would cost milliseconds; this costs microseconds
 * and still makes it impossible to splice a non-allow-listed field into a response.
 */
function looksRedacted(x: unknown): x is Vehicle {
  if (x === null || typeof x !== "object" || Array.isArray(x)) return false;
  const o = x as Record<string, unknown>;
  for (const k in o) {
    if (!FIELD_SET.has(k)) return false;
    const val = o[k];
    if (k !== "position" && (val === null || typeof val === "object")) return false;
  }
  if (typeof o.vin !== "string" || !VIN_PATTERN.test(o.vin)) return false;
  const p = o.position;
  if (p === null || typeof p !== "object" || Array.isArray(p)) return false;
  for (const k in p) if (k !== "latitude" && k !== "longitude") return false;
  const { latitude, longitude } = p as Record<string, unknown>;
  return inRange(latitude, -90, 90) && inRange(longitude, -180, 180);
}

/**
 * Parses an envelope into a snapshot. The body should be the JSON text of `redactVehicles`
 * output; that is checked cheaply, and a body that fails the check (an entry written by an
 * older deploy with a different allow-list, say) is redacted again and re-serialized, with
 * a derived ETag, rather than served as it is. Throws AppError `internal` when the body is not
 * a JSON array.
 */
export function buildSnapshot(envelope: SnapshotEnvelope): Snapshot {
  let items: unknown;
  try {
    items = JSON.parse(envelope.body);
  } catch (cause) {
    throw new AppError("internal", { cause });
  }
  if (!Array.isArray(items)) throw new AppError("internal", { cause: new TypeError("snapshot body is not an array") });

  let vehicles: Vehicle[] = items;
  let body = envelope.body;
  let etag = envelope.etag;
  let dropped = envelope.dropped;
  let clean = true;
  for (let i = 0; i < items.length; i++) {
    const item: unknown = items[i];
    // Sorted and unique, as redactVehicles emits: ties by VIN and byVin rely on it.
    if (!looksRedacted(item) || (i > 0 && (items[i - 1] as Vehicle).vin >= item.vin)) {
      clean = false;
      break;
    }
  }
  if (!clean) {
    const redacted = redactVehicles(items, Number.POSITIVE_INFINITY);
    vehicles = redacted.vehicles;
    dropped += redacted.dropped;
    body = JSON.stringify(vehicles);
    // A different representation needs a different strong validator (RFC 9110 §8.8.3).
    etag = etag.endsWith('"') ? `${etag.slice(0, -1)}-r"` : `"${etag.replace(/"/g, "")}-r"`;
  }

  const byVin = new Map<string, Vehicle>();
  const fuelTypeKeys: (string | undefined)[] = new Array(vehicles.length);
  const positions = new Array<Vehicle["position"]>(vehicles.length);
  for (let i = 0; i < vehicles.length; i++) {
    const veh = vehicles[i] as Vehicle;
    byVin.set(veh.vin, veh);
    fuelTypeKeys[i] = veh.fuelType?.toUpperCase();
    positions[i] = veh.position;
  }
  return {
    vehicles,
    byVin,
    index: new SpatialIndex(positions),
    fetchedAt: envelope.fetchedAt,
    etag,
    body,
    dropped,
    fuelTypeKeys,
    itemJson: new Array(vehicles.length),
  };
}

/** The non-spatial filters of `q` as one predicate over snapshot positions (undefined: none). */
function attributeFilter(s: Snapshot, q: VehicleQuery): ((i: number) => boolean) | undefined {
  const tests: ((i: number) => boolean)[] = [];
  const { vehicles } = s;
  if (q.bbox && q.near) {
    // Both given: the index answers `near`, the box is checked here with the same test as the index's.
    const { minLon, minLat, maxLon, maxLat } = q.bbox;
    tests.push((i) => {
      const p = (vehicles[i] as Vehicle).position;
      return p.latitude >= minLat && p.latitude <= maxLat && p.longitude >= minLon && p.longitude <= maxLon;
    });
  }
  if (q.fuelTypes) {
    const wanted = new Set(q.fuelTypes);
    tests.push((i) => {
      const f = s.fuelTypeKeys[i];
      return f !== undefined && wanted.has(f);
    });
  }
  if (q.minFuelLevel !== undefined) {
    const min = q.minFuelLevel;
    tests.push((i) => {
      const level = (vehicles[i] as Vehicle).fuelLevel;
      return level !== undefined && level >= min;
    });
  }
  if (q.transmission) {
    const t = q.transmission;
    tests.push((i) => (vehicles[i] as Vehicle).transmissionType === t);
  }
  if (q.seats) {
    const seats = new Set(q.seats);
    tests.push((i) => {
      const n = (vehicles[i] as Vehicle).numberOfSeats;
      return n !== undefined && seats.has(n);
    });
  }
  if (tests.length === 0) return undefined;
  if (tests.length === 1) return tests[0];
  return (i) => tests.every((t) => t(i));
}

/**
 * Applies every filter of `q`, then `limit`. With `near`: sorted by distance ascending, ties by
 * VIN, each vehicle with `distanceM` rounded to 1 m. Otherwise: snapshot order (VIN ascending).
 * The unfiltered, unlimited answer is `snapshot.vehicles` itself, which `serializeVehicles`
 * recognizes to splice the stored JSON.
 */
export function queryVehicles(snapshot: Snapshot, q: VehicleQuery): QueryResult {
  const all = snapshot.vehicles;
  if (!hasFilters(q)) {
    if (q.limit >= all.length) return { vehicles: all, total: all.length };
    return {
      vehicles: all.slice(0, q.limit),
      total: all.length,
      indices: Array.from({ length: q.limit }, (_, i) => i),
    };
  }
  const keep = attributeFilter(snapshot, q);

  if (q.near) {
    const { ids, distances } = snapshot.index.near(q.near.lat, q.near.lon, q.near.radiusM);
    const hits: { i: number; d: number }[] = [];
    for (let k = 0; k < ids.length; k++) {
      const i = ids[k] as number;
      if (!keep || keep(i)) hits.push({ i, d: distances[k] as number });
    }
    hits.sort((a, b) => a.d - b.d || compareVin(all[a.i] as Vehicle, all[b.i] as Vehicle));
    const n = Math.min(q.limit, hits.length);
    const out: VehicleWithDistance[] = new Array(n);
    const indices: number[] = new Array(n);
    for (let k = 0; k < n; k++) {
      const h = hits[k] as { i: number; d: number };
      // A served vehicle is already allow-listed: copying it here cannot bring a secret back.
      out[k] = { ...(all[h.i] as Vehicle), distanceM: Math.round(h.d) };
      indices[k] = h.i;
    }
    return { vehicles: out, total: hits.length, indices };
  }

  const out: Vehicle[] = [];
  const indices: number[] = [];
  let total = 0;
  const take = (i: number): void => {
    if (keep && !keep(i)) return;
    total++;
    if (out.length < q.limit) {
      out.push(all[i] as Vehicle);
      indices.push(i);
    }
  };
  if (q.bbox) {
    for (const i of snapshot.index.within(q.bbox)) take(i);
  } else {
    for (let i = 0; i < all.length; i++) take(i);
  }
  return { vehicles: out, total, indices };
}

const compareVin = (a: Vehicle, b: Vehicle): number => (a.vin < b.vin ? -1 : a.vin > b.vin ? 1 : 0);

/** The JSON text of `snapshot.vehicles[i]`, memoized. */
function itemText(snapshot: Snapshot, i: number): string {
  let t = snapshot.itemJson[i];
  if (t === undefined) {
    t = JSON.stringify(snapshot.vehicles[i]);
    snapshot.itemJson[i] = t;
  }
  return t;
}

/** The JSON text of the answer's array. */
function listText(snapshot: Snapshot, result: QueryResult): string {
  // The full list: the stored text as it is.
  if (result.vehicles === snapshot.vehicles) return snapshot.body;
  const { indices, vehicles } = result;
  if (!indices || indices.length !== vehicles.length) return JSON.stringify(vehicles);
  const parts: string[] = new Array(vehicles.length);
  for (let k = 0; k < vehicles.length; k++) {
    const text = itemText(snapshot, indices[k] as number);
    const d = (vehicles[k] as Partial<VehicleWithDistance>).distanceM;
    // `distanceM` goes last, as JSON.stringify of `{ ...vehicle, distanceM }` would put it.
    parts[k] = d === undefined ? text : `${text.slice(0, -1)},"distanceM":${JSON.stringify(d)}}`;
  }
  return `[${parts.join(",")}]`;
}

/**
 * The JSON body of `GET /v1/vehicles`: `{ vehicles, count, total, fetchedAt, stale }`. The full
 * list (`result.vehicles === snapshot.vehicles`) splices the stored JSON text of the array into
 * the wrapper instead of stringifying thousands of objects again; other answers join the
 * memoized JSON text of their vehicles.
 */
export function serializeVehicles(
  snapshot: Snapshot,
  result: QueryResult,
  // `query` is accepted but not needed: the full list is recognized by identity.
  opts: { stale: boolean; query?: VehicleQuery },
): string {
  return listBody(listText(snapshot, result), result.vehicles.length, result.total, snapshot.fetchedAt, opts.stale);
}

function listBody(list: string, count: number, total: number, fetchedAt: number, stale: boolean): string {
  return (
    `{"vehicles":${list},"count":${count},"total":${total},` +
    `"fetchedAt":"${new Date(fetchedAt).toISOString()}","stale":${stale ? "true" : "false"}}`
  );
}

/**
 * The unfiltered, unlimited `GET /v1/vehicles` body straight from stored text (an L2 hit, not
 * parsed): byte for byte what `serializeVehicles` gives for the full list of the same snapshot.
 * `envelope.body` must be checked, allow-listed text (Served.envelope) and `count` its length.
 */
export function serializeFullList(envelope: SnapshotEnvelope, opts: { stale: boolean }): string {
  return listBody(envelope.body, envelope.count, envelope.count, envelope.fetchedAt, opts.stale);
}

/** The JSON body of `GET /v1/vehicles/{vin}`: `{ vehicle, fetchedAt, stale }`. */
export function serializeVehicle(snapshot: Snapshot, vehicle: Vehicle, opts: { stale: boolean }): string {
  return JSON.stringify({ vehicle, fetchedAt: new Date(snapshot.fetchedAt).toISOString(), stale: opts.stale });
}
