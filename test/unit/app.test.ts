/**
 * The app with its ports faked at the boundary (runs in Node: createApp imports no runtime):
 * the optional per-caller protections (API keys, rate limit) and configuration errors, which
 * the workerd suites cannot switch per test.
 */
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { type ConfigError, parseConfig } from "../../src/config.ts";
import type { Deps, SnapshotEnvelope, SnapshotSource } from "../../src/deps.ts";
import { newIsolateMemory } from "../../src/deps.ts";
import { prepareSnapshot } from "../../src/vehicles/prepared.ts";

const KEY = "k-0123456789abcdef";
const SECRET = "s3cr+t%:/=&?#unit";

const vehicles = [
  {
    vin: "WME4530421Y000001",
    numberPlate: "B-SN 1",
    vehicleName: "smart",
    position: { latitude: 52.52, longitude: 13.4 },
    fuelType: "ELECTRIC",
    fuelLevel: 80,
  },
];

function envelope(now: number): Promise<SnapshotEnvelope> {
  return prepareSnapshot(vehicles, { fetchedAt: now, dropped: 0 });
}

function setup(env: Record<string, string>, opts: { limit?: number } = {}) {
  const calls = { gateway: 0, rateLimit: [] as string[], logs: [] as string[] };
  const gateway: SnapshotSource = {
    async getSnapshot() {
      calls.gateway++;
      return { ok: true, snapshot: await envelope(Date.now()), stale: false };
    },
    async status() {
      throw new Error("not used");
    },
    async warm() {
      throw new Error("not used");
    },
  };
  let config: Deps["config"];
  try {
    config = parseConfig({
      PARTNER_CLIENT_ID: "unit-client",
      PARTNER_CLIENT_SECRET: SECRET,
      ...env,
    });
  } catch (e) {
    config = e as ConfigError;
  }
  let allowed = opts.limit ?? Number.POSITIVE_INFINITY;
  const deps: Deps = {
    config,
    gateway,
    cache: undefined,
    clock: { now: () => Date.now() },
    log: { log: (level, event, fields) => calls.logs.push(JSON.stringify({ level, event, ...fields })) },
    rateLimit:
      opts.limit === undefined
        ? undefined
        : async (key) => {
            calls.rateLimit.push(key);
            return allowed-- > 0;
          },
    allowTierBypass: false,
    memory: newIsolateMemory(),
  };
  const app = createApp();
  const get = (path: string, headers: Record<string, string> = {}, method = "GET") =>
    app.fetch(new Request(`https://gw.test${path}`, { headers, method }), { deps });
  return { get, calls };
}

