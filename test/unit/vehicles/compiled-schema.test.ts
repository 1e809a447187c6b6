import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { mulberry32 } from "../../../sandbox/prng.ts";
import { compileSchema } from "../../../src/vehicles/compiled-schema.ts";
import { VehicleSchema } from "../../../src/vehicles/schema.ts";

const ABSENT = Symbol("absent");
const astral = (n: number) => "😀".repeat(n);
const text = (max: number) => [
  "a",
  "MINI Cooper",
  "x".repeat(max),
  "x".repeat(max + 1),
  astral(Math.floor(max / 2)),
  astral(Math.floor(max / 2) + 1),
  "",
  " ",
  42,
  null,
  undefined,
  ABSENT,
  true,
  {},
];
const num = (min: number, max: number) => [
  min,
  max,
  (min + max) / 2,
  min - 1e-9,
  max + 1e-9,
  -0,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  "12",
  null,
  undefined,
  ABSENT,
];

/** Each field's candidates: valid values, every boundary on both sides, wrong types, absence. */
const FIELDS: Record<string, unknown[]> = {
  vin: [
    "WME4533911K123456",
    "WME4533911K12345",
    "WME4533911K1234567",
    "wme4533911k123456",
    "WME4533911I123456",
    "WME4533911O123456",
    "WME4533911Q123456",
    " WME4533911K12345",
    42,
    ABSENT,
    undefined,
  ],
  numberPlate: text(32),
  vehicleName: text(200),
  position: [
    { latitude: 52.5, longitude: 13.4 },
    { latitude: 90, longitude: -180, extra: "dropped" },
    { latitude: -90.0001, longitude: 0 },
    { latitude: 0, longitude: 180.5 },
    { latitude: Number.NaN, longitude: 0 },
    { latitude: Number.POSITIVE_INFINITY, longitude: 0 },
    { latitude: "52", longitude: 13 },
    { latitude: 52 },
    { longitude: 13 },
    { latitude: 52, longitude: undefined },
    Object.assign([], { latitude: 1, longitude: 2 }),
    [],
    null,
    "52,13",
    ABSENT,
  ],
  fuelType: text(32),
  fuelLevel: [...num(0, 100)],
  imageUrl: [
    "https://example.com/a.png",
    "HTTP://EXAMPLE.COM/a.png",
    "ftp://example.com/a.png",
    "https://",
    "https://exa mple.com/",
    "not a url",
    `https://example.com/${"a".repeat(2048 - 20)}`,
    `https://example.com/${"a".repeat(2048)}`,
    "",
    7,
    ABSENT,
    undefined,
  ],
  buildSeries: text(64),
  primaryColor: text(64),
  secondaryColor: text(64),
  numberOfSeats: [1, 20, 4, 0, 21, 4.5, Number.NaN, "4", ABSENT, undefined],
  transmissionType: ["GA", "GM", "ga", "AUTO", "", 1, ABSENT, undefined],
  charging: [true, false, "true", 0, null, ABSENT, undefined],
  chargingCablePlugged: [true, false, 1, ABSENT],
  fuelCardPin: ["1234", ABSENT],
  unknownField: ["x", ABSENT],
};

/** A random item; `validBias`: the chance of each field taking its first (valid) candidate. */
function item(rand: () => number, validBias: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  // Keys in a random order: the output's order must be the schema's, not the input's.
  const keys = Object.keys(FIELDS).sort(() => rand() - 0.5);
  for (const key of keys) {
    const options = FIELDS[key] as unknown[];
    const value = rand() < validBias ? options[0] : options[Math.floor(rand() * options.length)];
    if (value !== ABSENT) out[key] = value;
  }
  return out;
}

describe("compileSchema: the same answers as v.safeParse", () => {
  const compiled = compileSchema(VehicleSchema);

  it("agrees with valibot on 30,000 generated items, output and key order included", () => {
    const rand = mulberry32(0x5ba7e);
    let accepted = 0;
    let rejected = 0;
    for (let i = 0; i < 30_000; i++) {
      const input = item(rand, [0.97, 0.9, 0.6][i % 3] as number);
      const expected = v.safeParse(VehicleSchema, input, { abortEarly: true });
      const got = compiled(input);
      if (!expected.success) {
        expect(got, `item ${i}: ${JSON.stringify(input)}`).toBeUndefined();
        rejected++;
        continue;
      }
      accepted++;
      expect(got, `item ${i}: ${JSON.stringify(input)}`).toStrictEqual(expected.output);
      expect(Object.keys(got as object)).toEqual(Object.keys(expected.output));
      expect(JSON.stringify(got)).toBe(JSON.stringify(expected.output));
    }
    // Both outcomes are exercised, each thousands of times.
    expect(accepted).toBeGreaterThan(3_000);
    expect(rejected).toBeGreaterThan(3_000);
  });

  it("builds new objects holding only the schema's keys (the nested position too)", () => {
    const input = {
      fuelCardPin: "1234",
      vin: "WME4533911K123456",
      position: { latitude: 1, longitude: 2, altitude: 3 },
    };
    const out = compiled(input) as Record<string, unknown>;
    expect(out).toStrictEqual({ vin: "WME4533911K123456", position: { latitude: 1, longitude: 2 } });
    expect(out).not.toBe(input);
    expect(out.position).not.toBe(input.position);
  });

  it("keeps valibot's own rules where the vehicle schema does not reach them (a bare number refuses NaN)", () => {
    for (const [schema, inputs] of [
      [v.number(), [0, -1.5, Number.NaN, Number.POSITIVE_INFINITY, "1", null]],
      [v.optional(v.boolean()), [true, undefined, null, 0]],
      [v.picklist(["A", "B"]), ["A", "b", "C", undefined]],
    ] as const) {
      const compiledOne = compileSchema(schema);
      for (const input of inputs) {
        const expected = v.safeParse(schema, input);
        expect(compiledOne(input), `${schema.type} ${String(input)}`).toStrictEqual(
          expected.success ? expected.output : undefined,
        );
      }
    }
  });

  it("refuses, when built, a schema kind it does not cover", () => {
    const refused = [
      v.pipe(
        v.string(),
        v.transform((s) => s.trim()),
      ),
      v.object({ a: v.optional(v.string(), "default") }),
      v.object({ a: v.fallback(v.string(), "x") }),
      v.array(v.string()),
      v.pipe(v.string(), v.regex(/a/g)),
      v.pipe(v.string(), v.email()),
      v.union([v.string(), v.number()]),
    ];
    for (const schema of refused) expect(() => compileSchema(schema as v.GenericSchema)).toThrow(/not supported/);
  });
});
