/**
 * The app with its ports faked at the boundary (runs in Node: createApp imports no runtime):
 * the optional per-caller protections (API keys, rate limit) and configuration errors, which
 * the workerd suites cannot switch per test.
 */
import { describe, expect, it } from "vitest";
import { createApp, HEALTH_STATUS_TTL_MS } from "../../src/app.ts";
import { type ConfigError, parseConfig } from "../../src/config.ts";
import type { GatewayStatus, SnapshotEnvelope } from "../../src/gateway/types.ts";
import type { Deps, SnapshotSource } from "../../src/ports.ts";
import { newIsolateMemory } from "../../src/vehicles/isolate-memory.ts";
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

/** What the gateway object says about itself in these tests (the shape does not matter to the app). */
const STATUS = {
  token: { state: "failing", lastError: "token_client_rejected", tokenRequests: 1, forcedRefreshes: 0 },
  breaker: { state: "closed" },
} as unknown as GatewayStatus;

function setup(env: Record<string, string>, opts: { limit?: number; statusDelayMs?: number } = {}) {
  const calls = { gateway: 0, status: 0, rateLimit: [] as string[], logs: [] as string[] };
  let now = Date.now();
  const gateway: SnapshotSource = {
    async getSnapshot() {
      calls.gateway++;
      return { ok: true, snapshot: await envelope(Date.now()), stale: false };
    },
    async status() {
      calls.status++;
      if (opts.statusDelayMs) await new Promise((r) => setTimeout(r, opts.statusDelayMs));
      return STATUS;
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
    clock: { now: () => now },
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
  /** Moves this app's clock (the status copy's age is read from it). */
  const advance = (ms: number) => {
    now += ms;
  };
  return { get, calls, advance };
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

// Issue 12, item 1.
describe("GET /health", () => {
  const INTERNALS = ["partner", "client_secret", "token", "breaker", "rateLimit", "config", "gateway", "isolate"];

  it("with API keys on, and no valid key: liveness only, from the isolate, nothing internal, no object call", async () => {
    const { get, calls } = setup({ API_KEYS: KEY });
    const cases: Record<string, string>[] = [
      {},
      { "x-api-key": "wrong-key-0123456789" },
      { "x-api-key": KEY.slice(0, -1) },
    ];
    for (const headers of cases) {
      const res = await get("/health", headers);
      expect(res.status).toBe(200);
      expect(res.headers.get("cache-control")).toBe("no-store");
      const text = await res.text();
      expect(JSON.parse(text)).toEqual({ status: "ok" });
      for (const word of INTERNALS) expect(text).not.toContain(word);
    }
    expect(calls.status).toBe(0);
    expect(calls.gateway).toBe(0);
  });

  it("with API keys on and a valid key, or with keys off: the detailed state", async () => {
    for (const [env, headers] of [
      [{ API_KEYS: KEY }, { "x-api-key": KEY }],
      [{}, {}],
    ] as [Record<string, string>, Record<string, string>][]) {
      const { get, calls } = setup(env);
      const res = await get("/health", headers);
      expect(res.status).toBe(200);
      const body = (await res.json()) as { status: string; config: object; gateway: unknown; isolate: object };
      expect(body.status).toBe("ok");
      expect(body.gateway).toEqual(STATUS);
      expect(body.config).toMatchObject({ ok: true, apiKeys: env.API_KEYS !== undefined });
      expect(calls.status).toBe(1);
    }
  });

  it("costs the gateway object at most one status call per isolate per HEALTH_STATUS_TTL_MS", async () => {
    const { get, calls, advance } = setup({}, { statusDelayMs: 30 });
    // A burst while the first call is in flight: the others wait for its copy.
    const burst = await Promise.all(Array.from({ length: 50 }, () => get("/health")));
    for (const res of burst) expect(((await res.json()) as { gateway: unknown }).gateway).toEqual(STATUS);
    expect(calls.status).toBe(1);
    for (let i = 0; i < 20; i++) expect((await get("/health")).status).toBe(200);
    advance(HEALTH_STATUS_TTL_MS - 1);
    expect((await get("/health")).status).toBe(200);
    expect(calls.status).toBe(1);
    // Past the copy's age: one more call, however many ask.
    advance(1);
    await Promise.all(Array.from({ length: 20 }, () => get("/health")));
    expect(calls.status).toBe(2);
  });

  it("is behind the rate limiter, per key or per client IP, keys on or off", async () => {
    const open = setup({}, { limit: 1 });
    const statuses = [];
    for (let i = 0; i < 3; i++)
      statuses.push((await open.get("/health", { "cf-connecting-ip": "203.0.113.7" })).status);
    expect(statuses).toEqual([200, 429, 429]);
    expect(open.calls.rateLimit).toEqual(Array(3).fill("203.0.113.7"));
    expect(open.calls.status).toBe(1);

    const keyed = setup({ API_KEYS: KEY }, { limit: 1 });
    expect((await keyed.get("/health", { "cf-connecting-ip": "203.0.113.8" })).status).toBe(200);
    expect((await keyed.get("/health", { "cf-connecting-ip": "203.0.113.8" })).status).toBe(429);
    expect(keyed.calls.rateLimit).toEqual(["203.0.113.8", "203.0.113.8"]);
    const limited = await keyed.get("/health", { "x-api-key": KEY });
    expect(limited.status).toBe(429);
    expect(((await limited.json()) as { code: string }).code).toBe("rate_limited");
    expect(keyed.calls.rateLimit[2]).toMatch(/^key:[0-9a-f]{16}$/);
    expect(keyed.calls.status).toBe(0);
  });
});

// Issue 12, item 6: outside Workers the cf-ray header is the client's text.
describe("request id", () => {
  it("outside Workers, a client's cf-ray is ignored: the id is generated", async () => {
    const { get, calls } = setup({});
    const res = await get("/v1/vehicles", { "cf-ray": "8f2b9c3d4e5f6a7b-FRA" });
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(calls.logs.join("\n")).not.toContain("8f2b9c3d4e5f6a7b");
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

  it("takes the partner's new home (partner.free2move.com) as it is, no code change", async () => {
    const { get } = setup({
      PARTNER_TOKEN_URL: "https://partner.free2move.com/auth/realms/partner/protocol/openid-connect/token",
      PARTNER_API_URL: "https://partner.free2move.com",
    });
    const health = (await (await get("/health")).json()) as { config: { ok: boolean; partnerApi: string } };
    expect(health.config).toMatchObject({ ok: true, partnerApi: "https://partner.free2move.com" });
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
