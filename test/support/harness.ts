/**
 * Helpers for integration tests that run inside workerd: the sandbox's control API, a cold
 * start (no token, no snapshot, empty caches, a fresh isolate), the gateway object's stub, and
 * a clock the tests can move (Workers' Date.now() only advances across I/O).
 */
import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { beforeEach, vi } from "vitest";
import type { FaultsSpec } from "../../sandbox/index.ts";
import { CACHE_NAME } from "../../src/cache/snapshot-entry.ts";
import { type Config, configFor } from "../../src/config.ts";
import type { GatewayCounters } from "../../src/gateway/types.ts";
import { TokenBroker } from "../../src/oauth/token-broker.ts";
import type { Clock, Deps, KeyValueStore } from "../../src/ports.ts";
import { GATEWAY_NAME } from "../../src/runtimes/cloudflare/gateway-stub.ts";
import { resetIsolate } from "../../src/runtimes/cloudflare/isolate.ts";
import { consoleLogger, MemoryStore, systemClock } from "../../src/runtimes/standard-ports.ts";
import { newIsolateMemory, type TierCounters } from "../../src/vehicles/isolate-memory.ts";
import { tierCacheKey } from "../../src/vehicles/tiers.ts";
import { waitFor } from "./wait.ts";

/** Counters of the sandbox (see sandbox/index.ts `Counters`). */
export interface SandboxCounters {
  token: { total: number; issued: number; rejected: number; byStatus: Record<string, number> };
  vehicles: { total: number; served: number; byStatus: Record<string, number>; rejected: Record<string, number> };
  steal: { total: number; withAuthorization: number };
  unexpected: number;
  unexpectedRequests: string[];
}

async function control<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "content-type": "application/json" };
  }
  const res = await fetch(`${env.SANDBOX_URL}/__sandbox${path}`, init);
  if (!res.ok) throw new Error(`sandbox control ${method} ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

export const sandbox = {
  counters: () => control<SandboxCounters>("GET", "/counters"),
  /** Clears faults and counters, and sets the fleet back to tick 0. */
  reset: () => control<unknown>("POST", "/reset"),
  faults: (spec: FaultsSpec) => control<unknown>("POST", "/faults", spec),
  clearFaults: () => control<unknown>("POST", "/faults/clear"),
  revokeAll: () => control<{ revoked: number }>("POST", "/revoke", {}),
  secrets: () =>
    control<{ accessTokens: string[]; fuelCardPins: string[]; clientSecrets: string[] }>("GET", "/secrets"),
  fleet: () => control<Record<string, unknown>[]>("GET", "/fleet"),
  tokenTtl: (seconds: number) => control<unknown>("POST", "/token-ttl", { seconds }),
  tick: (advance: number) => control<unknown>("POST", "/tick", { advance }),
  /** Serves `size` vehicles until the next reset (coldStart puts the 2,000 back). */
  fleetSize: (size: number) => control<{ fleetSize: number }>("POST", "/fleet-size", { size }),
};

/** The gateway object's stub, as the Worker addresses it. */
export function gatewayStub() {
  return env.GATEWAY.getByName(GATEWAY_NAME);
}

/** A request to the Worker under test. */
export function get(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(new Request(`https://gateway.test${path}`, init));
}

/** The Worker's own settings, parsed from its env as the Worker and the gateway object parse them. */
export function workerConfig(): Config {
  const config = configFor(env as unknown as Record<string, unknown>);
  if (config instanceof Error) throw config;
  return config;
}

/**
 * Deps for the Worker's app built in a test (not the deployed Worker): the Worker's settings, no
 * Cache API, no rate limit, no tier bypass and a fresh isolate memory, unless `deps` says otherwise.
 */
export function appDeps(deps: Pick<Deps, "gateway"> & Partial<Deps>): Deps {
  return {
    config: workerConfig(),
    cache: undefined,
    clock: systemClock,
    log: consoleLogger,
    rateLimit: undefined,
    allowTierBypass: false,
    memory: newIsolateMemory(),
    ...deps,
  };
}

/** A TokenBroker of the test's own (not the gateway object's), on the real fetch, logging to the console. */
export function tokenBroker(
  config: Config,
  store: KeyValueStore = new MemoryStore(),
  clock: Clock = systemClock,
): TokenBroker {
  return new TokenBroker({ config, fetch: globalThis.fetch, store, clock, log: consoleLogger });
}

