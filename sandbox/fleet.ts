/**
 * The sandbox fleet: a deterministic function of (seed, vehicle index, tick).
 *
 * Each vehicle has fixed traits (city, model, VIN, plate, PIN...) drawn from `rngFor(seed, i)`,
 * and a state (position, fuel, charging) that changes once per "window" of a few ticks, drawn
 * from `rngFor(seed, i, window)`. So two reads within one tick are byte-identical, a fleet of 10
 * is a prefix of a fleet of 2,000, and any vehicle can be recomputed without replaying history.
 */
import { intIn, mix, pick, pickWeighted, type Rng, rngFor } from "./prng.ts";

/** A vehicle exactly as the partner API serves it (every documented field, `fuelCardPin` included). */
export interface Vehicle {
  vin: string;
  numberPlate: string;
  vehicleName: string;
  position: { latitude: number; longitude: number };
  fuelType: FuelType;
  fuelLevel: number;
  fuelCardPin: string;
  imageUrl: string;
  buildSeries: string;
  primaryColor: string;
  secondaryColor: string;
  numberOfSeats: 2 | 4 | 5;
  transmissionType: "GA" | "GM";
  charging: boolean;
  chargingCablePlugged: boolean;
}

type FuelType = "GASOLINE" | "DIESEL" | "ELECTRIC";

/**
 * Every fuelCardPin starts with this marker, so a leak scan can grep any output for it
 * (a bare 4-digit PIN would drown in coordinates and plate numbers).
 */
export const PIN_MARKER = "sbxpin-";

type Country = "DE" | "NL" | "AT" | "IT" | "FR" | "ES" | "DK";

interface City {
  name: string;
  country: Country;
  latitude: number;
  longitude: number;
  /** Radius of the business area, km. */
  radiusKm: number;
  /** Share of the fleet. */
  weight: number;
  /** Registration district prefix, where the country has one. */
  district: string;
}

/** SHARE NOW cities with their centres; weights roughly follow fleet sizes. */
export const CITIES: readonly City[] = [
  { name: "Berlin", country: "DE", latitude: 52.52, longitude: 13.405, radiusKm: 9, weight: 18, district: "B" },
  { name: "Hamburg", country: "DE", latitude: 53.5511, longitude: 9.9937, radiusKm: 7, weight: 10, district: "HH" },
  { name: "Munich", country: "DE", latitude: 48.1374, longitude: 11.5755, radiusKm: 7, weight: 10, district: "M" },
  { name: "Cologne", country: "DE", latitude: 50.9375, longitude: 6.9603, radiusKm: 5, weight: 6, district: "K" },
  { name: "Frankfurt", country: "DE", latitude: 50.1109, longitude: 8.6821, radiusKm: 5, weight: 6, district: "F" },
  { name: "Amsterdam", country: "NL", latitude: 52.3676, longitude: 4.9041, radiusKm: 5, weight: 8, district: "" },
  { name: "Vienna", country: "AT", latitude: 48.2082, longitude: 16.3738, radiusKm: 6, weight: 8, district: "W" },
  { name: "Milan", country: "IT", latitude: 45.4642, longitude: 9.19, radiusKm: 6, weight: 10, district: "" },
  { name: "Rome", country: "IT", latitude: 41.9028, longitude: 12.4964, radiusKm: 7, weight: 8, district: "" },
  { name: "Paris", country: "FR", latitude: 48.8566, longitude: 2.3522, radiusKm: 6, weight: 8, district: "" },
  { name: "Madrid", country: "ES", latitude: 40.4168, longitude: -3.7038, radiusKm: 6, weight: 10, district: "" },
  { name: "Copenhagen", country: "DK", latitude: 55.6761, longitude: 12.5683, radiusKm: 5, weight: 4, district: "" },
];

interface Model {
  /** World manufacturer identifier, VIN positions 1-3. */
  wmi: string;
  /** Vehicle descriptor, VIN positions 4-8. */
  vds: string;
  name: string;
  buildSeries: string;
  slug: string;
  fuelType: FuelType;
  seats: 2 | 4 | 5;
  /** Share of manual gearboxes (ignored for electric cars, which are all automatic). */
  manualShare: number;
  primary: readonly string[];
  /** Contrast parts (smart tridion, MINI roof); absent: same as primary. */
  secondary?: readonly string[];
  weight: number;
  /** Countries where the model runs; absent: everywhere. */
  where?: readonly Country[];
}

