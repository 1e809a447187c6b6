/**
 * GET|HEAD /v1/vehicles and /v1/vehicles/{vin}: filters are computed here, at the edge, over the
 * cached snapshot; they are never sent to the partner and never part of a shared cache key.
 */

import type { Context } from "hono";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import { fnv1a32 } from "../hash.ts";
import { ifNoneMatchMatches } from "../http/conditional.ts";
import { type AppEnv, waitUntilOf } from "../http/context.ts";
import { Hono } from "../http/hono.ts";
import { findVin, isDamagedSnapshot, type Prepared } from "./prepared.ts";
import { canonicalQueryKey, parseVehicleQuery, parseVin } from "./query.ts";
import { queryVehicles, serializeVehicle, vehiclesBody } from "./snapshot.ts";
import { discardDamaged, loadSnapshot, type Served } from "./tiers.ts";

/** Which tiers a benchmark may skip (only when ALLOW_TIER_BYPASS is set). */
function bypassOf(c: Context<AppEnv>): { memory?: boolean; cache?: boolean } | undefined {
  if (!c.env.deps.allowTierBypass) return undefined;
  const h = c.req.header("x-gateway-bypass");
  if (!h) return undefined;
  const parts = h.split(",").map((s) => s.trim());
  return { memory: parts.includes("memory"), cache: parts.includes("cache") };
}

async function serve(c: Context<AppEnv>): Promise<Served> {
  const deps = c.env.deps;
  const config = c.get("config");
  const bypass = bypassOf(c);
  const s = await loadSnapshot({
    deps,
    config,
    waitUntil: waitUntilOf(c),
    ...(bypass ? { bypass } : {}),
  });
  const counters = deps.memory.counters;
  if (s.tier === "memory") counters.memoryHits++;
  if (s.stale) counters.staleServed++;
  Object.assign(c.get("logFields"), {
    tier: s.tier,
    stale: s.stale,
    cacheStatus: s.cacheStatus,
    ...(s.gatewayMs === undefined ? {} : { gatewayMs: s.gatewayMs }),
    ...(s.error ? { upstreamError: s.error.code } : {}),
  });
  return s;
}

/**
 * The snapshot for this request and what `use` makes of it. `use` is where items are first read
 * (queryVehicles, findVin), and prepared.ts checks their boundaries then: a damaged snapshot is
 * dropped (tiers.ts `discardDamaged`) and the request served once more from a fresh fill, so a
 * damaged copy costs a refill, never a 500.
 */
async function serveWith<T>(c: Context<AppEnv>, use: (p: Prepared) => T): Promise<{ s: Served; out: T }> {
  const s = await serve(c);
  try {
    return { s, out: use(s.snapshot) };
  } catch (err) {
    if (!isDamagedSnapshot(err)) throw err;
    discardDamaged(c.env.deps, s.snapshot);
    const again = await serve(c);
    return { s: again, out: use(again.snapshot) };
  }
}

/** Cache-Control for downstream caches: shared only when no API key is needed (RFC 9111 §5.2.2). */
function cacheControl(config: Config, s: Served): string {
  const scope = config.apiKeys ? "private" : "public";
  const left = Math.max(0, config.vehiclesTtlS - s.ageS);
  if (s.stale) return `${scope}, max-age=0, must-revalidate`;
  return `${scope}, max-age=${left}, stale-while-revalidate=${config.vehiclesStaleS}, stale-if-error=${config.vehiclesStaleS}`;
}

/** Vary of a vehicles answer, one string per configuration. */
const varyByConfig = new WeakMap<Config, string>();
function varyOf(config: Config): string {
  let vary = varyByConfig.get(config);
  if (vary === undefined) {
    vary = [
      "accept-encoding",
      // With CORS on, answers differ by Origin (CORS headers only for configured ones).
      ...(config.corsOrigins.length ? ["origin"] : []),
      ...(config.apiKeys ? ["x-api-key"] : []),
    ].join(", ");
    varyByConfig.set(config, vary);
  }
  return vary;
}

/**
 * The query string of a request URL as sent ("" for none, and for a lone "?" as `URL.search`
 * gives): a slice of the string, not a `new URL` parse on every request. The runtime hands the
 * Worker a serialized URL, which carries no fragment.
 */
function searchOf(url: string): string {
  const q = url.indexOf("?");
  return q < 0 || q === url.length - 1 ? "" : url.slice(q);
}

function respond(
  c: Context<AppEnv>,
  s: Served,
  etag: string,
  body: () => Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array<ArrayBuffer>>,
  extra?: Record<string, string>,
): Response {
  const config = c.get("config");
  const headers = new Headers({
    "cache-status": s.cacheStatus,
    age: String(s.ageS),
    etag,
    "cache-control": cacheControl(config, s),
    vary: varyOf(config),
    ...extra,
  });
  if (ifNoneMatchMatches(c.req.header("if-none-match"), etag)) {
    c.env.deps.memory.counters.notModified++;
    return new Response(null, { status: 304, headers });
  }
  headers.set("content-type", "application/json; charset=utf-8");
  // HEAD: the same headers, no body built (RFC 9110 §9.3.2).
  if (c.req.method === "HEAD") return new Response(null, { status: 200, headers });
  return new Response(body(), { status: 200, headers });
}

/** A weak validator for a filtered view: the snapshot's validator and the canonical query. */
function viewEtag(snapshotEtag: string, view: string): string {
  // The snapshot's validator is strong (`"hex"`, prepared.ts): its opaque part is between the quotes.
  const opaque = snapshotEtag.startsWith('"')
    ? snapshotEtag.slice(1, -1)
    : snapshotEtag.replace(/^W\//, "").replaceAll('"', "");
  return `W/"${opaque}-${fnv1a32(view).toString(16)}"`;
}

export function vehicleRoutes(): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.get("/", async (c) => {
    const config = c.get("config");
    // Parse before any tier is touched: bad input costs nothing upstream. The raw query string, so
    // its length is checked as sent (`?&&&…` parses to nothing, `%41` to one character).
    const query = parseVehicleQuery(searchOf(c.req.url), { maxLimit: config.vehiclesMaxLimit });
    // The result (ids and the next cursor) is cheap; the body is built only for a GET that sends one.
    const { s, out: result } = await serveWith(c, (p) => queryVehicles(p, query));
    const etag = viewEtag(s.snapshot.etag, `${canonicalQueryKey(query)}|stale=${s.stale}`);
    const next =
      result.lastVin === undefined
        ? undefined
        : `/v1/vehicles?${canonicalQueryKey({ ...query, after: result.lastVin })}`;
    // RFC 8288: the next page, as a URI reference relative to this one.
    const link = next === undefined ? undefined : { link: `<${next}>; rel="next"` };
    return respond(
      c,
      s,
      etag,
      () => vehiclesBody(s.snapshot, result, { stale: s.stale, ...(next === undefined ? {} : { next }) }),
      link,
    );
  });

  r.get("/:vin", async (c) => {
    if (searchOf(c.req.url) !== "") {
      throw new AppError("invalid_parameter", { detail: "this route takes no query parameters" });
    }
    const vin = parseVin(c.req.param("vin"));
    const { s, out: i } = await serveWith(c, (p) => findVin(p, vin));
    if (i < 0) throw new AppError("vehicle_not_found", { detail: "no vehicle with this VIN in the current fleet" });
    return respond(c, s, viewEtag(s.snapshot.etag, `vin=${vin}|stale=${s.stale}`), () =>
      serializeVehicle(s.snapshot, i, { stale: s.stale }),
    );
  });

  return r;
}