/**
 * Every key put into a cache of this test file's isolate, where the Worker under test runs too (each
 * file gets a workerd, and caches, of its own). The Cache API lists no keys, and the rendered
 * answers are keyed by query: coldStart deletes these. Wrapped by hand, not with vi.spyOn, so that
 * vi.restoreAllMocks() leaves it in place.
 */
const putKeys = new Set<string>();
/** Puts not settled yet: coldStart lets them land before it deletes, so that none lands after. */
const pendingPuts = new Set<Promise<unknown>>();
const realPut = Cache.prototype.put;
Cache.prototype.put = function put(this: Cache, request: RequestInfo | URL, response: Response): Promise<void> {
  putKeys.add(request instanceof Request ? request.url : String(request));
  const p = realPut.call(this, request, response);
  const settled: Promise<unknown> = p.catch(() => {}).finally(() => pendingPuts.delete(settled));
  pendingPuts.add(settled);
  return p;
};

/** Empties the named cache of every entry put so far (snapshots and rendered answers). */
async function emptyCache(): Promise<void> {
  await waitFor("the cache puts under way", () => pendingPuts.size === 0);
  const cache = await caches.open(CACHE_NAME);
  await Promise.all([...putKeys].map((key) => cache.delete(key)));
  putKeys.clear();
}

/** Everything as on a first deploy: no token, no snapshot, empty caches, fresh isolate, a calm sandbox. */
export async function coldStart(): Promise<void> {
  vi.restoreAllMocks();
  resetClock();
  await runInDurableObject(gatewayStub(), async (_instance, state) => {
    await state.storage.deleteAlarm();
    await state.storage.deleteAll();
  });
  await abortAllDurableObjects();
  resetIsolate();
  await emptyCache();
  await sandbox.tokenTtl(300);
  await sandbox.reset();
}

const realNow = Date.now.bind(Date);
let offsetMs = 0;

/**
 * Moves the clock of the Worker and of the gateway object by `ms` (in tests both run in the
 * test's isolate, and the core reads time through Date.now()). coldStart() puts it back.
 */
export function advanceClock(ms: number): void {
  offsetMs += ms;
  vi.spyOn(Date, "now").mockImplementation(() => realNow() + offsetMs);
}

function resetClock(): void {
  offsetMs = 0;
}

// ---------------------------------------------------------------------------------------------
// Vehicles endpoint tests: counts, leak scan, /health (waits for background work: wait.ts).

/** The sandbox counts most tests assert: token and partner requests, redirect-target hits, stray requests. */
export interface Counts {
  token: number;
  vehicles: number;
  /** Hits of the redirect target (`/steal`): a request that followed a partner's redirect. */
  steal: number;
  /** Requests to any other path of the sandbox (expected 0). */
  unexpected: number;
}

/** The sandbox's counts in one comparable object (for the token broker's detail: `partnerCounts`). */
export async function sandboxCounts(): Promise<Counts> {
  const c = await sandbox.counters();
  return { token: c.token.total, vehicles: c.vehicles.total, steal: c.steal.total, unexpected: c.unexpected };
}

/** The counts of a case that reached nobody (spread it and name what did: `{ ...NOTHING, token: 1 }`). */
export const NOTHING: Readonly<Counts> = { token: 0, vehicles: 0, steal: 0, unexpected: 0 };

/** The fetchedAt stamp of this data centre's L2 entry, or undefined when there is none. */
export async function cachedFetchedAt(): Promise<number | undefined> {
  const config = configFor(env as unknown as Record<string, unknown>);
  if (config instanceof Error) return undefined;
  const hit = await (await caches.open(CACHE_NAME)).match(tierCacheKey(config));
  if (!hit) return undefined;
  await hit.body?.cancel();
  const at = Number(hit.headers.get("x-gateway-fetched-at"));
  return Number.isFinite(at) && at > 0 ? at : undefined;
}

/** A response read once: status, headers and body text, all kept for the leak scan. */
export interface Observed {
  res: Response;
  status: number;
  headers: Headers;
  text: string;
}

const observedTexts: string[] = [];