const MODELS: readonly Model[] = [
  {
    wmi: "WME",
    vds: "45339",
    name: "smart EQ fortwo",
    buildSeries: "C453",
    slug: "smart-eq-fortwo",
    fuelType: "ELECTRIC",
    seats: 2,
    manualShare: 0,
    primary: ["WHITE", "BLACK", "SILVER", "BLUE"],
    secondary: ["BLACK", "SILVER", "WHITE"],
    weight: 14,
  },
  {
    wmi: "WME",
    vds: "45309",
    name: "smart EQ forfour",
    buildSeries: "W453",
    slug: "smart-eq-forfour",
    fuelType: "ELECTRIC",
    seats: 4,
    manualShare: 0,
    primary: ["WHITE", "BLACK", "BLUE"],
    secondary: ["BLACK", "SILVER"],
    weight: 6,
  },
  {
    wmi: "WDD",
    vds: "17708",
    name: "Mercedes-Benz A-Class",
    buildSeries: "W177",
    slug: "mercedes-a-class",
    fuelType: "GASOLINE",
    seats: 5,
    manualShare: 0,
    primary: ["WHITE", "BLACK", "GREY", "SILVER"],
    weight: 10,
  },
  {
    wmi: "WDD",
    vds: "11834",
    name: "Mercedes-Benz CLA",
    buildSeries: "C118",
    slug: "mercedes-cla",
    fuelType: "GASOLINE",
    seats: 5,
    manualShare: 0,
    primary: ["WHITE", "BLACK", "GREY"],
    weight: 6,
  },
  {
    wmi: "WDD",
    vds: "24708",
    name: "Mercedes-Benz B-Class",
    buildSeries: "W247",
    slug: "mercedes-b-class",
    fuelType: "DIESEL",
    seats: 5,
    manualShare: 0,
    primary: ["WHITE", "SILVER", "BLACK"],
    weight: 4,
  },
  {
    wmi: "W1N",
    vds: "24774",
    name: "Mercedes-Benz GLA",
    buildSeries: "H247",
    slug: "mercedes-gla",
    fuelType: "DIESEL",
    seats: 5,
    manualShare: 0,
    primary: ["WHITE", "BLACK", "GREY"],
    weight: 5,
  },
  {
    wmi: "WBA",
    vds: "7K310",
    name: "BMW 1 Series",
    buildSeries: "F40",
    slug: "bmw-1-series",
    fuelType: "GASOLINE",
    seats: 5,
    manualShare: 0.2,
    primary: ["WHITE", "BLACK", "BLUE", "GREY"],
    weight: 10,
  },
  {
    wmi: "WBA",
    vds: "JG710",
    name: "BMW X1",
    buildSeries: "F48",
    slug: "bmw-x1",
    fuelType: "GASOLINE",
    seats: 5,
    manualShare: 0,
    primary: ["WHITE", "BLACK", "GREY"],
    weight: 6,
  },
  {
    wmi: "WBY",
    vds: "8P210",
    name: "BMW i3",
    buildSeries: "I01",
    slug: "bmw-i3",
    fuelType: "ELECTRIC",
    seats: 4,
    manualShare: 0,
    primary: ["WHITE", "GREY", "BLACK"],
    secondary: ["BLACK", "BLUE"],
    weight: 8,
  },
  {
    wmi: "WMW",
    vds: "XR310",
    name: "MINI Cooper",
    buildSeries: "F56",
    slug: "mini-cooper",
    fuelType: "GASOLINE",
    seats: 4,
    manualShare: 0.4,
    primary: ["WHITE", "BLACK", "RED", "GREEN"],
    secondary: ["BLACK", "WHITE", "SILVER"],
    weight: 8,
  },
  {
    wmi: "WMW",
    vds: "XP310",
    name: "MINI Cooper SE",
    buildSeries: "F56",
    slug: "mini-cooper-se",
    fuelType: "ELECTRIC",
    seats: 4,
    manualShare: 0,
    primary: ["WHITE", "SILVER", "BLACK"],
    secondary: ["YELLOW", "BLACK"],
    weight: 5,
  },
  {
    wmi: "ZFA",
    vds: "31200",
    name: "Fiat 500",
    buildSeries: "312",
    slug: "fiat-500",
    fuelType: "GASOLINE",
    seats: 4,
    manualShare: 0.8,
    primary: ["WHITE", "RED", "BLUE", "GREY"],
    weight: 12,
    where: ["IT", "FR", "ES"],
  },
  {
    wmi: "ZFA",
    vds: "33200",
    name: "Fiat 500e",
    buildSeries: "332",
    slug: "fiat-500e",
    fuelType: "ELECTRIC",
    seats: 4,
    manualShare: 0,
    primary: ["WHITE", "GREEN", "BLACK"],
    weight: 8,
    where: ["IT", "FR", "ES", "NL"],
  },
  {
    wmi: "VR3",
    vds: "UHZKX",
    name: "Peugeot e-208",
    buildSeries: "P21",
    slug: "peugeot-e-208",
    fuelType: "ELECTRIC",
    seats: 5,
    manualShare: 0,
    primary: ["WHITE", "BLUE", "GREY"],
    weight: 6,
    where: ["FR", "ES", "IT", "NL"],
  },
];

