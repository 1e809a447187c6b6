import { describe, expect, it } from "vitest";
import { AppError } from "../../../src/errors.ts";
import {
  canonicalQueryKey,
  DEFAULT_RADIUS_M,
  hasFilters,
  MAX_QUERY_LENGTH,
  parseVehicleQuery,
  parseVin,
  vehicleQueryParameters,
} from "../../../src/vehicles/query.ts";

const MAX = 500;
const parse = (qs: string) => parseVehicleQuery(qs, { maxLimit: MAX });

function rejection(fn: () => unknown): AppError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }
  throw new Error("expected an AppError");
}

function expectInvalid(qs: string, parameter: string): void {
  const err = rejection(() => parse(qs));
  expect(err.code).toBe("invalid_parameter");
  expect(err.status).toBe(400);
  expect(err.extra).toEqual({ parameter });
  expect(err.detail).toBeTruthy();
}

describe("parseVehicleQuery", () => {
  it("has defaults only for limit", () => {
    expect(parse("")).toEqual({ limit: MAX });
    expect(parse("?")).toEqual({ limit: MAX });
    expect(hasFilters(parse(""))).toBe(false);
  });

  it("accepts URLSearchParams too", () => {
    expect(parseVehicleQuery(new URLSearchParams("limit=3&seats=4"), { maxLimit: MAX })).toEqual({
      limit: 3,
      seats: [4],
    });
  });

  describe("bbox", () => {
    it.each([
      ["13.3,52.45,13.5,52.55", { minLon: 13.3, minLat: 52.45, maxLon: 13.5, maxLat: 52.55 }],
      ["-180,-90,180,90", { minLon: -180, minLat: -90, maxLon: 180, maxLat: 90 }],
      ["1,2,1,2", { minLon: 1, minLat: 2, maxLon: 1, maxLat: 2 }],
      ["13.3, 52.45, 13.5, 52.55", { minLon: 13.3, minLat: 52.45, maxLon: 13.5, maxLat: 52.55 }],
      ["-.5,+1,0.,2", { minLon: -0.5, minLat: 1, maxLon: 0, maxLat: 2 }],
    ])("accepts %s", (value, bbox) => {
      expect(parse(`bbox=${encodeURIComponent(value)}`).bbox).toEqual(bbox);
    });
    it.each([
      "",
      "1,2,3",
      "1,2,3,4,5",
      "a,b,c,d",
      "1,2,3,",
      ",1,2,3",
      "0x10,1,20,2",
      "1e1,1,20,2",
      "Infinity,1,2,3",
      "NaN,1,2,3",
      "181,0,182,1",
      "-181,0,0,1",
      "0,-91,1,0",
      "0,0,1,91",
      "10,0,5,1", // minLon > maxLon: would cross the antimeridian
      "170,0,-170,1",
      "0,10,1,5", // minLat > maxLat
      "1;2;3;4",
    ])("rejects %j", (value) => expectInvalid(`bbox=${encodeURIComponent(value)}`, "bbox"));
  });

  describe("near and radius", () => {
    it("near uses the default radius", () => {
      expect(parse("near=52.52,13.405").near).toEqual({ lat: 52.52, lon: 13.405, radiusM: DEFAULT_RADIUS_M });
    });
    it("near with radius", () => {
      expect(parse("near=52.52,13.405&radius=250").near).toEqual({ lat: 52.52, lon: 13.405, radiusM: 250 });
      expect(parse("radius=50000&near=-90,180").near).toEqual({ lat: -90, lon: 180, radiusM: 50_000 });
      expect(parse("near=0,0&radius=1.5").near?.radiusM).toBe(1.5);
    });
    it.each(["", "52.5", "52.5,13.4,1", "91,0", "-91,0", "0,181", "0,-181", "a,b", "52.5;13.4", "1e1,2"])(
      "rejects near=%j",
      (value) => expectInvalid(`near=${encodeURIComponent(value)}`, "near"),
    );
    it.each(["", "0", "-5", "50001", "abc", "1e3", "Infinity", "10m"])("rejects radius=%j", (value) =>
      expectInvalid(`near=1,2&radius=${encodeURIComponent(value)}`, "radius"),
    );
    it("radius requires near", () => expectInvalid("radius=100", "radius"));
  });

  describe("fuelType", () => {
    it("upper-cases, deduplicates and sorts", () => {
      expect(parse("fuelType=electric").fuelTypes).toEqual(["ELECTRIC"]);
      expect(parse("fuelType=Gasoline,ELECTRIC,electric").fuelTypes).toEqual(["ELECTRIC", "GASOLINE"]);
      expect(parse("fuelType=PLUG_IN-HYBRID").fuelTypes).toEqual(["PLUG_IN-HYBRID"]);
    });
    it.each([
      "",
      ",",
      "ELECTRIC,",
      "a b",
      "<script>",
      "x".repeat(33),
      Array.from({ length: 17 }, (_, i) => `F${i}`).join(","),
    ])("rejects %j", (value) => expectInvalid(`fuelType=${encodeURIComponent(value)}`, "fuelType"));
  });

  describe("minFuelLevel", () => {
    it.each([
      ["0", 0],
      ["100", 100],
      ["42.5", 42.5],
    ])("accepts %s", (value, n) => expect(parse(`minFuelLevel=${value}`).minFuelLevel).toBe(n));
    it.each(["", "-1", "101", "abc", "50%", "1e1"])("rejects %j", (value) =>
      expectInvalid(`minFuelLevel=${encodeURIComponent(value)}`, "minFuelLevel"),
    );
  });

  describe("transmission", () => {
    it.each([
      ["GA", "GA"],
      ["gm", "GM"],
      ["automatic", "GA"],
      ["Manual", "GM"],
    ])("accepts %s", (value, t) => expect(parse(`transmission=${value}`).transmission).toBe(t));
    it.each(["", "auto", "GA,GM", "X"])("rejects %j", (value) =>
      expectInvalid(`transmission=${encodeURIComponent(value)}`, "transmission"),
    );
  });

  describe("seats", () => {
    it("one, or a list (deduplicated, sorted)", () => {
      expect(parse("seats=4").seats).toEqual([4]);
      expect(parse("seats=5,2,5").seats).toEqual([2, 5]);
    });
    it.each(["", "0", "21", "4.5", "-4", "four", "4,", "100"])("rejects %j", (value) =>
      expectInvalid(`seats=${encodeURIComponent(value)}`, "seats"),
    );
  });

  describe("limit", () => {
    it.each([
      ["1", 1],
      [String(MAX), MAX],
      ["007", 7],
    ])("accepts %s", (value, n) => expect(parse(`limit=${value}`).limit).toBe(n));
    it.each(["", "0", String(MAX + 1), "-1", "1.5", "ten", "1e2", "99999999"])("rejects %j", (value) =>
      expectInvalid(`limit=${encodeURIComponent(value)}`, "limit"),
    );
    it("follows maxLimit", () => {
      expect(parseVehicleQuery("", { maxLimit: 7 }).limit).toBe(7);
      expect(rejection(() => parseVehicleQuery("limit=8", { maxLimit: 7 })).code).toBe("invalid_parameter");
    });
  });

  it("rejects an unknown parameter, naming it", () => {
    expectInvalid("bbox=1,2,3,4&color=red", "color");
    expectInvalid("Limit=5", "Limit");
    expectInvalid("=5", "");
  });

  it("rejects a repeated parameter, naming it", () => {
    expectInvalid("limit=5&limit=6", "limit");
    expectInvalid("fuelType=ELECTRIC&fuelType=DIESEL", "fuelType");
  });

  it("caps the echoed parameter name", () => {
    const err = rejection(() => parse(`${"x".repeat(500)}=1`));
    expect(String(err.extra?.parameter).length).toBeLessThanOrEqual(64);
  });

  it("rejects an over-long query string with query_too_large, before parsing", () => {
    const long = `fuelType=${"A".repeat(MAX_QUERY_LENGTH)}`;
    expect(rejection(() => parse(long)).code).toBe("query_too_large");
    expect(rejection(() => parse(`?${"bogus=1&".repeat(300)}`)).code).toBe("query_too_large");
    expect(rejection(() => parseVehicleQuery(new URLSearchParams(long), { maxLimit: MAX })).code).toBe(
      "query_too_large",
    );
  });

  it("parses all parameters together", () => {
    expect(
      parse(
        "bbox=13,52,14,53&near=52.5,13.4&radius=2000&fuelType=electric&minFuelLevel=30&transmission=manual&seats=4,5&limit=10",
      ),
    ).toEqual({
      bbox: { minLon: 13, minLat: 52, maxLon: 14, maxLat: 53 },
      near: { lat: 52.5, lon: 13.4, radiusM: 2000 },
      fuelTypes: ["ELECTRIC"],
      minFuelLevel: 30,
      transmission: "GM",
      seats: [4, 5],
      limit: 10,
    });
  });

  it("the table lists every parameter the parser knows", () => {
    expect(Object.keys(vehicleQueryParameters(MAX)).sort()).toEqual(
      ["bbox", "near", "radius", "fuelType", "minFuelLevel", "transmission", "seats", "limit", "cursor"].sort(),
    );
  });
});

