/**
 * OWASP API Security Top 10 (2023), the items that apply to this gateway, tested in workerd
 * against the sandbox (docs/RELIABILITY.md maps every item, including those tested elsewhere
 * and those that do not apply). Every case asserts the answer, the sandbox's request counts, and
 * (afterAll) that nothing leaked.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { CACHE_NAME } from "../../src/cache/snapshot-entry.ts";
import { ConfigError, parseConfig } from "../../src/config.ts";
import { loadStored } from "../../src/gateway/snapshot-codec.ts";
import type { GatewayStatus, SnapshotResult } from "../../src/gateway/types.ts";
import { basicCredentials } from "../../src/oauth/token-endpoint.ts";
import type { Deps, SnapshotSource } from "../../src/ports.ts";
import { preparedText, prepareSnapshot } from "../../src/vehicles/prepared.ts";
import { VEHICLE_FIELDS } from "../../src/vehicles/schema.ts";
import { tierCacheKey } from "../../src/vehicles/tiers.ts";
import { appDeps, gatewayStub, NOTHING, sandbox, sandboxCounts, workerConfig } from "../support/harness.ts";
import { LeakScan, PLANTED_MARKER, type Seen, scanSuite } from "../support/leak-scan.ts";
import { expectNoInternals, expectProblem } from "../support/problem.ts";
import { isDefined, until } from "../support/wait.ts";

const scan = scanSuite({ logLines: true });

const ALLOWED = new Set<string>(VEHICLE_FIELDS);
const ORIGIN = "https://app.example.com"; // CORS_ORIGINS of the test configuration

/** The sandbox fleet as the partner serves it (PINs included), first `n` vehicles. */
async function partnerFleet(n: number): Promise<Record<string, unknown>[]> {
  return (await sandbox.fleet()).slice(0, n);
}

/** Serves `items` (as JSON text, or any text) from the partner's vehicles URL. */
async function partnerServes(body: string): Promise<void> {
  await sandbox.faults({
    vehicles: { kind: "custom", status: 200, headers: { "content-type": "application/json" }, body },
  });
}

function expectAllowListed(vehicles: Record<string, unknown>[], where: string): void {
  for (const v of vehicles) {
    for (const key of Object.keys(v)) {
      if (key !== "distanceM") expect(ALLOWED.has(key), `${where}: field ${key}`).toBe(true);
    }
    expect(Object.keys(v.position as object).sort(), where).toEqual(["latitude", "longitude"]);
  }
}

/** A gateway that counts its calls and answers an empty fleet. */
function fakeGateway(): SnapshotSource & { calls: number } {
  const g = {
    calls: 0,
    async getSnapshot(): Promise<SnapshotResult> {
      g.calls++;
      return {
        ok: true,
        stale: false,
        snapshot: await prepareSnapshot([], { fetchedAt: Date.now(), dropped: 0 }),
      };
    },
    async status(): Promise<GatewayStatus> {
      g.calls++;
      return { token: { state: "valid" } } as unknown as GatewayStatus;
    },
    async warm() {
      return { tokenSecondsLeft: 100, snapshotFetchedAt: Date.now() };
    },
  };
  return g;
}

/** The app with test deps (settings of the Worker unless overridden); answers recorded for the scan. */
function appWith(overrides: Partial<Deps>): (path: string, init?: RequestInit) => Promise<Seen> {
  return scan.app(appDeps({ gateway: fakeGateway(), ...overrides }));
}

