/**
 * The vehicle, defined once: the allow-list we validate partner items against, the shape we
 * cache and serve, and the source of the OpenAPI `Vehicle` schema. Redaction happens here,
 * before anything is cached: output objects are built by valibot from `VehicleSchema`'s
 * entries, never spread from partner input, so `fuelCardPin` (and any field the partner adds
 * later) cannot reach a cache or a client.
 */
import * as v from "valibot";
import { AppError } from "../errors.ts";
import { compileSchema } from "./compiled-schema.ts";

/**
 * ISO 3779 VIN: 17 characters, letters I, O and Q excluded (they read as 1 and 0).
 * Served upper case; partner input and path parameters are upper-cased before this check.
 */
export const VIN_PATTERN = /^[A-HJ-NPR-Z0-9]{17}$/;

/**
 * VIN order, the one order of the fleet: snapshots are sorted by it, and the prepared snapshot's
 * binary search (`firstAfterVin`, `findVin`) and the `cursor` rely on it. Plain code-unit order:
 * VINs are ASCII, so it is also the byte order of the VINs in the prepared text.
 */
function compareVin(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The served VIN schema (also used for the `{vin}` path parameter). */
const VinSchema = v.pipe(
  v.string(),
  v.regex(VIN_PATTERN),
  v.description("Vehicle identification number: 17 characters of [A-HJ-NPR-Z0-9], upper case."),
  v.examples(["WME4533911K123456"]),
);

const text = (max: number, description: string) =>
  v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(max), v.description(description)));

/** Transmission codes as the partner sends them: `GA` automatic, `GM` manual. */
export const TRANSMISSION_TYPES = ["GA", "GM"] as const;
export type TransmissionType = (typeof TRANSMISSION_TYPES)[number];

/** A WGS 84 latitude in degrees: finite, in [-90, 90] (a vehicle's position, the `bbox` and `near` filters). */
export const LatitudeSchema = v.pipe(v.number(), v.finite(), v.minValue(-90), v.maxValue(90));
/** A WGS 84 longitude in degrees: finite, in [-180, 180]. */
export const LongitudeSchema = v.pipe(v.number(), v.finite(), v.minValue(-180), v.maxValue(180));

/** WGS 84 position. Both coordinates are required and finite (a vehicle without one cannot be indexed). */
const PositionSchema = v.object({
  latitude: v.pipe(LatitudeSchema, v.description("Degrees north, WGS 84.")),
  longitude: v.pipe(LongitudeSchema, v.description("Degrees east, WGS 84.")),
});

/**
 * The served vehicle: the allow-list. `v.object` builds a new object holding only these
 * entries, so unknown partner fields (and the secret `fuelCardPin`, deliberately absent here)
 * are dropped. Optional fields are omitted when the partner sends them missing, null or empty.
 */
export const VehicleSchema = v.pipe(
  v.object({
    vin: VinSchema,
    numberPlate: text(32, "Licence plate as printed."),
    vehicleName: text(200, "Model name, e.g. `MINI Cooper`."),
    position: PositionSchema,
    fuelType: text(32, "Fuel type as the partner names it, e.g. `GASOLINE`, `DIESEL`, `ELECTRIC`."),
    fuelLevel: v.optional(
      v.pipe(v.number(), v.finite(), v.minValue(0), v.maxValue(100), v.description("Fuel or charge level, percent.")),
    ),
    imageUrl: v.optional(
      v.pipe(
        v.string(),
        v.maxLength(2048),
        v.url(),
        v.regex(/^[Hh][Tt][Tt][Pp][Ss]?:\/\//),
        v.description("Picture of the model (http or https)."),
      ),
    ),
    buildSeries: text(64, "Build series code."),
    primaryColor: text(64, "Main colour."),
    secondaryColor: text(64, "Second colour."),
    numberOfSeats: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(20), v.description("Seats."))),
    transmissionType: v.optional(v.pipe(v.picklist(TRANSMISSION_TYPES), v.description("`GA` automatic, `GM` manual."))),
    charging: v.optional(v.pipe(v.boolean(), v.description("Whether an electric vehicle is charging."))),
    chargingCablePlugged: v.optional(v.pipe(v.boolean(), v.description("Whether a charging cable is plugged in."))),
  }),
  v.title("Vehicle"),
  v.description("A rentable vehicle. Secret partner fields (such as the fuel card PIN) are never served."),
);

/** A served (redacted, validated) vehicle. */
export type Vehicle = v.InferOutput<typeof VehicleSchema>;

/** `v.safeParse(VehicleSchema, …)` as closures (compiled-schema.ts): its output, or undefined. */
const parseVehicle = compileSchema(VehicleSchema);

/** The allow-list, in serialization order. */
export const VEHICLE_FIELDS: readonly (keyof Vehicle)[] = Object.keys(VehicleSchema.entries) as (keyof Vehicle)[];