describe("canonicalQueryKey", () => {
  it("is equal for equivalent queries", () => {
    const a = parse("fuelType=electric,Gasoline&seats=5,4&near=52.50,13.40&limit=500");
    const b = parse("near=52.5,13.4&radius=1000&seats=4,5,4&fuelType=GASOLINE,ELECTRIC");
    expect(canonicalQueryKey(a)).toBe(canonicalQueryKey(b));
  });
  it("differs for different queries", () => {
    const keys = [
      "",
      "limit=5",
      "bbox=1,2,3,4",
      "bbox=1,2,3,5",
      "near=1,2",
      "near=1,2&radius=5",
      "fuelType=DIESEL",
      "minFuelLevel=5",
      "transmission=GA",
      "transmission=GM",
      "seats=4",
      "seats=4,5",
    ].map((qs) => canonicalQueryKey(parse(qs)));
    expect(new Set(keys).size).toBe(keys.length);
  });
  it("is a plain token (safe inside an ETag)", () => {
    const key = canonicalQueryKey(
      parse("bbox=-1.5,2,3,4&fuelType=a_b-c&near=1,2&radius=3&seats=4&transmission=GA&minFuelLevel=5"),
    );
    expect(key).toMatch(/^[\x21\x23-\x7e]+$/);
  });
});

describe("parseVin", () => {
  it("upper-cases a valid VIN", () => {
    expect(parseVin("wme4533911k123456")).toBe("WME4533911K123456");
    expect(parseVin("WME4533911K123456")).toBe("WME4533911K123456");
  });
  it.each([
    "",
    "WME4533911K12345",
    "WME4533911K1234567",
    "WME4533911I123456",
    "WME4533911o123456",
    "WME4533911Q123456",
    "WME4533911K12345 ",
    "WME-533911K123456",
  ])("rejects %j with invalid_vin", (s) => {
    const err = rejection(() => parseVin(s));
    expect(err.code).toBe("invalid_vin");
    expect(err.status).toBe(400);
  });
});
