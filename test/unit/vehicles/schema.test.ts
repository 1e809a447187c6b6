import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { AppError } from "../../../src/errors.ts";
import { parseVehicleQuery } from "../../../src/vehicles/query.ts";
import { parsePartnerBody, redactVehicles, VEHICLE_FIELDS, VehicleSchema } from "../../../src/vehicles/schema.ts";

/** A complete partner item, secret and an unknown field included. */
function partnerItem(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    vin: "WME4533911K123456",
    numberPlate: "B-GO 1234",
    vehicleName: "MINI Cooper",
    position: { latitude: 52.52, longitude: 13.405, altitude: 34 },
    fuelType: "GASOLINE",
    fuelLevel: 76,
    fuelCardPin: "4711",
    imageUrl: "https://example.com/mini.png",
    buildSeries: "F56",
    primaryColor: "midnight black",
    secondaryColor: "white",
    numberOfSeats: 4,
    transmissionType: "GA",
    charging: false,
    chargingCablePlugged: false,
    internalFleetId: "x-99",
    ...overrides,
  };
}

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe(code);
    return;
  }
  throw new Error(`expected AppError ${code}`);
}

describe("VehicleSchema", () => {
  it("is the allow-list, and fuelCardPin is not on it", () => {
    expect(VEHICLE_FIELDS).not.toContain("fuelCardPin");
    expect([...VEHICLE_FIELDS].sort()).toEqual(
      [
        "vin",
        "numberPlate",
        "vehicleName",
        "position",
        "fuelType",
        "fuelLevel",
        "imageUrl",
        "buildSeries",
        "primaryColor",
        "secondaryColor",
        "numberOfSeats",
        "transmissionType",
        "charging",
        "chargingCablePlugged",
      ].sort(),
    );
  });
});