describe("API3 Broken Object Property Level Authorization: fuelCardPin and unknown partner fields", () => {
  it("are never served, cached (Cache API entry, object storage) or logged; no prototype pollution", async () => {
    const fleet = await partnerFleet(40);
    expect(fleet.every((v) => typeof v.fuelCardPin === "string")).toBe(true);
    const items = fleet.map((v, i) => ({
      ...v,
      internalNote: `${PLANTED_MARKER}note-${i}`,
      damage: { notes: `${PLANTED_MARKER}damage-${i}` },
      position: { ...(v.position as object), accuracy: `${PLANTED_MARKER}accuracy` },
      customer: { name: `${PLANTED_MARKER}customer`, phone: "+49 30 1234567" },
    }));
    const text = JSON.stringify(items).replace(
      "[{",
      `[{"__proto__":{"isAdmin":"${PLANTED_MARKER}proto"},"constructor":{"prototype":{"polluted":"${PLANTED_MARKER}ctor"}},`,
    );
    await partnerServes(text);

    const list = await scan.fetch("/v1/vehicles");
    expect(list.status).toBe(200);
    const served = list.json<{ vehicles: Record<string, unknown>[]; count: number }>();
    expect(served.count).toBe(40);
    expectAllowListed(served.vehicles, "response");
    expect(list.text).not.toContain("fuelCardPin");
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();

    const one = await scan.fetch(`/v1/vehicles/${String(fleet[0]?.vin)}`);
    expect(one.status).toBe(200);
    expectAllowListed([one.json<{ vehicle: Record<string, unknown> }>().vehicle], "one vehicle");

    // L2: this data centre's Cache API entry, keyed by the upstream request.
    const cache = await caches.open(CACHE_NAME);
    const entry = await until(
      "the Cache API entry",
      () => cache.match(tierCacheKey(workerConfig())),
      isDefined,
      3_000,
      10,
    );
    const entryBytes = new Uint8Array(await entry.arrayBuffer());
    // The prepared snapshot's JSON text, and every byte of the entry (columns included) for the scan.
    const cached = `${preparedText(entryBytes)}\n${new TextDecoder("latin1").decode(entryBytes)}`;
    scan.see("Cache API entry", `${[...entry.headers].map(([k, v]) => `${k}: ${v}`).join("\n")}\n\n${cached}`);
    expect(cached).not.toContain("fuelCardPin");
    const cachedItems = JSON.parse(preparedText(entryBytes)) as Record<string, unknown>[];
    expect(cachedItems).toHaveLength(40);
    expectAllowListed(cachedItems, "Cache API entry");

    // L3: the object's persisted last good snapshot (its parts, read back whole).
    const stored = await until(
      "the persisted snapshot",
      () =>
        runInDurableObject(gatewayStub(), async (_instance, state) => {
          const r = await loadStored({ get: (key) => state.storage.get(key) });
          return r === undefined || r === "unreadable" ? undefined : r.envelope.data;
        }),
      isDefined,
      3_000,
      10,
    );
    const storedBytes = stored;
    const storedText = preparedText(storedBytes);
    scan.see("persisted snapshot", `${storedText}\n${new TextDecoder("latin1").decode(storedBytes)}`);
    expect(storedText).not.toContain("fuelCardPin");
    expectAllowListed(JSON.parse(storedText) as Record<string, unknown>[], "persisted snapshot");

    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("untrusted partner values are validated: out-of-range or mistyped vehicles are dropped, markup stays data", async () => {
    const [a, b, c, d, e] = await partnerFleet(5);
    const items = [
      { ...a, vehicleName: "<script>alert(1)</script>" },
      { ...b, position: { latitude: 200, longitude: 13.4 } },
      { ...c, fuelLevel: "50" },
      { ...d, imageUrl: "javascript:alert(1)" },
      { ...e, vin: `${String(e?.vin).slice(0, 16)}O` },
    ];
    await partnerServes(JSON.stringify(items));

    const list = await scan.fetch("/v1/vehicles");
    expect(list.status).toBe(200);
    expect(list.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(list.headers.get("x-content-type-options")).toBe("nosniff");
    const body = list.json<{ vehicles: Record<string, unknown>[]; count: number }>();
    // The script is a string in JSON (served as application/json, nosniff); the other four are dropped.
    expect(body.vehicles.map((v) => v.vin)).toEqual([a?.vin]);
    expect(body.vehicles[0]?.vehicleName).toBe("<script>alert(1)</script>");
    const status = await gatewayStub().status();
    scan.see("gateway status", status);
    expect(status.counters.droppedVehicles).toBe(4);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });
});

describe("API4 Unrestricted Resource Consumption", () => {
  it("cache-busting query strings cost no partner request: 60 different queries, one token and one partner request", async () => {
    const variants = [
      (i: number) => `limit=${i + 1}`,
      (i: number) => `fuelType=electric,diesel&limit=${i + 1}`,
      (i: number) => `limit=${i + 1}&fuelType=DIESEL,ELECTRIC`,
      (i: number) => `near=52.52,13.405&radius=${100 + i * 10}`,
      (i: number) => `bbox=13.3,52.45,13.5,${52.5 + i / 1000}`,
      (i: number) => `seats=4,5&minFuelLevel=${i}`,
      (i: number) => `transmission=${i % 2 ? "automatic" : "GM"}&limit=${i + 1}`,
    ];
    const queries = Array.from({ length: 60 }, (_, i) => (variants[i % variants.length] as (i: number) => string)(i));
    const answers = await Promise.all(queries.map((q) => scan.fetch(`/v1/vehicles?${q}`)));
    for (const a of answers) expect(a.status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });

    // Another isolate (memory bypassed) finds the one shared entry in the data centre's cache.
    const other = await scan.fetch("/v1/vehicles?limit=7&fuelType=GASOLINE", {
      headers: { "x-gateway-bypass": "memory" },
    });
    expect(other.status).toBe(200);
    expect(other.headers.get("cache-status")).toMatch(/^gateway-cache; hit/);

    // Unknown parameters (the usual cache busters) are refused before any tier.
    for (const q of ["_=1700000000000", "cb=1", "nocache=true", "v=2"]) {
      expectProblem(await scan.fetch(`/v1/vehicles?${q}`), {
        status: 400,
        code: "invalid_parameter",
        retryAfter: "absent",
      });
    }
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("limit is bounded by VEHICLES_MAX_LIMIT (5000, also the default); beyond it 400", async () => {
    const all = await scan.fetch("/v1/vehicles?limit=5000");
    expect(all.status).toBe(200);
    expect(all.json<{ count: number }>().count).toBe(2000);
    expectProblem(await scan.fetch("/v1/vehicles?limit=5001"), {
      status: 400,
      code: "invalid_parameter",
      retryAfter: "absent",
    });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("with a RATE_LIMITER binding: 429 rate_limited with Retry-After, the gateway is not asked; keyed by caller", async () => {
    const gateway = fakeGateway();
    const keys: string[] = [];
    const fetchApp = appWith({
      gateway,
      rateLimit: async (key) => {
        keys.push(key);
        return false;
      },
    });
    const a = await fetchApp("/v1/vehicles", { headers: { "cf-connecting-ip": "203.0.113.7" } });
    expectProblem(a, { status: 429, code: "rate_limited", retryAfter: 60 });
    expect(keys).toEqual(["203.0.113.7"]);
    expect(gateway.calls).toBe(0);
    expect(await sandboxCounts()).toEqual(NOTHING);
  });
});

describe("API2 Broken Authentication (when API_KEYS is set)", () => {
  it("no key, a wrong key, a prefix of a key: 401 unauthorized; the right key: 200, private; the gateway is asked only then", async () => {
    const key = "k3y-0123456789abcdef";
    const gateway = fakeGateway();
    const fetchApp = appWith({ config: { ...workerConfig(), apiKeys: new Set([key]) }, gateway });

    const attempts: Record<string, string>[] = [
      {},
      { "x-api-key": "wrong-0123456789abcdef" },
      { "x-api-key": key.slice(0, 10) },
      { "x-api-key": `${key}x` },
    ];
    for (const headers of attempts) {
      const a = await fetchApp("/v1/vehicles", { headers });
      const body = expectProblem(a, { status: 401, code: "unauthorized", retryAfter: "absent" });
      expect(body.authentication).toBe("x-api-key");
      expect(a.text).not.toContain(key);
    }
    expect(gateway.calls).toBe(0);
    const ok = await fetchApp("/v1/vehicles", { headers: { "x-api-key": key } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("cache-control")).toMatch(/^private/);
    expect(ok.headers.get("vary")).toContain("x-api-key");
    expect(gateway.calls).toBe(1);
  });
});

describe("API5 Broken Function Level Authorization", () => {
  it("the tier-bypass header is ignored unless ALLOW_TIER_BYPASS is set (benchmarks only)", async () => {
    const gateway = fakeGateway();
    const fetchApp = appWith({ gateway, allowTierBypass: false });
    expect((await fetchApp("/v1/vehicles")).status).toBe(200);
    const again = await fetchApp("/v1/vehicles", { headers: { "x-gateway-bypass": "memory,cache" } });
    expect(again.status).toBe(200);
    expect(again.headers.get("cache-status")).toMatch(/^gateway-memory; hit/);
    expect(gateway.calls).toBe(1);
  });
});

describe("API7 Server Side Request Forgery: the partner host is fixed by configuration", () => {
  it("Host, X-Forwarded-Host, Forwarded, X-Original-URL headers change nothing: calls go to the configured URLs only", async () => {
    const a = await scan.fetch("/v1/vehicles?limit=1", {
      headers: {
        host: "evil.example",
        "x-forwarded-host": "evil.example",
        "x-forwarded-proto": "http",
        forwarded: "host=evil.example;proto=http",
        "x-original-url": "https://evil.example/steal",
        "x-rewrite-url": "https://evil.example/steal",
      },
    });
    expect(a.status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
    expect(scan.outbound.map((r) => r.url).sort()).toEqual(
      [env.PARTNER_TOKEN_URL, `${env.PARTNER_API_URL}/api/rental/partner/vehicles`].sort(),
    );
  });

  it("partner URLs must be https (http only for loopback), without credentials, query or fragment; errors name the setting, never its value", () => {
    const base = { PARTNER_CLIENT_ID: "id", PARTNER_CLIENT_SECRET: `${PLANTED_MARKER}secret` };
    const bad: [string, string][] = [
      ["PARTNER_API_URL", "http://evil.example"],
      ["PARTNER_API_URL", `https://user:${PLANTED_MARKER}pw@partner.example`],
      ["PARTNER_API_URL", "https://partner.example/?next=https://evil.example"],
      ["PARTNER_TOKEN_URL", "ftp://evil.example/token"],
      ["PARTNER_TOKEN_URL", "javascript:alert(1)"],
      ["PARTNER_TOKEN_URL", "https://partner.example/token#frag"],
    ];
    for (const [name, value] of bad) {
      let error: unknown;
      try {
        parseConfig({ ...base, [name]: value });
      } catch (e) {
        error = e;
      }
      expect(error, `${name}=${value}`).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).settings).toEqual([name]);
      expect((error as ConfigError).message).not.toContain(value);
      expect((error as ConfigError).message).not.toContain(PLANTED_MARKER);
      scan.see("config error", error);
    }
  });

  it.each([
    { status: 307 as const, where: "another origin" },
    { status: 308 as const, where: "the same origin" },
  ])(
    "token endpoint redirect ($status to $where): refused, the secret goes nowhere else",
    async ({ status, where }) => {
      const location = where === "the same origin" ? `${env.SANDBOX_URL}/steal` : undefined;
      await sandbox.faults({ token: { kind: "redirect", status, ...(location ? { location } : {}) } });

      const body = expectProblem(await scan.fetch("/v1/vehicles"), {
        status: 502,
        code: "token_endpoint_error",
        retryAfter: 1,
      });
      expect(body.detail).toBe("redirect refused");
      // Refused like any transient failure: three attempts, each to the token endpoint itself.
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 3 });
      expect((await sandbox.counters()).steal).toEqual({ total: 0, withAuthorization: 0 });
      for (const r of scan.outbound) expect(r.url).toBe(env.PARTNER_TOKEN_URL);
    },
  );

  it("imageUrl is data: served as given, never fetched (even when it points at our own partner or loopback)", async () => {
    const info = (await (await fetch(`${env.SANDBOX_URL}/__sandbox`)).json()) as { stealUrl: string };
    const fleet = await partnerFleet(20);
    const targets = [info.stealUrl, `${env.SANDBOX_URL}/steal`, "http://169.254.169.254/latest/meta-data/"];
    const items = fleet.map((v, i) => ({ ...v, imageUrl: targets[i % targets.length] }));
    await partnerServes(JSON.stringify(items));

    const list = await scan.fetch("/v1/vehicles");
    expect(list.status).toBe(200);
    const served = list.json<{ vehicles: { imageUrl?: string }[] }>().vehicles.map((v) => v.imageUrl);
    expect(new Set(served)).toEqual(new Set(targets));
    const one = await scan.fetch(`/v1/vehicles/${String(fleet[0]?.vin)}`);
    expect(one.status).toBe(200);

    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
    expect((await sandbox.counters()).steal.total).toBe(0);
    for (const r of scan.outbound) expect(targets).not.toContain(r.url);
  });
});

describe("API8 Security Misconfiguration", () => {
  it("CORS only for the configured origin; never *, never credentials; look-alike origins get no CORS header", async () => {
    const ok = await scan.fetch("/v1/vehicles?limit=1", { headers: { origin: ORIGIN } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(ok.headers.get("access-control-allow-credentials")).toBeNull();
    expect(ok.headers.get("vary")?.toLowerCase()).toContain("origin");

    const okError = await scan.fetch("/v1/vehicles?limit=0", { headers: { origin: ORIGIN } });
    expectProblem(okError, { status: 400, code: "invalid_parameter", retryAfter: "absent" });
    expect(okError.headers.get("access-control-allow-origin")).toBe(ORIGIN);

    const preflight = await scan.fetch("/v1/vehicles", {
      method: "OPTIONS",
      headers: { origin: ORIGIN, "access-control-request-method": "GET" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(preflight.headers.get("access-control-allow-methods")).toBe("GET,HEAD,OPTIONS");

    const others = [
      "https://evil.example",
      "null",
      "http://app.example.com",
      "https://app.example.com.evil.example",
      "https://evil-app.example.com",
      "https://APP.EXAMPLE.COM",
    ];
    for (const origin of others) {
      const inits: RequestInit[] = [
        { headers: { origin } },
        { method: "OPTIONS", headers: { origin, "access-control-request-method": "GET" } },
      ];
      for (const init of inits) {
        const a = await scan.fetch("/v1/vehicles?limit=1", init);
        expect(a.status, origin).toBeLessThan(300);
        const cors = [...a.headers.keys()].filter((k) => k.startsWith("access-control-"));
        expect(cors, `${init.method ?? "GET"} from ${origin}`).toEqual([]);
        // Issue 12, item 5: the answer without CORS headers varies by Origin too, or a shared
        // cache could hand it to the allowed app.
        expect(a.headers.get("vary")?.toLowerCase(), `${init.method ?? "GET"} from ${origin}`).toContain("origin");
      }
    }
    // Without any Origin, and on errors and every other route, as long as CORS is on.
    for (const path of [
      "/v1/vehicles?limit=1",
      "/v1/vehicles?limit=0",
      "/v1/vehicles/nope",
      "/health",
      "/openapi.json",
    ]) {
      const a = await scan.fetch(path);
      expect(a.headers.get("vary")?.toLowerCase(), path).toContain("origin");
      expect(a.headers.get("access-control-allow-origin"), path).toBeNull();
    }
    expect(okError.headers.get("vary")?.toLowerCase()).toContain("origin");
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("the request id: Cloudflare's cf-ray on Workers when it is a Ray ID, else a generated UUID (never a client's text)", async () => {
    const ray = "8f2b9c3d4e5f6a7b-FRA";
    const a = await scan.fetch("/v1/vehicles?limit=1", { headers: { "cf-ray": ray } });
    expect(a.headers.get("x-request-id")).toBe(ray);
    for (const junk of ["x".repeat(5000), "8f2b9c3d4e5f6a7b-FRA forged", "<script>", ""]) {
      const b = await scan.fetch("/v1/vehicles?limit=1", { headers: { "cf-ray": junk } });
      expect(b.headers.get("x-request-id"), junk.slice(0, 30)).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it("nosniff on every answer; no-store on every error and on /health", async () => {
    const first = await scan.fetch("/v1/vehicles?limit=1");
    const etag = first.headers.get("etag") ?? "";
    const answers: [string, Seen][] = [
      ["200", first],
      ["304", await scan.fetch("/v1/vehicles?limit=1", { headers: { "if-none-match": etag } })],
      ["HEAD", await scan.fetch("/v1/vehicles?limit=1", { method: "HEAD" })],
      ["400", await scan.fetch("/v1/vehicles?limit=x")],
      ["404", await scan.fetch("/nothing")],
      ["404 vin", await scan.fetch("/v1/vehicles/WME4533911K123456")],
      ["405", await scan.fetch("/v1/vehicles", { method: "DELETE" })],
      ["413", await scan.fetch("/v1/vehicles", { headers: { "content-length": "5" } })],
      ["414", await scan.fetch(`/v1/vehicles?fuelType=${"A".repeat(3000)}`)],
      ["/health", await scan.fetch("/health")],
      ["preflight", await scan.fetch("/v1/vehicles", { method: "OPTIONS", headers: { origin: ORIGIN } })],
    ];
    expect(answers.find(([name]) => name === "304")?.[1].status).toBe(304);
    for (const [name, a] of answers) {
      expect(a.headers.get("x-content-type-options"), name).toBe("nosniff");
      if (a.status >= 400 || name === "/health") expect(a.headers.get("cache-control"), name).toBe("no-store");
      expectNoInternals(a);
    }
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("an unexpected error is a generic 500 internal: no message, no stack; the detail goes to the log only", async () => {
    const gateway = fakeGateway();
    gateway.getSnapshot = async () => {
      throw new TypeError("boom: gateway internals at Object.<anonymous> (src/gateway/gateway.ts:1:1)");
    };
    const a = await appWith({ gateway })("/v1/vehicles");
    const body = expectProblem(a, { status: 500, code: "internal", retryAfter: "absent" });
    expect(body.detail).toBeUndefined();
    expect(a.text).not.toContain("boom");
    expect(a.text).not.toContain("TypeError");
  });

  it("a bad setting: 500 config_invalid naming the setting, never its value (nor in the log)", async () => {
    let config: ConfigError | undefined;
    try {
      parseConfig({ PARTNER_API_URL: `https://user:${PLANTED_MARKER}pw@evil.example`, PARTNER_CLIENT_ID: "id" });
    } catch (e) {
      config = e as ConfigError;
    }
    expect(config).toBeInstanceOf(ConfigError);
    const fetchApp = appWith({ config: config as ConfigError });
    const body = expectProblem(await fetchApp("/v1/vehicles"), {
      status: 500,
      code: "config_invalid",
      retryAfter: "absent",
    });
    expect(body.settings).toEqual(["PARTNER_API_URL", "PARTNER_CLIENT_SECRET"]);
    const health = await fetchApp("/health");
    expect(health.status).toBe(503);
    expect(health.headers.get("cache-control")).toBe("no-store");
    for (const a of [health]) expect(a.text).not.toContain("evil.example");
  });
});

describe("the leak scan itself", () => {
  it("finds a PIN (with or without its marker), a token inside other text, every form of the client secret, a planted value", async () => {
    expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
    const s = await sandbox.secrets();
    const pin = s.fuelCardPins[1234] ?? "";
    const token = s.accessTokens.at(-1) ?? "";
    const id = env.PARTNER_CLIENT_ID ?? "";
    const secret = env.PARTNER_CLIENT_SECRET ?? "";
    const probes = [
      pin,
      pin.slice("sbxpin-".length),
      `{"authorization":"Bearer ${token}"}`,
      `x${token}y`,
      secret,
      encodeURIComponent(secret),
      new URLSearchParams([["client_secret", secret]]).toString(),
      JSON.stringify({ secret }),
      basicCredentials(id, secret),
      basicCredentials(env.SANDBOX_BASIC_ID, env.SANDBOX_BASIC_SECRET),
      `${PLANTED_MARKER}anything`,
    ];
    for (const probe of probes) {
      const probeScan = new LeakScan();
      probeScan.see("probe", `a log line ${probe} and more`);
      await expect(probeScan.assertClean(), probe.slice(0, 12)).rejects.toThrow(/^leak: /);
    }
    const clean = new LeakScan();
    clean.see("probe", `tokenId ${token.length} 2026-11-28T23:11:40.000Z 1234-12345 ${s.fuelCardPins.length}`);
    await expect(clean.assertClean()).resolves.toMatchObject({ texts: 1 });
  });
});