describe("API keys (API_KEYS)", () => {
  it("refuses a missing or wrong key with 401 problem+json before any gateway call", async () => {
    const { get, calls } = setup({ API_KEYS: `${KEY},another-key-0123456789` });
    for (const headers of [
      {} as Record<string, string>,
      { "x-api-key": "wrong-key-0123456789" },
      { "x-api-key": `${KEY}x` },
    ]) {
      const res = await get("/v1/vehicles", headers);
      expect(res.status).toBe(401);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect(((await res.json()) as { code: string }).code).toBe("unauthorized");
    }
    expect(calls.gateway).toBe(0);
  });

  it("serves a valid key, privately cacheable and varying by key", async () => {
    const { get, calls } = setup({ API_KEYS: `${KEY},another-key-0123456789` });
    const res = await get("/v1/vehicles", { "x-api-key": KEY });
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toMatch(/^private,/);
    expect(res.headers.get("vary")).toContain("x-api-key");
    expect(calls.gateway).toBe(1);
    expect(calls.logs.join("\n")).not.toContain(KEY);
  });

  it("lets an OPTIONS request through without a key (a preflight carries none)", async () => {
    const { get, calls } = setup({ API_KEYS: KEY });
    const res = await get("/v1/vehicles", {}, "OPTIONS");
    expect(res.status).toBe(204);
    expect(res.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
    expect(calls.gateway).toBe(0);
  });

  it("rejects keys shorter than 16 characters as a configuration error naming API_KEYS", async () => {
    const { get } = setup({ API_KEYS: "short" });
    const res = await get("/v1/vehicles");
    expect(res.status).toBe(500);
    const body = (await res.json()) as { code: string; settings: string[] };
    expect(body.code).toBe("config_invalid");
    expect(body.settings).toEqual(["API_KEYS"]);
    expect(JSON.stringify(body)).not.toContain("short");
  });
});

describe("rate limit (RATE_LIMITER binding)", () => {
  it("answers 429 problem+json with Retry-After once the limiter says no, with no gateway call", async () => {
    const { get, calls } = setup({}, { limit: 2 });
    const statuses = [];
    for (let i = 0; i < 4; i++)
      statuses.push((await get("/v1/vehicles", { "cf-connecting-ip": "203.0.113.9" })).status);
    expect(statuses).toEqual([200, 200, 429, 429]);
    expect(calls.gateway).toBe(1);
    expect(calls.rateLimit).toEqual(Array(4).fill("203.0.113.9"));
    const res = await get("/v1/vehicles", { "cf-connecting-ip": "203.0.113.9" });
    expect(res.headers.get("retry-after")).toBe("60");
    expect(((await res.json()) as { code: string }).code).toBe("rate_limited");
  });

  it("buckets by a hash of the API key, never the key itself", async () => {
    const { get, calls } = setup({ API_KEYS: KEY }, { limit: 10 });
    expect((await get("/v1/vehicles", { "x-api-key": KEY })).status).toBe(200);
    expect(calls.rateLimit).toHaveLength(1);
    expect(calls.rateLimit[0]).toMatch(/^key:[0-9a-f]{16}$/);
    expect(calls.rateLimit[0]).not.toContain(KEY.slice(0, 6));
  });
});

describe("configuration errors", () => {
  it("names every bad setting, never a value, on every route; /health says misconfigured", async () => {
    const { get, calls } = setup({ PARTNER_CLIENT_SECRET: "", PARTNER_TOKEN_URL: "http://partner.example/token" });
    const res = await get("/v1/vehicles");
    expect(res.status).toBe(500);
    const body = (await res.json()) as { settings: string[] };
    expect(body.settings.sort()).toEqual(["PARTNER_CLIENT_SECRET", "PARTNER_TOKEN_URL"]);
    const health = await get("/health");
    expect(health.status).toBe(503);
    expect(((await health.json()) as { status: string }).status).toBe("misconfigured");
    expect(calls.gateway).toBe(0);
    expect(calls.logs.some((l) => l.includes("config_invalid") && l.includes("PARTNER_TOKEN_URL"))).toBe(true);
    expect(calls.logs.join("\n")).not.toContain("partner.example");
  });

  it("never echoes a secret's value", async () => {
    const { get, calls } = setup({ PARTNER_CLIENT_AUTH: "nope", PARTNER_CLIENT_SECRET: SECRET });
    const text = await (await get("/v1/vehicles")).text();
    expect(text).toContain("PARTNER_CLIENT_AUTH");
    expect(text).not.toContain(SECRET);
    expect(calls.logs.join("\n")).not.toContain(SECRET);
  });
});

describe("request logs (LOG_REQUESTS)", () => {
  it("all: one JSON line per request with route, status, tier and Cache-Status", async () => {
    const { get, calls } = setup({});
    await get("/v1/vehicles?limit=1");
    await get("/v1/vehicles?limit=1");
    await get("/v1/vehicles?bbox=x");
    const lines = calls.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.event === "request");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatchObject({ route: "/v1/vehicles", status: 200, tier: "gateway" });
    expect(lines[1]).toMatchObject({
      status: 200,
      tier: "memory",
      cacheStatus: expect.stringMatching(/^gateway-memory; hit/),
    });
    expect(lines[2]).toMatchObject({ status: 400 });
    for (const l of lines) expect(l.requestId).toEqual(expect.any(String));
  });

  it("errors: only answers >= 400 are logged", async () => {
    const { get, calls } = setup({ LOG_REQUESTS: "errors" });
    await get("/v1/vehicles?limit=1");
    await get("/v1/vehicles?bbox=x");
    await get("/nope");
    const statuses = calls.logs
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.event === "request")
      .map((l) => l.status);
    expect(statuses).toEqual([400, 404]);
  });
});
