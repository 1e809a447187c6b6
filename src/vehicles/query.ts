/**
 * The query of `GET /v1/vehicles`, defined once: a table of parameters (name, valibot schema,
 * description). The parser validates with these schemas and the OpenAPI document is generated
 * from them (`toJsonSchema` in output mode describes each parameter's parsed value; lists are
 * documented as `style: form, explode: false` arrays, which is exactly `a,b,c` on the wire).
 */
import * as v from "valibot";
import { AppError } from "../errors.ts";
import { LatitudeSchema, LongitudeSchema, TRANSMISSION_TYPES, type TransmissionType, VIN_PATTERN } from "./schema.ts";
import type { BBox } from "./spatial-index.ts";

/** Longest query string (without `?`) we parse; longer: 414 `query_too_large`. */
export const MAX_QUERY_LENGTH = 2048;
/** Radius used when `near` comes without `radius`, metres. */
export const DEFAULT_RADIUS_M = 1000;
/** Largest `radius`, metres. */
export const MAX_RADIUS_M = 50_000;
/** Most entries in a comma list (`fuelType`, `seats`). */
const MAX_LIST_ITEMS = 16;

/** A parsed, normalized vehicles query. Lists are upper-cased or numeric, deduplicated, sorted. */
export interface VehicleQuery {
  bbox?: BBox;
  near?: { lat: number; lon: number; radiusM: number };
  /** Upper case; a vehicle matches when its fuel type, upper-cased, is one of these. */
  fuelTypes?: readonly string[];
  minFuelLevel?: number;
  transmission?: TransmissionType;
  seats?: readonly number[];
  /** 1..maxLimit; maxLimit when absent. */
  limit: number;
  /** Pagination: only vehicles whose VIN sorts after this one (decoded from the opaque `cursor`). */
  after?: string;
}

// A plain decimal: no hex, exponents, `Infinity`, blanks or empty strings, which Number() would take.
const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;
const toNumbers = (s: string): number[] =>
  s.split(",").map((x) => {
    const t = x.trim();
    return DECIMAL.test(t) ? Number(t) : Number.NaN;
  });
const toList = (s: string): string[] => s.split(",").map((x) => x.trim());

const bboxSchema = v.pipe(
  v.string(),
  v.transform(toNumbers),
  v.strictTuple([LongitudeSchema, LatitudeSchema, LongitudeSchema, LatitudeSchema]),
  v.check(
    (b) => b[0] <= b[2] && b[1] <= b[3],
    "min must not exceed max (boxes across the antimeridian are not supported)",
  ),
  v.examples([[13.3, 52.45, 13.5, 52.55]]),
);

const nearSchema = v.pipe(
  v.string(),
  v.transform(toNumbers),
  v.strictTuple([LatitudeSchema, LongitudeSchema]),
  v.examples([[52.52, 13.405]]),
);

const radiusSchema = v.pipe(
  v.string(),
  v.regex(DECIMAL),
  v.transform(Number),
  v.number(),
  v.finite(),
  v.minValue(1),
  v.maxValue(MAX_RADIUS_M),
  v.examples([500]),
);

const fuelTypeSchema = v.pipe(
  v.string(),
  v.transform(toList),
  v.array(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,32}$/))),
  v.minLength(1),
  v.maxLength(MAX_LIST_ITEMS),
  v.examples([["ELECTRIC", "GASOLINE"]]),
);

const minFuelLevelSchema = v.pipe(
  v.string(),
  v.regex(DECIMAL),
  v.transform(Number),
  v.number(),
  v.finite(),
  v.minValue(0),
  v.maxValue(100),
);

/** Every spelling `transmission` accepts (in any case), and what it means. */
export const TRANSMISSION_ALIASES: Readonly<Record<string, TransmissionType>> = {
  ga: "GA",
  gm: "GM",
  automatic: "GA",
  manual: "GM",
};
const transmissionSchema = v.pipe(
  v.string(),
  v.transform((s) => TRANSMISSION_ALIASES[s.toLowerCase()] ?? s),
  v.picklist(TRANSMISSION_TYPES),
);

