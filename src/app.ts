/**
 * createApp: the Hono app, with no runtime imports. Everything platform-shaped arrives in
 * `c.env.deps` (per isolate) and `c.executionCtx` (per request).
 */

import type { Context, MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { methodNotAllowed } from "hono/method-not-allowed";
import { timingSafeEqual } from "hono/utils/buffer";
import { type Config, ConfigError } from "./config.ts";
import { docsRoutes } from "./docs/routes.ts";
import { AppError, problemResponse } from "./errors.ts";
import { sha256Hex } from "./hash.ts";
import type { AppEnv } from "./http/context.ts";
import { Hono } from "./http/hono.ts";
import { newRequestId } from "./http/request-id.ts";
import { mapRoutes } from "./map/routes.ts";
import type { Deps } from "./ports.ts";
import type { IsolateMemory } from "./vehicles/isolate-memory.ts";
import { vehicleRoutes } from "./vehicles/routes.ts";

/** Longest URL (path and query) we read; longer: 414. */
const MAX_URL_LENGTH = 4096;

/**
 * On Workers, Cloudflare sets `cf-ray` on every request it hands the Worker, so it names the
 * request in Cloudflare's own logs too. Anywhere else (Deno, Bun) the header is whatever the
 * client sent, at any length, and would go into every log line: there the id is generated.
 * `navigator.userAgent` is "Cloudflare-Workers" on Workers (global_navigator, on by default).
 */
const ON_WORKERS = typeof navigator !== "undefined" && navigator.userAgent === "Cloudflare-Workers";
/** A Ray ID: 16 hex digits, then the data centre (`-FRA`); anything else is not Cloudflare's. */
const CF_RAY = /^[0-9a-f]{16}(?:-[A-Z]{3,4})?$/;

function requestIdOf(cfRay: string | undefined): string {
  return ON_WORKERS && cfRay !== undefined && CF_RAY.test(cfRay) ? cfRay : newRequestId();
}

/**
 * How long an isolate reuses the gateway object's status for /health: a flood of /health costs
 * the object (which also serves every snapshot fill) at most one call per isolate this often.
 */
export const HEALTH_STATUS_TTL_MS = 3_000;
/** How long other /health requests wait for the one status call in flight before making their own. */
const HEALTH_STATUS_WAIT_MS = 5_000;
const HEALTH_STATUS_POLL_MS = 20;

/** The last status copy of an isolate: plain values only (no promise is shared across requests). */
interface StatusCopy {
  at?: number;
  ok?: boolean;
  gateway?: unknown;
  /** Epoch ms until which one request's status call is taken to be in flight. */
  fetchingUntil?: number;
}
const statusCopies = new WeakMap<IsolateMemory, StatusCopy>();

/**
 * The "hash" we give Hono's `timingSafeEqual` for API keys: the key itself. Its string comparison
 * is constant-time on its own (every character of the longer string, no early exit), so timing
 * says nothing about a near miss; by default it first hashes both sides with SHA-256, two
 * digests per configured key on every request (about 70-90 µs a key in workerd, against about
 * 4 µs without them), which add nothing for strings.
 */
const asIs = (s: string): string => s;

/** A non-reversible tag of an API key: rate-limit buckets per key, never the key in a log or counter. */
async function keyTag(key: string): Promise<string> {
  return (await sha256Hex(key)).slice(0, 16);
}

/**
 * Who is calling: with API keys on, `valid` (rate-limit bucket per key, by a hash) or `invalid`
 * (a missing or unknown key; bucket per client IP); `off` without keys.
 */
async function authenticate(c: Context<AppEnv>): Promise<{ caller: string; key: "valid" | "invalid" | "off" }> {
  const { apiKeys } = c.get("config");
  // The caller names a rate-limit bucket: nothing to read when there is neither a key nor a limiter.
  if (!apiKeys && !c.env.deps.rateLimit) return { caller: "anonymous", key: "off" };
  const ip = c.req.header("cf-connecting-ip") ?? "anonymous";
  if (!apiKeys) return { caller: ip, key: "off" };
  const key = c.req.header("x-api-key") ?? "";
  let ok = false;
  // Every key is compared, whichever matches.
  for (const k of apiKeys) ok = (await timingSafeEqual(key, k, asIs)) || ok;
  return ok ? { caller: `key:${await keyTag(key)}`, key: "valid" } : { caller: ip, key: "invalid" };
}

/** The per-caller limit (the Workers Rate Limiting binding), where the deployment has one. */
async function rateLimit(c: Context<AppEnv>, caller: string): Promise<void> {
  const limiter = c.env.deps.rateLimit;
  if (limiter && !(await limiter(caller))) throw new AppError("rate_limited", { retryAfterS: 60 });
}

/**
 * The gateway object's status, from this isolate's copy while it is younger than
 * HEALTH_STATUS_TTL_MS. One request refreshes it; requests meanwhile serve the older copy, or,
 * with none yet, poll for the new one (a plain value; no promise is shared across requests).
 */
async function gatewayStatus(deps: Deps): Promise<{ ok: boolean; gateway: unknown }> {
  let copy = statusCopies.get(deps.memory);
  if (copy === undefined) {
    copy = {};
    statusCopies.set(deps.memory, copy);
  }
  const fresh = () => copy.at !== undefined && deps.clock.now() - copy.at < HEALTH_STATUS_TTL_MS;
  const fetching = () => copy.fetchingUntil !== undefined && deps.clock.now() < copy.fetchingUntil;
  if (!fresh() && fetching()) {
    for (let waited = 0; copy.at === undefined && fetching() && waited < HEALTH_STATUS_WAIT_MS; ) {
      await new Promise((resolve) => setTimeout(resolve, HEALTH_STATUS_POLL_MS));
      waited += HEALTH_STATUS_POLL_MS;
    }
    if (copy.at !== undefined) return { ok: copy.ok ?? false, gateway: copy.gateway };
  }
  if (!fresh()) {
    copy.fetchingUntil = deps.clock.now() + HEALTH_STATUS_WAIT_MS;
    let ok = true;
    let gateway: unknown;
    try {
      gateway = await deps.gateway.status();
    } catch (err) {
      ok = false;
      gateway = { error: err instanceof AppError ? err.code : "gateway_unavailable" };
    }
    Object.assign(copy, { at: deps.clock.now(), ok, gateway, fetchingUntil: undefined });
  }
  return { ok: copy.ok ?? false, gateway: copy.gateway };
}

export function createApp(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  // One structured log line per request, and headers every answer carries.
  app.use(async (c, next) => {
    const deps = c.env.deps;
    const started = deps.clock.now();
    const requestId = requestIdOf(c.req.header("cf-ray"));
    c.set("requestId", requestId);
    c.set("logFields", {});
    await next();
    c.res.headers.set("x-content-type-options", "nosniff");
    const config = deps.config;
    // Routes and the CORS middleware both add to Vary (only with CORS on): one token once.
    const vary = !(config instanceof ConfigError) && config.corsOrigins.length > 0 ? c.res.headers.get("vary") : null;
    if (vary) c.res.headers.set("vary", [...new Set(vary.split(",").map((v) => v.trim().toLowerCase()))].join(", "));
    c.res.headers.set("x-request-id", requestId);
    // LOG_REQUESTS=errors keeps only answers that need a look (>= 400, or stale); the line costs
    // ~0.1 ms of CPU per request in workerd (BENCHMARKS.md). Config errors log on their own.
    const errorsOnly = !(config instanceof ConfigError) && config.logRequests === "errors";
    if (errorsOnly && c.res.status < 400 && c.get("logFields").stale !== true) return;
    deps.log.log(c.res.status >= 500 ? "warn" : "info", "request", {
      requestId,
      method: c.req.method,
      route: c.req.routePath,
      status: c.res.status,
      durationMs: deps.clock.now() - started,
      ...c.get("logFields"),
    });
  });

  app.use(
    methodNotAllowed({
      app,
      onMethodNotAllowed: (c, methods) => {
        const allow = methods.join(", ");
        return problemResponse(new AppError("method_not_allowed", { detail: `allowed: ${allow}` }), {
          instance: c.req.path,
          headers: { allow },
        });
      },
    }),
  );

  // Configuration, parsed once per isolate: a bad setting is a 500 that names it (never its value).
  app.use(async (c, next) => {
    const config = c.env.deps.config;
    if (config instanceof ConfigError) {
      c.env.deps.log.log("error", "config_invalid", { settings: config.settings });
      if (c.req.path === "/health") {
        return c.json({ status: "misconfigured", config: { ok: false, invalid: config.settings } }, 503, {
          "cache-control": "no-store",
        });
      }
      throw new AppError("config_invalid", {
        detail: `invalid or missing settings: ${config.settings.join(", ")}`,
        extra: { settings: config.settings },
      });
    }
    c.set("config", config);
    return next();
  });

  // CORS only for configured origins; no wildcard unless configured as "*". A request from any
  // other origin (or none) gets no CORS header at all, and its preflight a bare 204 that a
  // browser cannot use. Before the input checks, so a configured origin can read their errors.
  // Hono's cors middleware, built once per configuration (one per deployment and isolate), not
  // on every request.
  const corsByConfig = new WeakMap<Config, MiddlewareHandler>();
  const corsHeaders = (config: Config): MiddlewareHandler => {
    let handler = corsByConfig.get(config);
    if (handler === undefined) {
      const origins = config.corsOrigins;
      handler = cors({
        origin: origins.includes("*") ? "*" : (o) => (origins.includes(o) ? o : null),
        allowMethods: ["GET", "HEAD", "OPTIONS"],
        allowHeaders: ["x-api-key", "if-none-match"],
        exposeHeaders: ["etag", "cache-status", "age", "retry-after", "x-request-id"],
        maxAge: 600,
      });
      corsByConfig.set(config, handler);
    }
    return handler;
  };
  app.use(async (c, next) => {
    const config = c.get("config");
    const origins = config.corsOrigins;
    if (origins.length === 0) return next();
    const origin = c.req.header("origin");
    if (!origins.includes("*") && (origin === undefined || !origins.includes(origin))) {
      if (c.req.method === "OPTIONS") c.res = c.body(null, 204);
      else await next();
    } else {
      // Hono's cors answers a preflight by returning a response rather than setting c.res.
      const preflight = await corsHeaders(config)(c, next);
      if (preflight) c.res = preflight;
    }
    // Every answer depends on Origin once CORS is on, not only those to allowed origins: else a
    // shared cache (RFC 9111 §4.1) could store the copy without CORS headers and hand it to the
    // allowed app. The first middleware folds duplicate Vary tokens.
    c.res.headers.append("vary", "Origin");
  });

  // Bad requests before any work: oversized URLs, bodies on read-only routes. Only GET and HEAD
  // are checked for a body: any other method is answered 405 (or 404) without reading it, since
  // the method is the client's first mistake.
  app.use(async (c, next) => {
    const url = c.req.url;
    const pathAndQuery = url.slice(url.indexOf("/", url.indexOf("//") + 2));
    if (pathAndQuery.length > MAX_URL_LENGTH) throw new AppError("query_too_large");
    const method = c.req.method;
    const length = c.req.header("content-length");
    const hasBody = (length !== undefined && length !== "0") || c.req.header("transfer-encoding") !== undefined;
    if (hasBody && (method === "GET" || method === "HEAD")) {
      throw new AppError("body_not_allowed", { detail: "requests to this API carry no body" });
    }
    await next();
  });

  const guard: MiddlewareHandler<AppEnv> = async (c, next) => {
    // A preflight carries no credentials (Fetch standard, CORS-preflight request).
    if (c.req.method === "OPTIONS") return next();
    const { caller, key } = await authenticate(c);
    if (key === "invalid") {
      throw new AppError("unauthorized", {
        detail: "send a valid key in the x-api-key header",
        extra: { authentication: "x-api-key" },
      });
    }
    await rateLimit(c, caller);
    await next();
  };
  app.use("/v1/*", guard);

  app.route("/v1/vehicles", vehicleRoutes());

  // Liveness for anyone, from this isolate alone; the detailed state (partner URL, auth method,
  // token and breaker state, last error) only to a valid key when keys are on, open when they
  // are off. Rate-limited like the API: a flood of /health is not free.
  app.get("/health", async (c) => {
    const deps = c.env.deps;
    const config = c.get("config");
    const { caller, key } = await authenticate(c);
    await rateLimit(c, caller);
    if (key === "invalid") return c.json({ status: "ok" }, 200, { "cache-control": "no-store" });
    const { ok, gateway } = await gatewayStatus(deps);
    return c.json(
      {
        status: ok ? "ok" : "degraded",
        config: {
          ok: true,
          partnerApi: config.apiUrl,
          clientAuth: config.clientAuth,
          vehiclesTtlS: config.vehiclesTtlS,
          vehiclesStaleS: config.vehiclesStaleS,
          apiKeys: config.apiKeys !== undefined,
          rateLimit: deps.rateLimit !== undefined,
          cache: deps.cache !== undefined,
        },
        gateway,
        isolate: { ...deps.memory.counters, cacheApi: deps.memory.l2?.state ?? "unknown" },
      },
      ok ? 200 : 503,
      { "cache-control": "no-store" },
    );
  });

  app.route("/", docsRoutes());
  app.route("/", mapRoutes());

  // OPTIONS on a known route without an allowed CORS origin: what it allows (RFC 9110 §9.3.7).
  for (const path of ["/v1/vehicles", "/v1/vehicles/:vin", "/health", "/openapi.json", "/docs", "/map"]) {
    app.options(path, (c) => c.body(null, 204, { allow: "GET, HEAD, OPTIONS" }));
  }

  app.notFound((c) => problemResponse(new AppError("not_found"), { instance: c.req.path }));

  // The one error mapping point: typed errors by code, anything else a generic 500 (detail to logs).
  app.onError((err, c) => {
    if (!(err instanceof AppError)) {
      c.env.deps.log.log("error", "unhandled_error", {
        requestId: c.get("requestId"),
        error: err instanceof Error ? `${err.name}: ${err.message}` : "unknown",
      });
    } else if (err.status >= 500) {
      c.get("logFields").error = err.code;
    }
    // `instance` echoes the client's path: not when the path itself is what is too long (414).
    return problemResponse(err, c.req.path.length <= MAX_URL_LENGTH ? { instance: c.req.path } : {});
  });

  return app;
}
