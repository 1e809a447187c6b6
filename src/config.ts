/**
 * Settings, parsed once with every default filled. A bad or missing setting is reported by
 * name (never by value: some are secrets), all at once, in one ConfigError.
 */

import { type MapTiles, parseMapTiles } from "./map/tiles.ts";

type ClientAuthMethod = "client_secret_post" | "client_secret_basic";

/**
 * Where replicas of the Deno/Bun server share the token and the snapshot (GATEWAY_STORE):
 * `memory` (each process alone), `kv:<path>` (Deno KV; empty path: the default database, Deno
 * Deploy's), `redis://…` or `rediss://…` (Redis, Bun's client). The Worker ignores it.
 */
type GatewayStore = { kind: "memory" } | { kind: "kv"; path: string | undefined } | { kind: "redis"; url: string };

export interface Config {
  /** Keycloak token endpoint (RFC 6749 §3.2). */
  tokenUrl: string;
  /** Partner API origin (and optional base path); vehicles live at `${apiUrl}/api/rental/partner/vehicles`. */
  apiUrl: string;
  clientId: string;
  clientSecret: string;
  /** RFC 6749 §2.3.1: `client_secret_post` (the partner's documented way) or `client_secret_basic`. */
  clientAuth: ClientAuthMethod;
  /** Sent only when set. */
  scope: string | undefined;
  /** Lifetime assumed when the token response has no `expires_in` (RFC 6749 §5.1 makes it optional). */
  tokenDefaultLifetimeS: number;
  /** Covers headers and body of one token request. */
  tokenTimeoutMs: number;
  /** Covers headers and body of one partner request. */
  partnerTimeoutMs: number;
  /** Largest partner body we read, in bytes. */
  partnerMaxBytes: number;
  /** Most vehicles we accept in one partner answer. */
  partnerMaxVehicles: number;
  /** How long a snapshot is fresh. */
  vehiclesTtlS: number;
  /** How long past freshness a snapshot may still be served (stale-while-revalidate, stale-if-error). */
  vehiclesStaleS: number;
  /** Upper bound of the `limit` query parameter, and the default when it is absent. */
  vehiclesMaxLimit: number;
  /** Origins allowed by CORS; `["*"]` only when configured so. Empty: no CORS headers at all. */
  corsOrigins: string[];
  /** Accepted API keys (`x-api-key`); undefined: no key required. */
  apiKeys: ReadonlySet<string> | undefined;
  /** Durable Object location hint for the gateway object. */
  gatewayLocationHint: string | undefined;
  /** `all`: one log line per request; `errors`: only answers >= 400 and stale ones. */
  logRequests: "all" | "errors";
  /** MAP_TILES_URL and MAP_TILES_ATTRIBUTION for /map; undefined: a plain background. */
  mapTiles?: MapTiles | undefined;
  /**
   * Shared store of the Deno/Bun replicas (GATEWAY_STORE; parseConfig always fills it, absent means
   * memory). A Redis URL may hold a password: never logged.
   */
  gatewayStore?: GatewayStore;
}

/** Names and defaults, for the README's config table and for errors. */
export const DEFAULTS = {
  PARTNER_TOKEN_URL: "https://partner.share-now.com/auth/realms/partner/protocol/openid-connect/token",
  PARTNER_API_URL: "https://partner.share-now.com",
  PARTNER_CLIENT_AUTH: "client_secret_post",
  PARTNER_TOKEN_DEFAULT_EXPIRES_S: 300,
  PARTNER_TOKEN_TIMEOUT_MS: 5_000,
  PARTNER_TIMEOUT_MS: 10_000,
  PARTNER_MAX_BYTES: 16 * 1024 * 1024,
  PARTNER_MAX_VEHICLES: 50_000,
  VEHICLES_TTL_S: 30,
  VEHICLES_STALE_S: 300,
  VEHICLES_MAX_LIMIT: 5_000,
} as const;