const seatsSchema = v.pipe(
  v.string(),
  v.transform((s) => toList(s).map((x) => (/^\d{1,2}$/.test(x) ? Number(x) : Number.NaN))),
  v.array(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(20))),
  v.minLength(1),
  v.maxLength(MAX_LIST_ITEMS),
  v.examples([[4, 5]]),
);

const limitSchema = (maxLimit: number) =>
  v.pipe(
    v.string(),
    v.regex(/^\d{1,7}$/),
    v.transform(Number),
    v.number(),
    v.integer(),
    v.minValue(1),
    v.maxValue(maxLimit),
  );

/**
 * The opaque `cursor` of a next page: base64url of `v1:` and the last VIN served. Opaque to clients
 * (they follow `next` or `Link: rel="next"`), and versioned so its meaning can change later.
 */
export function encodeCursor(lastVin: string): string {
  return btoa(`v1:${lastVin}`).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function decodeCursor(s: string): string {
  try {
    const text = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    return text.startsWith("v1:") ? text.slice(3) : "";
  } catch {
    return "";
  }
}

const cursorSchema = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9_-]{1,64}$/),
  v.transform(decodeCursor),
  v.regex(VIN_PATTERN),
  v.examples(["djE6V01FNDUzMzkxMUsxMjM0NTY"]),
);

/** One query parameter: its wire form is a string, `schema` parses it into its typed value. */
export interface QueryParameter<T> {
  name: string;
  schema: v.GenericSchema<string, T>;
  /** For the OpenAPI document. */
  description: string;
  /** The safe, static problem `detail` when the value is malformed. */
  expected: string;
  /** The parsed value is a list written `a,b,c` (OpenAPI `style: form, explode: false`). */
  list?: boolean;
  /** OpenAPI `default`, when there is one. */
  default?: unknown;
  /** Opaque to clients: documented by its wire form, not by what it decodes to. */
  opaque?: boolean;
}

const param = <T>(p: QueryParameter<T>): QueryParameter<T> => p;

function buildParameters(maxLimit: number) {
  return {
    bbox: param({
      name: "bbox",
      schema: bboxSchema,
      list: true,
      description:
        "Only vehicles inside this box: `minLon,minLat,maxLon,maxLat` in degrees (WGS 84), edges included. Boxes across the antimeridian are not supported.",
      expected:
        "bbox must be minLon,minLat,maxLon,maxLat: four decimal numbers, longitudes in [-180, 180], latitudes in [-90, 90], min <= max",
    }),
    near: param({
      name: "near",
      schema: nearSchema,
      list: true,
      description: `Only vehicles within \`radius\` of this point, \`lat,lon\` in degrees; sorted by distance (ties by VIN), each with \`distanceM\`.`,
      expected: "near must be lat,lon: two decimal numbers, latitude in [-90, 90], longitude in [-180, 180]",
    }),
    radius: param({
      name: "radius",
      schema: radiusSchema,
      default: DEFAULT_RADIUS_M,
      description: `Radius for \`near\`, metres (1 to ${MAX_RADIUS_M}); requires \`near\`. Default ${DEFAULT_RADIUS_M}.`,
      expected: `radius must be a number of metres from 1 to ${MAX_RADIUS_M}, and requires near`,
    }),
    fuelType: param({
      name: "fuelType",
      schema: fuelTypeSchema,
      list: true,
      description: `Only these fuel types (one, or a comma list of up to ${MAX_LIST_ITEMS}); case-insensitive.`,
      expected: `fuelType must be one or a comma list of up to ${MAX_LIST_ITEMS} fuel types (letters, digits, _ and -)`,
    }),
    minFuelLevel: param({
      name: "minFuelLevel",
      schema: minFuelLevelSchema,
      description:
        "Only vehicles whose fuel or charge level is at least this percentage (0 to 100). Vehicles without a level never match.",
      expected: "minFuelLevel must be a number from 0 to 100",
    }),
    transmission: param({
      name: "transmission",
      schema: transmissionSchema,
      description:
        "Only this transmission: `GA` (automatic) or `GM` (manual); `automatic` and `manual` are accepted too, in any case.",
      expected: "transmission must be GA, GM, automatic or manual",
    }),
    seats: param({
      name: "seats",
      schema: seatsSchema,
      list: true,
      description: "Only vehicles with exactly this number of seats (or any of a comma list).",
      expected: "seats must be a whole number from 1 to 20, or a comma list of them",
    }),
    limit: param({
      name: "limit",
      schema: limitSchema(maxLimit),
      default: maxLimit,
      description: `At most this many vehicles (1 to ${maxLimit}; default ${maxLimit}). \`total\` counts every match.`,
      expected: `limit must be a whole number from 1 to ${maxLimit}`,
    }),
    cursor: param({
      name: "cursor",
      schema: cursorSchema,
      opaque: true,
      description:
        'Opaque position of the next page, from `next` (or `Link: rel="next"`) of the previous page: vehicles in VIN order after the last one served. Not with `near`.',
      expected: "cursor must be the value given in next of a previous page (and cannot be combined with near)",
    }),
  } as const;
}