/** `get`, reading the body, and keeping status, headers and body for `expectNoLeaks`. */
export async function observe(path: string, init?: RequestInit): Promise<Observed> {
  const res = await get(path, init);
  const text = await res.text();
  const head = [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
  observedTexts.push(`${init?.method ?? "GET"} ${path} -> ${res.status}\n${head}\n\n${text}`);
  return { res, status: res.status, headers: res.headers, text };
}

/** `observe` and parse the body as JSON (the caller names the shape). */
export async function observeJson<T>(path: string, init?: RequestInit): Promise<Observed & { body: T }> {
  const o = await observe(path, init);
  return { ...o, body: JSON.parse(o.text) as T };
}

/**
 * Every response read through `observe` since the last call (and every text in `extra`, log
 * lines say) must hold no fuelCardPin, no access token and no client secret of the sandbox.
 * Every PIN carries the sandbox's marker (checked here), so scanning for the marker covers every
 * PIN; `everyPin` also looks for each PIN without its marker (slower: for the redaction suite).
 * Returns how many texts were scanned.
 */
export async function expectNoLeaks(opts: { extra?: readonly string[]; everyPin?: boolean } = {}): Promise<number> {
  const secrets = await sandbox.secrets();
  const marker = "sbxpin-";
  if (secrets.fuelCardPins.length === 0) throw new Error("leak scan: the sandbox reports no fuelCardPin");
  const unmarked = secrets.fuelCardPins.find((p) => !p.startsWith(marker));
  if (unmarked !== undefined) throw new Error("leak scan: a fuelCardPin without the marker");
  const pins = secrets.fuelCardPins.map((p) => p.slice(marker.length));
  // The sandbox's PINs read `dddd-dddddd` after the marker: one regex pass per text finds every
  // candidate, checked against the set (a plain search per PIN otherwise).
  const shape = /\d{4}-\d{6}/g;
  const pinSet = new Set(pins);
  const shaped = pins.every((p) => /^\d{4}-\d{6}$/.test(p));
  const findPin = (text: string): string | undefined =>
    shaped ? text.match(shape)?.find((m) => pinSet.has(m)) : pins.find((p) => text.includes(p));
  const needles = [...secrets.accessTokens, ...secrets.clientSecrets].filter((s) => s.length >= 8);
  const texts = [...observedTexts.splice(0), ...(opts.extra ?? [])];
  for (const text of texts) {
    const where = text.slice(0, text.indexOf("\n") === -1 ? 120 : text.indexOf("\n"));
    if (text.includes(marker)) throw new Error(`leak: a fuelCardPin in ${where}`);
    // The PINs without the marker too, should some served form ever drop it.
    const pin = opts.everyPin ? findPin(text) : undefined;
    if (pin !== undefined) throw new Error(`leak: fuelCardPin ${marker}${pin} in ${where}`);
    if (needles.some((n) => text.includes(n))) throw new Error(`leak: a token or client secret in ${where}`);
  }
  return texts.length;
}

/** Log lines (console.log/warn/error) from now on, for the leak scan; console.log is kept quiet. */
export function captureLogs(): string[] {
  const lines: string[] = [];
  const keep = (...args: unknown[]) => {
    lines.push(args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" "));
  };
  vi.spyOn(console, "log").mockImplementation(keep);
  vi.spyOn(console, "warn").mockImplementation(keep);
  vi.spyOn(console, "error").mockImplementation(keep);
  return lines;
}

/**
 * For each test (of the file, or of the describe it is called in): a cold start, then console
 * capture (coldStart restores every mock, so in this order). Returns a reader of the current
 * test's log lines, for `expectNoLeaks({ extra })`.
 */
export function coldStartEachCapturingLogs(): () => string[] {
  let lines: string[] = [];
  beforeEach(async () => {
    await coldStart();
    lines = captureLogs();
  });
  return () => lines;
}

/** The body of GET /health. */
export interface HealthBody {
  status: string;
  config: { ok: boolean; vehiclesTtlS?: number; vehiclesStaleS?: number; [k: string]: unknown };
  gateway: {
    token: {
      state: string;
      ageS?: number;
      secondsLeft?: number;
      tokenRequests: number;
      [k: string]: unknown;
    };
    snapshot: { fetchedAt?: number; ageS?: number; count?: number };
    breaker: { state: string; retryAt?: number };
    counters: GatewayCounters;
  };
  isolate: TierCounters & { cacheApi: "unknown" | "storing" | "not-storing" };
}

/** GET /health through `observe`, parsed. */
export function health(): Promise<Observed & { body: HealthBody }> {
  return observeJson<HealthBody>("/health");
}

// --- Traffic and leak recording (token broker tests) ----------------------------------------

/** One request the code under test sent with globalThis.fetch (the sandbox control API excepted). */
export interface OutboundRequest {
  method: string;
  url: string;
  /** The `authorization` header as sent, if any. */
  authorization: string | undefined;
  /** The bearer value of `authorization`, if it was a Bearer one. */
  bearer: string | undefined;
}

