/**
 * createApp: the Hono app, with no runtime imports. Everything platform-shaped arrives in
 * `c.env.deps` (per isolate) and `c.executionCtx` (per request).
 */

import { Hono, type MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { methodNotAllowed } from "hono/method-not-allowed";
import { type Config, ConfigError } from "./config.ts";
import type { Deps } from "./deps.ts";
import { docsRoutes } from "./docs/routes.ts";
import { AppError, problemResponse } from "./errors.ts";
import { sha256Hex } from "./http/upstream.ts";
import { mapRoutes } from "./map/routes.ts";
import { vehicleRoutes } from "./vehicles/routes.ts";

export interface AppEnv {
  Bindings: { deps: Deps };
  Variables: { config: Config; requestId: string; logFields: Record<string, unknown> };
}

/** Longest URL (path and query) we read; longer: 414. */
const MAX_URL_LENGTH = 4096;

/** waitUntil where the runtime has one, else let the promise run (Deno and Bun keep the process alive). */
export function waitUntilOf(c: {
  executionCtx: { waitUntil(p: Promise<unknown>): void };
}): (p: Promise<unknown>) => void {
  try {
    const ctx = c.executionCtx;
    return (p) => ctx.waitUntil(p);
  } catch {
    return (p) => {
      p.catch(() => {});
    };
  }
}

/** Constant-time comparison of two strings (API keys), so timing says nothing about a near miss. */
function safeEqual(a: string, b: string): boolean {
  const ea = new TextEncoder().encode(a);
  const eb = new TextEncoder().encode(b);
  let diff = ea.length ^ eb.length;
  for (let i = 0; i < Math.max(ea.length, eb.length); i++) diff |= (ea[i % ea.length] ?? 0) ^ (eb[i % eb.length] ?? 0);
  return diff === 0;
}

/** A non-reversible tag of an API key: rate-limit buckets per key, never the key in a log or counter. */
async function keyTag(key: string): Promise<string> {
  return (await sha256Hex(key)).slice(0, 16);
}

export function createApp(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  // One structured log line per request, and headers every answer carries.
  app.use(async (c, next) => {
    const deps = c.env.deps;
    const started = deps.clock.now();
    const requestId = c.req.header("cf-ray") ?? crypto.randomUUID();
    c.set("requestId", requestId);
    c.set("logFields", {});
    await next();
    c.res.headers.set("x-content-type-options", "nosniff");
    // Routes and the CORS middleware both add to Vary: one token once.
    const vary = c.res.headers.get("vary");
    if (vary) c.res.headers.set("vary", [...new Set(vary.split(",").map((v) => v.trim().toLowerCase()))].join(", "));
    c.res.headers.set("x-request-id", requestId);
    // LOG_REQUESTS=errors keeps only answers that need a look (>= 400, or stale); the line costs
    // ~0.1 ms of CPU per request in workerd (BENCHMARKS.md). Config errors log on their own.
    const config = deps.config;
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
    await next();
  });

  // CORS only for configured origins; no wildcard unless configured as "*". A request from any
  // other origin (or none) gets no CORS header at all, and its preflight a bare 204 that a
  // browser cannot use. Before the input checks, so a configured origin can read their errors.
  app.use(async (c, next) => {
    const origins = c.get("config").corsOrigins;
    if (origins.length === 0) return next();
    const origin = c.req.header("origin");
    if (!origins.includes("*") && (origin === undefined || !origins.includes(origin))) {
      if (c.req.method === "OPTIONS") return c.body(null, 204);
      return next();
    }
    return cors({
      origin: origins.includes("*") ? "*" : (o) => (origins.includes(o) ? o : null),
      allowMethods: ["GET", "HEAD", "OPTIONS"],
      allowHeaders: ["x-api-key", "if-none-match"],
      exposeHeaders: ["etag", "cache-status", "age", "retry-after", "x-request-id"],
      maxAge: 600,
    })(c, next);
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
    const { apiKeys } = c.get("config");
    const deps = c.env.deps;
    let caller = c.req.header("cf-connecting-ip") ?? "anonymous";
    if (apiKeys) {
      const key = c.req.header("x-api-key") ?? "";
      let ok = false;
      for (const k of apiKeys) ok = safeEqual(key, k) || ok;
      if (!ok) {
        throw new AppError("unauthorized", {
          detail: "send a valid key in the x-api-key header",
          extra: { authentication: "x-api-key" },
        });
      }
      caller = `key:${await keyTag(key)}`;
    }
    if (deps.rateLimit && !(await deps.rateLimit(caller))) {
      throw new AppError("rate_limited", { retryAfterS: 60 });
    }
    await next();
  };
  app.use("/v1/*", guard);

  app.route("/v1/vehicles", vehicleRoutes());

  app.get("/health", async (c) => {
    const deps = c.env.deps;
    const config = c.get("config");
    let gateway: unknown;
    let ok = true;
    try {
      gateway = await deps.gateway.status();
    } catch (err) {
      ok = false;
      gateway = { error: err instanceof AppError ? err.code : "gateway_unavailable" };
    }
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
        isolate: deps.memory.counters,
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