/** The query parameter table of `GET /v1/vehicles`, for a given `limit` bound. */
export type VehicleQueryParameters = ReturnType<typeof buildParameters>;

const tables = new Map<number, VehicleQueryParameters>();

/** The parameter table (memoized per `maxLimit`): the parser and the OpenAPI document both read it. */
export function vehicleQueryParameters(maxLimit: number): VehicleQueryParameters {
  let t = tables.get(maxLimit);
  if (!t) {
    t = buildParameters(maxLimit);
    tables.set(maxLimit, t);
  }
  return t;
}

// Names come from the client: capped so a problem document stays small.
const MAX_NAME_ECHO = 64;

function invalid(name: string, detail: string): AppError {
  return new AppError("invalid_parameter", { detail, extra: { parameter: name.slice(0, MAX_NAME_ECHO) } });
}

const uniqueSorted = <T extends string | number>(xs: readonly T[]): T[] =>
  [...new Set(xs)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

/**
 * Parses the query of `GET /v1/vehicles`. Pass the raw query string (with or without `?`) so
 * its length can be checked before any parsing. Throws `query_too_large` (414) past
 * MAX_QUERY_LENGTH and `invalid_parameter` (400, `parameter` naming it) for an unknown, repeated
 * or malformed parameter.
 */
export function parseVehicleQuery(search: string | URLSearchParams, opts: { maxLimit: number }): VehicleQuery {
  let params: URLSearchParams;
  if (typeof search === "string") {
    const raw = search.startsWith("?") ? search.slice(1) : search;
    // No query (the plain first page, the commonest request): the defaults, nothing to parse.
    if (raw === "") return { limit: opts.maxLimit };
    if (raw.length > MAX_QUERY_LENGTH) throw new AppError("query_too_large");
    params = new URLSearchParams(raw);
  } else {
    params = search;
    if (params.size > 0 && params.toString().length > MAX_QUERY_LENGTH) throw new AppError("query_too_large");
  }
  const table = vehicleQueryParameters(opts.maxLimit);
  const seen = new Set<string>();
  for (const name of params.keys()) {
    if (!Object.hasOwn(table, name)) throw invalid(name, "unknown parameter");
    // A repeated parameter is ambiguous (first? last? both?): refuse it rather than guess.
    if (seen.has(name)) throw invalid(name, `${name} is given more than once; use a comma list where one is allowed`);
    seen.add(name);
  }
  const get = <T>(p: QueryParameter<T>): T | undefined => {
    const raw = params.get(p.name);
    if (raw === null) return undefined;
    const r = v.safeParse(p.schema, raw, { abortEarly: true });
    if (!r.success) throw invalid(p.name, p.expected);
    return r.output;
  };

  const q: VehicleQuery = { limit: get(table.limit) ?? opts.maxLimit };
  const bbox = get(table.bbox);
  if (bbox) q.bbox = { minLon: bbox[0], minLat: bbox[1], maxLon: bbox[2], maxLat: bbox[3] };
  const near = get(table.near);
  const radius = get(table.radius);
  if (radius !== undefined && !near) throw invalid("radius", "radius requires near");
  if (near) q.near = { lat: near[0], lon: near[1], radiusM: radius ?? DEFAULT_RADIUS_M };
  const fuelTypes = get(table.fuelType);
  if (fuelTypes) q.fuelTypes = uniqueSorted(fuelTypes.map((s) => s.toUpperCase()));
  const minFuelLevel = get(table.minFuelLevel);
  if (minFuelLevel !== undefined) q.minFuelLevel = minFuelLevel;
  const transmission = get(table.transmission);
  if (transmission) q.transmission = transmission;
  const seats = get(table.seats);
  if (seats) q.seats = uniqueSorted(seats);
  const after = get(table.cursor);
  if (after !== undefined) {
    // `near` answers are ordered by distance, which moves with the fleet: no stable next page.
    if (q.near) throw invalid("cursor", table.cursor.expected);
    q.after = after;
  }
  return q;
}

/** True when the query selects every vehicle (it may still have a `limit`). */
export function hasFilters(q: VehicleQuery): boolean {
  return (
    q.bbox !== undefined ||
    q.near !== undefined ||
    q.fuelTypes !== undefined ||
    q.minFuelLevel !== undefined ||
    q.transmission !== undefined ||
    q.seats !== undefined
  );
}

/**
 * A canonical string for a parsed query: equal queries (whatever their parameter order,
 * case, list order, duplicates or spelled-out defaults) give equal keys. For ETags of
 * filtered responses, combined with the snapshot's ETag.
 */
export function canonicalQueryKey(q: VehicleQuery): string {
  const parts: string[] = [];
  if (q.bbox) parts.push(`bbox=${q.bbox.minLon},${q.bbox.minLat},${q.bbox.maxLon},${q.bbox.maxLat}`);
  if (q.fuelTypes) parts.push(`fuelType=${q.fuelTypes.join(",")}`);
  parts.push(`limit=${q.limit}`);
  if (q.minFuelLevel !== undefined) parts.push(`minFuelLevel=${q.minFuelLevel}`);
  if (q.near) parts.push(`near=${q.near.lat},${q.near.lon}`, `radius=${q.near.radiusM}`);
  if (q.seats) parts.push(`seats=${q.seats.join(",")}`);
  if (q.transmission) parts.push(`transmission=${q.transmission}`);
  if (q.after !== undefined) parts.push(`cursor=${encodeCursor(q.after)}`);
  return parts.join("&");
}

/** The `{vin}` path parameter of `GET /v1/vehicles/{vin}`: any case on the wire, upper case parsed. */
export const VIN_PARAMETER: QueryParameter<string> = {
  name: "vin",
  schema: v.pipe(
    v.string(),
    v.regex(/^[A-HJ-NPR-Za-hj-npr-z0-9]{17}$/),
    v.examples(["WME4533911K123456"]),
    v.transform((s) => s.toUpperCase()),
  ),
  description: "Vehicle identification number (17 characters; I, O and Q never occur). Case-insensitive.",
  expected: "a VIN is 17 characters of A-H, J-N, P, R-Z and 0-9",
};

/** Validates a VIN path segment; upper-cases it. Throws `invalid_vin` (400) when malformed. */
export function parseVin(s: string): string {
  const r = v.safeParse(VIN_PARAMETER.schema, s);
  if (!r.success || !VIN_PATTERN.test(r.output)) throw new AppError("invalid_vin", { detail: VIN_PARAMETER.expected });
  return r.output;
}