/** A Worker response read in full (its body and headers are recorded for the leak check). */
export interface RecordedResponse {
  status: number;
  headers: Headers;
  text: string;
  json<T = unknown>(): T;
}

/**
 * Everything that could carry a secret out: Worker responses (heads and bodies), results of RPC
 * calls and errors handed to `see`, and every console line (the Worker and the gateway object log
 * through console in the test's isolate). Also records each outbound fetch and its bearer token.
 */
export interface TrafficRecorder {
  readonly outbound: OutboundRequest[];
  /** Console lines, in order (console output is captured, not printed). */
  readonly logs: string[];
  /** Response heads and bodies, RPC results and errors seen so far. */
  readonly seen: string[];
  /** Records any value (an RPC result, an error) for the leak check. */
  see(value: unknown): void;
  /** `get(path)` through the Worker, the response read in full and recorded. */
  get(path: string, init?: RequestInit): Promise<RecordedResponse>;
  /** Outbound requests to the partner's vehicles URL. */
  vehiclesRequests(): OutboundRequest[];
  /** Outbound requests to the token endpoint. */
  tokenRequests(): OutboundRequest[];
  /**
   * Fails if any access token the sandbox ever issued, or any client secret (raw or encoded),
   * appears in a recorded response, RPC result, error or console line; or if a request went
   * anywhere but the token endpoint and the vehicles URL (and `alsoAllowed`), or a bearer token
   * anywhere but the vehicles URL.
   */
  assertNoLeaks(opts?: { alsoAllowed?: string[] }): Promise<void>;
}

function describeValue(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) {
    const extra = Object.entries(value).map(([k, v]) => `${k}=${describeValue(v)}`);
    return [value.name, value.message, String(value.stack ?? ""), ...extra].join("\n");
  }
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** The forms a client secret could take on the wire or in a log line. */
function secretForms(secret: string): string[] {
  const form = new URLSearchParams([["v", secret]]).toString().slice(2);
  return [...new Set([secret, encodeURIComponent(secret), form, JSON.stringify(secret).slice(1, -1)])];
}

/**
 * Starts recording (call it after coldStart, which restores every mock): spies on
 * globalThis.fetch (calls through) and on console.log/info/warn/error/debug (captured, not printed).
 */
export function recordTraffic(): TrafficRecorder {
  const outbound: OutboundRequest[] = [];
  const logs: string[] = [];
  const seen: string[] = [];
  const realFetch = globalThis.fetch;
  vi.spyOn(globalThis, "fetch").mockImplementation((input: RequestInfo | URL, init?: RequestInit) => {
    const req = input instanceof Request ? input : undefined;
    const url = req ? req.url : String(input);
    if (!url.startsWith(`${env.SANDBOX_URL}/__sandbox`)) {
      const headers = new Headers(init?.headers ?? req?.headers);
      const authorization = headers.get("authorization") ?? undefined;
      const bearer = /^Bearer +(\S+)$/i.exec(authorization ?? "")?.[1];
      outbound.push({ method: init?.method ?? req?.method ?? "GET", url, authorization, bearer });
    }
    return realFetch(input, init);
  });
  for (const level of ["log", "info", "warn", "error", "debug"] as const) {
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      logs.push(args.map(describeValue).join(" "));
    });
  }
  const vehiclesUrl = `${env.PARTNER_API_URL}/api/rental/partner/vehicles`;
  return {
    outbound,
    logs,
    seen,
    see(value) {
      seen.push(describeValue(value));
    },
    async get(path, init) {
      const res = await get(path, init);
      const text = await res.text();
      seen.push(`${res.status}\n${[...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n")}\n\n${text}`);
      return { status: res.status, headers: res.headers, text, json: <T>() => JSON.parse(text) as T };
    },
    vehiclesRequests: () => outbound.filter((r) => r.url === vehiclesUrl),
    tokenRequests: () => outbound.filter((r) => r.url === env.PARTNER_TOKEN_URL),
    async assertNoLeaks(opts) {
      const s = await sandbox.secrets();
      const haystacks = [...seen, ...logs];
      const clientSecrets = [
        ...s.clientSecrets,
        ...(env.PARTNER_CLIENT_SECRET ? [env.PARTNER_CLIENT_SECRET] : []),
        env.SANDBOX_BASIC_SECRET,
      ];
      const needles = [...s.accessTokens, ...clientSecrets.flatMap(secretForms)];
      if (s.accessTokens.length === 0) throw new Error("leak check: the sandbox reports no issued token");
      for (const needle of needles) {
        const at = haystacks.findIndex((h) => h.includes(needle));
        if (at >= 0) throw new Error(`leak: a token or client secret appears in: ${haystacks[at]!.slice(0, 300)}`);
      }
      for (const r of outbound) {
        if (r.url !== env.PARTNER_TOKEN_URL && r.url !== vehiclesUrl && !opts?.alsoAllowed?.includes(r.url)) {
          // Only requests of the code under test are recorded: these two URLs are all it may call.
          throw new Error(`unexpected outbound request: ${r.method} ${r.url}`);
        }
        if (r.bearer !== undefined && r.url !== vehiclesUrl) throw new Error(`bearer token sent to ${r.url}`);
      }
    },
  };
}