/** VIN characters: ISO 3779 leaves out I, O and Q (they read like 1 and 0). */
export const VIN_CHARSET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";
const VIN_RE = /^[A-HJ-NPR-Z0-9]{17}$/;
const VIN_VALUES: Record<string, number> = {};
for (const [i, c] of [..."ABCDEFGH"].entries()) VIN_VALUES[c] = i + 1;
for (const [i, c] of [..."JKLMN"].entries()) VIN_VALUES[c] = i + 1;
VIN_VALUES.P = 7;
VIN_VALUES.R = 9;
for (const [i, c] of [..."STUVWXYZ"].entries()) VIN_VALUES[c] = i + 2;
for (let d = 0; d <= 9; d++) VIN_VALUES[String(d)] = d;
const VIN_WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];

/** The position-9 check digit (ISO 3779 / 49 CFR 565 weighting; Europe does not require it, it does no harm). */
function vinCheckDigit(vin: string): string {
  let sum = 0;
  for (let i = 0; i < 17; i++) sum += (VIN_VALUES[vin[i] as string] ?? 0) * (VIN_WEIGHTS[i] as number);
  const r = sum % 11;
  return r === 10 ? "X" : String(r);
}

/** True for a 17-character VIN in the valid charset whose check digit matches. */
export function isValidVin(vin: string): boolean {
  return VIN_RE.test(vin) && vin[8] === vinCheckDigit(vin);
}

const LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ";
const CONSONANTS = "BCDFGHJKLMNPRSTVWXYZ";
const IT_LETTERS = "ABCDEFGHJKLMNPRSTVWXYZ";

function chars(rng: Rng, alphabet: string, n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(rng() * alphabet.length)];
  return s;
}

function digits(rng: Rng, n: number): string {
  return chars(rng, "0123456789", n);
}

/** A plate in the local format (shapes only; nothing here is a real registration). */
function numberPlate(rng: Rng, city: City, electric: boolean): string {
  switch (city.country) {
    case "DE":
      // German e-plates end in E (Elektromobilitätsgesetz).
      return `${city.district}-${chars(rng, LETTERS, intIn(rng, 1, 2))} ${intIn(rng, 1, 9999)}${electric ? "E" : ""}`;
    case "NL":
      return `${chars(rng, CONSONANTS, 2)}-${digits(rng, 3)}-${chars(rng, CONSONANTS, 1)}`;
    case "AT":
      return `${city.district}-${intIn(rng, 100, 99999)}${chars(rng, LETTERS, 1)}`;
    case "IT":
      return `${chars(rng, IT_LETTERS, 2)}${digits(rng, 3)}${chars(rng, IT_LETTERS, 2)}`;
    case "FR":
      return `${chars(rng, LETTERS, 2)}-${digits(rng, 3)}-${chars(rng, LETTERS, 2)}`;
    case "ES":
      return `${digits(rng, 4)} ${chars(rng, CONSONANTS, 3)}`;
    case "DK":
      return `${chars(rng, LETTERS, 2)} ${digits(rng, 2)} ${digits(rng, 3)}`;
  }
}

/** Fixed traits of one vehicle plus what drives its state over time. */
interface Traits {
  vehicle: Omit<Vehicle, "position" | "fuelLevel" | "charging" | "chargingCablePlugged">;
  homeLat: number;
  homeLon: number;
  /** Ticks per window: the state changes once per window. */
  period: number;
  phase: number;
  fuel0: number;
  drain: number;
}

const KM_PER_DEG_LAT = 111.32;
/** Salt that separates the per-window stream from the per-vehicle one. */
const WINDOW_SALT = 0x5eed;
/** Fuel runs down from 100 to 100 - FUEL_SPAN + 1, then the car is refuelled. */
const FUEL_SPAN = 95;

function offsetKm(lat: number, lon: number, km: number, angle: number): [number, number] {
  const dLat = (km * Math.cos(angle)) / KM_PER_DEG_LAT;
  const dLon = (km * Math.sin(angle)) / (KM_PER_DEG_LAT * Math.cos((lat * Math.PI) / 180));
  return [lat + dLat, lon + dLon];
}

const round6 = (x: number): number => Math.round(x * 1e6) / 1e6;

