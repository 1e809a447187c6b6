import { describe, expect, it } from "vitest";
import { CITIES, createFleet, isValidVin, PIN_MARKER, VIN_CHARSET } from "../../../sandbox/fleet.ts";

const FIELDS = [
  "vin",
  "numberPlate",
  "vehicleName",
  "position",
  "fuelType",
  "fuelLevel",
  "fuelCardPin",
  "imageUrl",
  "buildSeries",
  "primaryColor",
  "secondaryColor",
  "numberOfSeats",
  "transmissionType",
  "charging",
  "chargingCablePlugged",
];

/** Great-circle distance in km, to check positions stay in their city. */
function km(aLat: number, aLon: number, bLat: number, bLon: number): number {
  const rad = Math.PI / 180;
  const h =
    Math.sin(((bLat - aLat) * rad) / 2) ** 2 +
    Math.cos(aLat * rad) * Math.cos(bLat * rad) * Math.sin(((bLon - aLon) * rad) / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.sqrt(h));
}

describe("sandbox fleet", () => {
  const fleet = createFleet(1, 2000);
  const vehicles = fleet.at(0);

  it("has every documented field, in order, with valid values", () => {
    expect(vehicles).toHaveLength(2000);
    for (const v of vehicles) {
      expect(Object.keys(v)).toEqual(FIELDS);
      expect(isValidVin(v.vin)).toBe(true);
      expect([...v.vin].every((c) => VIN_CHARSET.includes(c))).toBe(true);
      expect(v.vin).not.toMatch(/[IOQ]/);
      expect(v.numberPlate).toMatch(/^[A-Z0-9 -]{5,12}$/);
      expect(v.vehicleName.length).toBeGreaterThan(0);
      expect(["GASOLINE", "DIESEL", "ELECTRIC"]).toContain(v.fuelType);
      expect(Number.isInteger(v.fuelLevel) && v.fuelLevel >= 0 && v.fuelLevel <= 100).toBe(true);
      expect(v.fuelCardPin).toMatch(new RegExp(`^${PIN_MARKER}\\d{4}-\\d{6}$`));
      expect(new URL(v.imageUrl).protocol).toBe("https:");
      expect(v.buildSeries.length).toBeGreaterThan(0);
      expect(v.primaryColor).toMatch(/^[A-Z]+$/);
      expect(v.secondaryColor).toMatch(/^[A-Z]+$/);
      expect([2, 4, 5]).toContain(v.numberOfSeats);
      expect(["GA", "GM"]).toContain(v.transmissionType);
      if (v.fuelType === "ELECTRIC") expect(v.transmissionType).toBe("GA");
      else expect(v.charging || v.chargingCablePlugged).toBe(false);
      if (v.charging) expect(v.chargingCablePlugged).toBe(true);
      const city = CITIES.find((c) => km(c.latitude, c.longitude, v.position.latitude, v.position.longitude) < 12);
      expect(city, `${v.vin} at ${JSON.stringify(v.position)}`).toBeDefined();
    }
  });

  it("has unique VINs and unique, marked PINs, listed by pins()", () => {
    expect(new Set(vehicles.map((v) => v.vin)).size).toBe(2000);
    const pins = fleet.pins();
    expect(new Set(pins).size).toBe(2000);
    expect(pins).toEqual(vehicles.map((v) => v.fuelCardPin));
  });

  it("spreads over the cities and mixes fuel types, seats and gearboxes", () => {
    const inCity = (name: string) => {
      const c = CITIES.find((x) => x.name === name)!;
      return vehicles.filter((v) => km(c.latitude, c.longitude, v.position.latitude, v.position.longitude) < 12).length;
    };
    for (const c of CITIES) expect(inCity(c.name), c.name).toBeGreaterThan(20);
    for (const key of ["fuelType", "numberOfSeats", "transmissionType", "charging"] as const) {
      expect(new Set(vehicles.map((v) => v[key])).size, key).toBeGreaterThan(1);
    }
  });

  it("is deterministic for a seed, differs across seeds, and a smaller fleet is a prefix", () => {
    expect(createFleet(1, 2000).body(0).equals(fleet.body(0))).toBe(true);
    expect(createFleet(2, 2000).at(0)[0]?.vin).not.toBe(vehicles[0]?.vin);
    expect(createFleet(1, 10).at(5)).toEqual(fleet.at(5).slice(0, 10));
  });

  it("moves vehicles a little and changes fuel over ticks, never within one", () => {
    expect(fleet.body(7).equals(fleet.body(7))).toBe(true);
    const later = fleet.at(30);
    let moved = 0;
    let refuelled = 0;
    for (const [i, v] of vehicles.entries()) {
      const w = later[i]!;
      expect(w.vin).toBe(v.vin);
      expect(w.fuelCardPin).toBe(v.fuelCardPin);
      const d = km(v.position.latitude, v.position.longitude, w.position.latitude, w.position.longitude);
      expect(d).toBeLessThan(1);
      if (d > 0) moved++;
      if (w.fuelLevel !== v.fuelLevel) refuelled++;
    }
    expect(moved).toBeGreaterThan(1500);
    expect(refuelled).toBeGreaterThan(1500);
    // Between consecutive ticks only a part of the fleet changes (each car has its own rhythm).
    const next = fleet.at(1);
    const changed = next.filter((v, i) => JSON.stringify(v) !== JSON.stringify(vehicles[i])).length;
    expect(changed).toBeGreaterThan(50);
    expect(changed).toBeLessThan(1500);
  });
});