/**
 * The sandbox's request counts in detail (issued and refused tokens, served and refused partner
 * requests) in one flat object, for one `toEqual` per test of the token broker (readable diffs).
 */
export interface PartnerCounts {
  tokenRequests: number;
  tokensIssued: number;
  tokenRejected: number;
  vehiclesRequests: number;
  vehiclesServed: number;
  /** 401s of the vehicles endpoint by reason: missing, unknown, expired, revoked. */
  vehiclesRejected: Record<string, number>;
  /** Requests that followed a redirect elsewhere. */
  stolen: number;
  unexpected: number;
}

export async function partnerCounts(): Promise<PartnerCounts> {
  const c = await sandbox.counters();
  return {
    tokenRequests: c.token.total,
    tokensIssued: c.token.issued,
    tokenRejected: c.token.rejected,
    vehiclesRequests: c.vehicles.total,
    vehiclesServed: c.vehicles.served,
    vehiclesRejected: c.vehicles.rejected,
    stolen: c.steal.total,
    unexpected: c.unexpected,
  };
}

/** What PartnerCounts reads when the vehicles endpoint refused nothing. */
export const NO_REJECTIONS = { missing: 0, unknown: 0, expired: 0, revoked: 0 } as const;

/** PartnerCounts with every count 0 (nothing refused, stolen or stray) but those in `over`. */
export function partnerCountsWith(over: Partial<PartnerCounts>): PartnerCounts {
  return {
    tokenRequests: 0,
    tokensIssued: 0,
    tokenRejected: 0,
    vehiclesRequests: 0,
    vehiclesServed: 0,
    vehiclesRejected: NO_REJECTIONS,
    stolen: 0,
    unexpected: 0,
    ...over,
  };
}

// --- Vehicles endpoint: shapes, brute-force helpers ----------------------------------------

/** The allow-list of served vehicle fields (DESIGN.md), written out here, not imported from src. */
export const SERVED_VEHICLE_KEYS = [
  "buildSeries",
  "charging",
  "chargingCablePlugged",
  "fuelLevel",
  "fuelType",
  "imageUrl",
  "numberOfSeats",
  "numberPlate",
  "position",
  "primaryColor",
  "secondaryColor",
  "transmissionType",
  "vehicleName",
  "vin",
] as const;

/** A vehicle as served (or as the sandbox holds it, PIN included, before `redactForComparison`). */
export interface ServedVehicle {
  vin: string;
  position: { latitude: number; longitude: number };
  fuelType?: string;
  fuelLevel?: number;
  transmissionType?: string;
  numberOfSeats?: number;
  distanceM?: number;
  [key: string]: unknown;
}

/** The body of GET /v1/vehicles. */
export interface VehicleListBody {
  vehicles: ServedVehicle[];
  count: number;
  total: number;
  fetchedAt: string;
  stale: boolean;
}

/** The body of GET /v1/vehicles/{vin}. */
export interface VehicleBody {
  vehicle: ServedVehicle;
  fetchedAt: string;
  stale: boolean;
}

/** The sandbox fleet as the gateway should serve it: no fuelCardPin, sorted by VIN. */
export function redactForComparison(fleet: readonly Record<string, unknown>[]): ServedVehicle[] {
  return fleet
    .map((v) => {
      const { fuelCardPin: _pin, ...rest } = v;
      return rest as ServedVehicle;
    })
    .sort((a, b) => (a.vin < b.vin ? -1 : a.vin > b.vin ? 1 : 0));
}

/** Great-circle distance in metres (haversine, mean Earth radius), written independently of src. */
export function distanceM(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const R = 6_371_008.8;
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * R * Math.asin(Math.min(1, Math.sqrt(h)));
}