function traitsOf(seed: number, i: number): Traits {
  const rng = rngFor(seed, i);
  const city = pickWeighted(rng, CITIES);
  const model = pickWeighted(
    rng,
    MODELS.filter((m) => !m.where || m.where.includes(city.country)),
  );
  // Denser towards the centre, like real demand.
  const [homeLat, homeLon] = offsetKm(
    city.latitude,
    city.longitude,
    city.radiusKm * rng() ** 0.75,
    rng() * 2 * Math.PI,
  );
  // (i * 7919 + offset) mod 10^6 is a bijection (7919 is coprime with 10^6): serials, hence VINs, are unique.
  const serial = String((i * 7919 + (mix(seed) % 1_000_000)) % 1_000_000).padStart(6, "0");
  const draft = `${model.wmi}${model.vds}0${pick(rng, [..."LMNPR"])}${pick(rng, [...VIN_CHARSET])}${serial}`;
  const vin = `${draft.slice(0, 8)}${vinCheckDigit(draft)}${draft.slice(9)}`;
  const electric = model.fuelType === "ELECTRIC";
  const primaryColor = pick(rng, model.primary);
  const secondaryColor = model.secondary ? pick(rng, model.secondary) : primaryColor;
  const manual = !electric && rng() < model.manualShare;
  const plate = numberPlate(rng, city, electric);
  const pin = String(intIn(rng, 0, 9999)).padStart(4, "0");
  const period = intIn(rng, 3, 12);
  return {
    vehicle: {
      vin,
      numberPlate: plate,
      vehicleName: model.name,
      fuelType: model.fuelType,
      // The serial makes every PIN unique, so a leak scan can name the vehicle it came from.
      fuelCardPin: `${PIN_MARKER}${pin}-${serial}`,
      imageUrl: `https://assets.sandbox.invalid/vehicles/${model.slug}/${primaryColor.toLowerCase()}.png`,
      buildSeries: model.buildSeries,
      primaryColor,
      secondaryColor,
      numberOfSeats: model.seats,
      transmissionType: manual ? "GM" : "GA",
    },
    homeLat,
    homeLon,
    period,
    phase: intIn(rng, 0, period - 1),
    fuel0: intIn(rng, 100 - FUEL_SPAN + 1, 100),
    drain: intIn(rng, 1, 5),
  };
}

function vehicleAt(seed: number, index: number, t: Traits, tick: number): Vehicle {
  const window = Math.floor((tick + t.phase) / t.period);
  const rng = rngFor(seed, index, window, WINDOW_SALT);
  // Parked within a few hundred metres of home: it moves, but never leaves its city.
  const [lat, lon] = offsetKm(t.homeLat, t.homeLon, 0.4 * rng(), rng() * 2 * Math.PI);
  const used = (100 - t.fuel0 + t.drain * window) % FUEL_SPAN;
  const fuelLevel = 100 - used;
  const electric = t.vehicle.fuelType === "ELECTRIC";
  const charging = electric && fuelLevel < 50 && rng() < 0.3;
  const chargingCablePlugged = charging || (electric && rng() < 0.05);
  const v = t.vehicle;
  // Key order follows the documented field order.
  return {
    vin: v.vin,
    numberPlate: v.numberPlate,
    vehicleName: v.vehicleName,
    position: { latitude: round6(lat), longitude: round6(lon) },
    fuelType: v.fuelType,
    fuelLevel,
    fuelCardPin: v.fuelCardPin,
    imageUrl: v.imageUrl,
    buildSeries: v.buildSeries,
    primaryColor: v.primaryColor,
    secondaryColor: v.secondaryColor,
    numberOfSeats: v.numberOfSeats,
    transmissionType: v.transmissionType,
    charging,
    chargingCablePlugged,
  };
}

/** A deterministic fleet; see the module comment. */
export interface Fleet {
  readonly seed: number;
  readonly size: number;
  /** Fresh vehicle objects at `tick` (callers may mutate them). */
  at(tick: number): Vehicle[];
  /** The JSON body served at `tick` (cached for the last tick asked). */
  body(tick: number): Buffer;
  /** Every fuelCardPin, in fleet order. */
  pins(): string[];
}

/** Builds the fixed traits once (a few ms for 2,000 vehicles); states are computed per tick. */
export function createFleet(seed: number, size: number): Fleet {
  const traits = Array.from({ length: size }, (_, i) => traitsOf(seed, i));
  const at = (tick: number): Vehicle[] => traits.map((t, i) => vehicleAt(seed, i, t, tick));
  let cached: { tick: number; body: Buffer } | undefined;
  return {
    seed,
    size,
    at,
    body(tick) {
      if (cached?.tick !== tick) cached = { tick, body: Buffer.from(JSON.stringify(at(tick))) };
      return cached.body;
    },
    pins: () => traits.map((t) => t.vehicle.fuelCardPin),
  };
}