// Durable Object location hints (Cloudflare docs, "Data location"); apac-ne and apac-se since June 2026.
const LOCATION_HINTS = ["wnam", "enam", "sam", "weur", "eeur", "apac", "apac-ne", "apac-se", "oc", "afr", "me"];

/** One error for every bad setting; it names them, never their values. */
export class ConfigError extends Error {
  readonly settings: string[];
  constructor(problems: { setting: string; reason: string }[]) {
    super(`invalid configuration: ${problems.map((p) => `${p.setting} (${p.reason})`).join("; ")}`);
    this.name = "ConfigError";
    this.settings = problems.map((p) => p.setting);
  }
}

type Env = Record<string, unknown>;

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * Parses the settings. Throws ConfigError naming every bad setting.
 * Plain `http:` is accepted only for loopback hosts (the local sandbox).
 */
export function parseConfig(env: Env): Config {
  const problems: { setting: string; reason: string }[] = [];
  const bad = (setting: string, reason: string) => problems.push({ setting, reason });

  const str = (name: string): string | undefined => {
    const v = env[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string") {
      bad(name, "must be a string");
      return undefined;
    }
    const t = v.trim();
    return t === "" ? undefined : t;
  };

  const url = (name: string, fallback: string): string => {
    const raw = str(name) ?? fallback;
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      bad(name, "must be an absolute URL");
      return fallback;
    }
    if (u.protocol !== "https:" && !(u.protocol === "http:" && isLoopback(u.hostname))) {
      bad(name, "must use https (http only for loopback)");
    }
    if (u.username || u.password) bad(name, "must not carry credentials");
    if (u.search || u.hash) bad(name, "must not have a query or fragment");
    return u.href.replace(/\/+$/, "");
  };

  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = str(name);
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw)) {
      bad(name, "must be a whole number");
      return fallback;
    }
    const n = Number(raw);
    if (n < min || n > max) {
      bad(name, `must be between ${min} and ${max}`);
      return fallback;
    }
    return n;
  };

  const secret = (name: string): string => {
    // A secret is not trimmed: a space may be part of it. Only absence is an error.
    const v = env[name];
    if (typeof v !== "string" || v === "") {
      bad(name, v === undefined || v === "" ? "is not set" : "must be a string");
      return "";
    }
    return v;
  };

  const tokenUrl = url("PARTNER_TOKEN_URL", DEFAULTS.PARTNER_TOKEN_URL);
  const apiUrl = url("PARTNER_API_URL", DEFAULTS.PARTNER_API_URL);
  const clientId = secret("PARTNER_CLIENT_ID");
  const clientSecret = secret("PARTNER_CLIENT_SECRET");

  const authRaw = str("PARTNER_CLIENT_AUTH") ?? DEFAULTS.PARTNER_CLIENT_AUTH;
  let clientAuth: ClientAuthMethod = "client_secret_post";
  if (authRaw === "client_secret_post" || authRaw === "client_secret_basic") clientAuth = authRaw;
  else bad("PARTNER_CLIENT_AUTH", "must be client_secret_post or client_secret_basic");

  const scope = str("PARTNER_SCOPE");
  // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), space-delimited.
  if (scope !== undefined && !/^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$/.test(scope)) {
    bad("PARTNER_SCOPE", "must be space-separated scope tokens (RFC 6749 §3.3)");
  }

  const vehiclesTtlS = int("VEHICLES_TTL_S", DEFAULTS.VEHICLES_TTL_S, 1, 3600);
  const vehiclesStaleS = int("VEHICLES_STALE_S", DEFAULTS.VEHICLES_STALE_S, 0, 86_400);

  const corsRaw = str("CORS_ORIGINS");
  const corsOrigins: string[] = [];
  for (const o of (corsRaw ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)) {
    if (o === "*") corsOrigins.push(o);
    else {
      try {
        const u = new URL(o);
        if (u.origin !== o.replace(/\/$/, "")) throw new Error("not an origin");
        corsOrigins.push(u.origin);
      } catch {
        bad("CORS_ORIGINS", "must be a comma-separated list of origins (scheme://host[:port]) or *");
        break;
      }
    }
  }

  const keysRaw = env.API_KEYS;
  let apiKeys: Set<string> | undefined;
  if (keysRaw !== undefined && keysRaw !== "") {
    if (typeof keysRaw !== "string") bad("API_KEYS", "must be a string");
    else {
      const keys = keysRaw
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      if (keys.length === 0 || keys.some((k) => k.length < 16))
        bad("API_KEYS", "must be comma-separated keys of 16 or more characters");
      else apiKeys = new Set(keys);
    }
  }

  const hint = str("GATEWAY_LOCATION_HINT");
  if (hint !== undefined && !LOCATION_HINTS.includes(hint))
    bad("GATEWAY_LOCATION_HINT", `must be one of ${LOCATION_HINTS.join(", ")}`);

  const logRaw = str("LOG_REQUESTS") ?? "all";
  if (logRaw !== "all" && logRaw !== "errors") bad("LOG_REQUESTS", "must be all or errors");

  const map = parseMapTiles(str("MAP_TILES_URL"), str("MAP_TILES_ATTRIBUTION"));
  if ("problem" in map) bad(map.problem.setting, map.problem.reason);
  const storeRaw = str("GATEWAY_STORE") ?? "memory";
  let gatewayStore: GatewayStore = { kind: "memory" };
  if (storeRaw.startsWith("kv:")) gatewayStore = { kind: "kv", path: storeRaw.slice(3).trim() || undefined };
  else if (/^rediss?:\/\/[^/?#]/.test(storeRaw) && URL.canParse(storeRaw))
    gatewayStore = { kind: "redis", url: storeRaw };
  else if (storeRaw !== "memory") bad("GATEWAY_STORE", "must be memory, kv:<path> (Deno KV) or redis://host:port");

  const config: Config = {
    tokenUrl,
    apiUrl,
    clientId,
    clientSecret,
    clientAuth,
    scope,
    tokenDefaultLifetimeS: int("PARTNER_TOKEN_DEFAULT_EXPIRES_S", DEFAULTS.PARTNER_TOKEN_DEFAULT_EXPIRES_S, 1, 86_400),
    tokenTimeoutMs: int("PARTNER_TOKEN_TIMEOUT_MS", DEFAULTS.PARTNER_TOKEN_TIMEOUT_MS, 100, 20_000),
    partnerTimeoutMs: int("PARTNER_TIMEOUT_MS", DEFAULTS.PARTNER_TIMEOUT_MS, 100, 25_000),
    partnerMaxBytes: int("PARTNER_MAX_BYTES", DEFAULTS.PARTNER_MAX_BYTES, 1024, 100 * 1024 * 1024),
    partnerMaxVehicles: int("PARTNER_MAX_VEHICLES", DEFAULTS.PARTNER_MAX_VEHICLES, 1, 1_000_000),
    vehiclesTtlS,
    vehiclesStaleS,
    vehiclesMaxLimit: int("VEHICLES_MAX_LIMIT", DEFAULTS.VEHICLES_MAX_LIMIT, 1, 100_000),
    corsOrigins,
    apiKeys,
    gatewayLocationHint: hint,
    logRequests: logRaw === "errors" ? "errors" : "all",
    mapTiles: "tiles" in map ? map.tiles : undefined,
    gatewayStore,
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

const parsed = new WeakMap<object, Config | ConfigError>();

/** parseConfig, once per env object (Workers pass the same env object to every request of an isolate). */
export function configFor(env: Env): Config | ConfigError {
  let c = parsed.get(env);
  if (!c) {
    try {
      c = parseConfig(env);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      c = e;
    }
    parsed.set(env, c);
  }
  return c;
}
