import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../../src/config.ts";

const BASE = { PARTNER_CLIENT_ID: "unit-client", PARTNER_CLIENT_SECRET: "unit-secret" };

describe("GATEWAY_LOCATION_HINT", () => {
  it("accepts every Durable Object location hint, apac-ne and apac-se (June 2026) included", () => {
    for (const hint of ["wnam", "enam", "sam", "weur", "eeur", "apac", "apac-ne", "apac-se", "oc", "afr", "me"]) {
      const config = parseConfig({ ...BASE, GATEWAY_LOCATION_HINT: hint });
      expect(config, hint).not.toBeInstanceOf(ConfigError);
      expect((config as { gatewayLocationHint?: string }).gatewayLocationHint).toBe(hint);
    }
  });

  it("refuses anything else, naming the setting", () => {
    expect(() => parseConfig({ ...BASE, GATEWAY_LOCATION_HINT: "mars" })).toThrow(ConfigError);
    expect(() => parseConfig({ ...BASE, GATEWAY_LOCATION_HINT: "mars" })).toThrow(/GATEWAY_LOCATION_HINT/);
  });
});