/** The body of `GET /v1/vehicles`. */
export const VehicleListSchema = v.pipe(
  v.object({
    vehicles: v.array(
      v.intersect([
        VehicleSchema,
        v.object({
          distanceM: v.optional(
            v.pipe(
              v.number(),
              v.integer(),
              v.minValue(0),
              v.description("Distance from `near`, metres; present only with `near`."),
            ),
          ),
        }),
      ]),
    ),
    count: v.pipe(v.number(), v.integer(), v.minValue(0), v.description("Vehicles in this answer.")),
    total: v.pipe(
      v.number(),
      v.integer(),
      v.minValue(0),
      v.description("Vehicles matching the filters before `limit`."),
    ),
    fetchedAt: v.pipe(v.string(), v.isoTimestamp(), v.description("When the partner API produced this data.")),
    stale: v.pipe(v.boolean(), v.description("True when served past freshness (the partner is slow or failing).")),
    next: v.optional(
      v.pipe(
        v.string(),
        v.description(
          'The next page (a URL reference, the same as the `Link: rel="next"` header); present only while more vehicles match.',
        ),
      ),
    ),
  }),
  v.title("VehicleList"),
);

/** The body of `GET /v1/vehicles/{vin}`. */
export const VehicleResponseSchema = v.pipe(
  v.object({
    vehicle: VehicleSchema,
    fetchedAt: v.pipe(v.string(), v.isoTimestamp(), v.description("When the partner API produced this data.")),
    stale: v.pipe(v.boolean(), v.description("True when served past freshness.")),
  }),
  v.title("VehicleResponse"),
);

// Fields whose partner value we upper-case before validation: VINs and codes are
// case-insensitive by nature, and a sloppy partner must not make a vehicle vanish.
const UPPER_CASE_FIELDS: ReadonlySet<string> = new Set(["vin", "transmissionType"]);

/**
 * The tolerant half of validation: copies only allow-listed fields, drops null, undefined and
 * blank strings (so they are omitted, not rejected), trims strings, upper-cases codes.
 * Everything else is left to `VehicleSchema` unchanged.
 */
function candidate(item: unknown): Record<string, unknown> | undefined {
  if (item === null || typeof item !== "object" || Array.isArray(item)) return undefined;
  const src = item as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of VEHICLE_FIELDS) {
    if (!Object.hasOwn(src, key)) continue;
    let value = src[key];
    if (typeof value === "string") {
      value = value.trim();
      if (value === "") continue;
      if (UPPER_CASE_FIELDS.has(key)) value = (value as string).toUpperCase();
    }
    if (value === null || value === undefined) continue;
    out[key] = value;
  }
  return out;
}

/**
 * Validates and redacts partner items. A malformed item (no valid VIN or position, or a
 * present field out of its range) is dropped and counted, as is a repeated VIN (the first
 * wins). The result is sorted by VIN: a stable order independent of the partner's, which
 * keeps ETags stable and makes the served order the same for every query.
 * Throws `partner_response_invalid` when there are more than `maxItems` items.
 */
export function redactVehicles(items: unknown[], maxItems: number): { vehicles: Vehicle[]; dropped: number } {
  if (items.length > maxItems) {
    throw new AppError("partner_response_invalid", { detail: `more than ${maxItems} vehicles` });
  }
  const vehicles: Vehicle[] = [];
  const seen = new Set<string>();
  let dropped = 0;
  for (const item of items) {
    let vehicle: Vehicle | undefined;
    try {
      const c = candidate(item);
      if (c) vehicle = parseVehicle(c);
    } catch {
      // An exotic item (a throwing getter) is just another malformed item.
    }
    if (!vehicle || seen.has(vehicle.vin)) {
      dropped++;
      continue;
    }
    seen.add(vehicle.vin);
    vehicles.push(vehicle);
  }
  vehicles.sort((a, b) => compareVin(a.vin, b.vin));
  return { vehicles, dropped };
}

/**
 * Parses the partner's vehicles body: a JSON array, or an object with a `vehicles` array.
 * Throws `partner_response_invalid` for anything else, for more than `maxItems` items, and
 * when every one of a non-empty list is malformed (a schema drift must not replace the last
 * good snapshot with an empty one).
 */
export function parsePartnerBody(text: string, maxItems: number): { vehicles: Vehicle[]; dropped: number } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new AppError("partner_response_invalid", { detail: "the vehicles body is not JSON", cause });
  }
  let items: unknown;
  if (Array.isArray(json)) items = json;
  else if (json !== null && typeof json === "object" && Object.hasOwn(json, "vehicles")) {
    items = (json as { vehicles: unknown }).vehicles;
  }
  if (!Array.isArray(items)) {
    throw new AppError("partner_response_invalid", { detail: "expected an array of vehicles" });
  }
  const result = redactVehicles(items, maxItems);
  if (items.length > 0 && result.vehicles.length === 0) {
    throw new AppError("partner_response_invalid", { detail: "every vehicle in the answer was malformed" });
  }
  return result;
}