describe("redactVehicles", () => {
  it("drops fuelCardPin and unknown fields, at the top level and in position", () => {
    const { vehicles, dropped } = redactVehicles([partnerItem()], 10);
    expect(dropped).toBe(0);
    expect(vehicles).toHaveLength(1);
    const out = vehicles[0] as Record<string, unknown>;
    expect(out).not.toHaveProperty("fuelCardPin");
    expect(out).not.toHaveProperty("internalFleetId");
    expect(out.position).toEqual({ latitude: 52.52, longitude: 13.405 });
    expect(JSON.stringify(vehicles)).not.toContain("4711");
    expect(Object.keys(out).every((k) => (VEHICLE_FIELDS as readonly string[]).includes(k))).toBe(true);
  });

  it("builds new objects: mutating the input afterwards cannot reach the output", () => {
    const item = partnerItem();
    const { vehicles } = redactVehicles([item], 10);
    (item.position as Record<string, unknown>).fuelCardPin = "9876";
    item.vin = "changed";
    expect(vehicles[0]?.vin).toBe("WME4533911K123456");
    expect(JSON.stringify(vehicles)).not.toContain("9876");
  });

  it("keeps every allow-listed field with its value", () => {
    const { vehicles } = redactVehicles([partnerItem()], 10);
    expect(vehicles[0]).toEqual({
      vin: "WME4533911K123456",
      numberPlate: "B-GO 1234",
      vehicleName: "MINI Cooper",
      position: { latitude: 52.52, longitude: 13.405 },
      fuelType: "GASOLINE",
      fuelLevel: 76,
      imageUrl: "https://example.com/mini.png",
      buildSeries: "F56",
      primaryColor: "midnight black",
      secondaryColor: "white",
      numberOfSeats: 4,
      transmissionType: "GA",
      charging: false,
      chargingCablePlugged: false,
    });
  });

  it("omits optional fields that are missing, null or blank", () => {
    const item = partnerItem({
      secondaryColor: null,
      primaryColor: "  ",
      imageUrl: null,
      buildSeries: undefined,
      numberPlate: "",
      fuelLevel: null,
      transmissionType: null,
    });
    delete item.charging;
    const { vehicles, dropped } = redactVehicles([item], 10);
    expect(dropped).toBe(0);
    const out = vehicles[0] as Record<string, unknown>;
    for (const k of [
      "secondaryColor",
      "primaryColor",
      "imageUrl",
      "buildSeries",
      "numberPlate",
      "fuelLevel",
      "transmissionType",
      "charging",
    ]) {
      expect(out).not.toHaveProperty(k);
    }
    expect(v.is(VehicleSchema, out)).toBe(true);
  });

  it("accepts a minimal vehicle: vin and position", () => {
    const { vehicles } = redactVehicles([{ vin: "WME4533911K123456", position: { latitude: 0, longitude: 0 } }], 10);
    expect(vehicles).toEqual([{ vin: "WME4533911K123456", position: { latitude: 0, longitude: 0 } }]);
  });

  it("upper-cases VINs and transmission codes", () => {
    const { vehicles } = redactVehicles([partnerItem({ vin: " wme4533911k123456 ", transmissionType: "gm" })], 10);
    expect(vehicles[0]?.vin).toBe("WME4533911K123456");
    expect(vehicles[0]?.transmissionType).toBe("GM");
  });

  const malformed: [string, unknown][] = [
    ["not an object", "WME4533911K123456"],
    ["null", null],
    ["an array", [1, 2]],
    ["no vin", partnerItem({ vin: undefined })],
    ["vin with I", partnerItem({ vin: "WME4533911I123456" })],
    ["vin with O", partnerItem({ vin: "WME4533911O123456" })],
    ["vin too short", partnerItem({ vin: "WME4533911K12345" })],
    ["vin a number", partnerItem({ vin: 1234567890123456 })],
    ["no position", partnerItem({ position: undefined })],
    ["position null", partnerItem({ position: null })],
    ["latitude out of range", partnerItem({ position: { latitude: 90.5, longitude: 1 } })],
    ["longitude out of range", partnerItem({ position: { latitude: 1, longitude: -180.01 } })],
    ["latitude missing", partnerItem({ position: { longitude: 1 } })],
    ["latitude a string", partnerItem({ position: { latitude: "52.5", longitude: 13 } })],
    ["latitude NaN", partnerItem({ position: { latitude: Number.NaN, longitude: 13 } })],
    ["latitude Infinity", partnerItem({ position: { latitude: Number.POSITIVE_INFINITY, longitude: 13 } })],
    ["fuelLevel over 100", partnerItem({ fuelLevel: 101 })],
    ["fuelLevel negative", partnerItem({ fuelLevel: -1 })],
    ["fuelLevel a string", partnerItem({ fuelLevel: "50" })],
    ["numberOfSeats zero", partnerItem({ numberOfSeats: 0 })],
    ["numberOfSeats fractional", partnerItem({ numberOfSeats: 4.5 })],
    ["numberOfSeats huge", partnerItem({ numberOfSeats: 500 })],
    ["unknown transmission", partnerItem({ transmissionType: "XX" })],
    ["charging a string", partnerItem({ charging: "yes" })],
    ["imageUrl not http", partnerItem({ imageUrl: "javascript:alert(1)" })],
    ["numberPlate an object", partnerItem({ numberPlate: { fuelCardPin: "4711" } })],
  ];
  it.each(malformed)("drops and counts a malformed item: %s", (_name, item) => {
    const { vehicles, dropped } = redactVehicles([partnerItem({ vin: "WME4533911K000001" }), item], 10);
    expect(dropped).toBe(1);
    expect(vehicles.map((x) => x.vin)).toEqual(["WME4533911K000001"]);
  });

  it("drops an item whose getter throws", () => {
    const evil = {
      get vin(): string {
        throw new Error("boom");
      },
    };
    expect(redactVehicles([evil], 10)).toEqual({ vehicles: [], dropped: 1 });
  });

  it("keeps the first of a repeated VIN and counts the rest", () => {
    const { vehicles, dropped } = redactVehicles(
      [partnerItem({ numberPlate: "FIRST" }), partnerItem({ vin: "wme4533911k123456", numberPlate: "SECOND" })],
      10,
    );
    expect(dropped).toBe(1);
    expect(vehicles.map((x) => x.numberPlate)).toEqual(["FIRST"]);
  });

  it("sorts by VIN", () => {
    const vins = ["WME4533911K000003", "WME4533911K000001", "WME4533911K000002"];
    const { vehicles } = redactVehicles(
      vins.map((vin) => partnerItem({ vin })),
      10,
    );
    expect(vehicles.map((x) => x.vin)).toEqual([...vins].sort());
  });

  it("rejects more than maxItems", () => {
    expectCode(() => redactVehicles([partnerItem(), partnerItem()], 1), "partner_response_invalid");
  });
});

describe("parsePartnerBody", () => {
  it("accepts a JSON array", () => {
    const r = parsePartnerBody(JSON.stringify([partnerItem()]), 10);
    expect(r.vehicles).toHaveLength(1);
    expect(r.dropped).toBe(0);
  });

  it("accepts an object with a vehicles array", () => {
    const r = parsePartnerBody(JSON.stringify({ vehicles: [partnerItem(), { vin: "bad" }], page: 1 }), 10);
    expect(r.vehicles).toHaveLength(1);
    expect(r.dropped).toBe(1);
    expect(JSON.stringify(r.vehicles)).not.toContain("fuelCardPin");
  });

  it("accepts an empty fleet", () => {
    expect(parsePartnerBody("[]", 10)).toEqual({ vehicles: [], dropped: 0 });
  });

  it.each([
    ["not JSON", "<html>oops</html>"],
    ["truncated JSON", '[{"vin":'],
    ["a string", '"vehicles"'],
    ["null", "null"],
    ["a number", "42"],
    ["an object without vehicles", '{"items":[]}'],
    ["vehicles not an array", '{"vehicles":{}}'],
    ["every item malformed", '[{"vin":"x"},{"position":null}]'],
  ])("rejects %s as partner_response_invalid", (_name, text) => {
    expectCode(() => parsePartnerBody(text, 10), "partner_response_invalid");
  });

  it("rejects more than maxItems, in either shape", () => {
    const items = [partnerItem(), partnerItem({ vin: "WME4533911K000001" })];
    expectCode(() => parsePartnerBody(JSON.stringify(items), 1), "partner_response_invalid");
    expectCode(() => parsePartnerBody(JSON.stringify({ vehicles: items }), 1), "partner_response_invalid");
  });

  it("ignores a vehicles key inherited from nothing but JSON (no prototype tricks)", () => {
    expectCode(() => parsePartnerBody('{"__proto__":{"vehicles":[]}}', 10), "partner_response_invalid");
  });
});

// Issue 12, item 12: the partner's documentation now lives at docs.partner.free2move.com; its
// example values are mixed-case fuel types and colour codes rather than colour names.
describe("the values documented at docs.partner.free2move.com", () => {
  it('accepts fuelType "Gasoline" and colour codes such as "EN3U", served as given', () => {
    const { vehicles, dropped } = parsePartnerBody(
      JSON.stringify([partnerItem({ fuelType: "Gasoline", primaryColor: "EN3U", secondaryColor: "EN3U" })]),
      10,
    );
    expect(dropped).toBe(0);
    expect(vehicles[0]).toMatchObject({ fuelType: "Gasoline", primaryColor: "EN3U", secondaryColor: "EN3U" });
    expect(vehicles[0]).not.toHaveProperty("fuelCardPin");
  });

  it("a fuelType filter matches them in any case", () => {
    expect(parseVehicleQuery("fuelType=Gasoline", { maxLimit: 10 }).fuelTypes).toEqual(["GASOLINE"]);
    expect(parseVehicleQuery("fuelType=gasoline,ELECTRIC", { maxLimit: 10 }).fuelTypes).toEqual([
      "ELECTRIC",
      "GASOLINE",
    ]);
  });
});
