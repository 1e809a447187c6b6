/**
 * GET|HEAD /v1/vehicles and /v1/vehicles/{vin}: filters are computed here, at the edge, over the
 * cached snapshot; they are never sent to the partner and never part of a shared cache key.
 */

import { type Context, Hono } from "hono";
import type { AppEnv } from "../app.ts";
import { waitUntilOf } from "../app.ts";
import type { Config } from "../config.ts";
import type { SnapshotEnvelope } from "../deps.ts";
import { AppError } from "../errors.ts";
import { fnv1a32 } from "../hash.ts";
import { canonicalQueryKey, hasFilters, parseVehicleQuery, parseVin } from "./query.ts";
import { queryVehicles, serializeFullList, serializeVehicle, serializeVehicles } from "./snapshot.ts";
import { loadSnapshot, type Served } from "./tiers.ts";

/** Which tiers a benchmark may skip (only when ALLOW_TIER_BYPASS is set). */
function bypassOf(c: Context<AppEnv>): { memory?: boolean; cache?: boolean } | undefined {
  const h = c.req.header("x-gateway-bypass");
  if (!h || !c.env.deps.allowTierBypass) return undefined;
  const parts = h.split(",").map((s) => s.trim());
  return { memory: parts.includes("memory"), cache: parts.includes("cache") };
}

async function serve(c: Context<AppEnv>, needsSnapshot?: (envelope: SnapshotEnvelope) => boolean): Promise<Served> {
  const deps = c.env.deps;
  const config = c.get("config");
  const bypass = bypassOf(c);
  const s = await loadSnapshot({
    deps,
    config,
    waitUntil: waitUntilOf(c),
    ...(bypass ? { bypass } : {}),
    ...(needsSnapshot ? { needsSnapshot } : {}),
  });
  const counters = deps.memory.counters;
  if (s.tier === "memory") counters.memoryHits++;
  else if (s.tier === "cache") counters.cacheHits++;
  else counters.gatewayCalls++;
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

/** Cache-Control for downstream caches: shared only when no API key is needed (RFC 9111 §5.2.2). */
function cacheControl(config: Config, s: Served): string {
  const scope = config.apiKeys ? "private" : "public";
  const left = Math.max(0, config.vehiclesTtlS - s.ageS);
  if (s.stale) return `${scope}, max-age=0, must-revalidate`;
  return `${scope}, max-age=${left}, stale-while-revalidate=${config.vehiclesStaleS}, stale-if-error=${config.vehiclesStaleS}`;
}

/** If-None-Match (RFC 9110 §13.1.2): weak comparison, `*` matches any current representation. */
function matches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  const bare = (t: string) => t.trim().replace(/^W\//, "");
  if (ifNoneMatch.trim() === "*") return true;
  return ifNoneMatch.split(",").some((t) => bare(t) === bare(etag));
}

function respond(c: Context<AppEnv>, s: Served, etag: string, body: () => string): Response {
  const config = c.get("config");
  const headers = new Headers({
    "cache-status": s.cacheStatus,
    age: String(s.ageS),
    etag,
    "cache-control": cacheControl(config, s),
    // With CORS on, answers differ by Origin (CORS headers only for configured ones).
    vary: [
      "accept-encoding",
      ...(config.corsOrigins.length ? ["origin"] : []),
      ...(config.apiKeys ? ["x-api-key"] : []),
    ].join(", "),
  });
  if (matches(c.req.header("if-none-match"), etag)) {
    c.env.deps.memory.counters.notModified++;
    return new Response(null, { status: 304, headers });
  }
  headers.set("content-type", "application/json; charset=utf-8");
  return new Response(body(), { status: 200, headers });
}

/** A weak validator for a filtered view: the snapshot's validator and the canonical query. */
function viewEtag(snapshotEtag: string, view: string): string {
  return `W/"${snapshotEtag.replace(/^W\//, "").replaceAll('"', "")}-${fnv1a32(view).toString(16)}"`;
}

export function vehicleRoutes(): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.get("/", async (c) => {
    const config = c.get("config");
    // Parse before any tier is touched: bad input costs nothing upstream. The raw query string, so
    // its length is checked as sent (`?&&&…` parses to nothing, `%41` to one character).
    const query = parseVehicleQuery(new URL(c.req.url).search, { maxLimit: config.vehiclesMaxLimit });
    // The full list (no filter, a limit of at least the count) is the stored text spliced into
    // the wrapper: an L2 hit then needs no parse. HEAD sends no body, and a 304 needs only the ETag.
    const filtered = hasFilters(query);
    const full = (env: SnapshotEnvelope) => !filtered && query.limit >= env.count;
    const head = c.req.method === "HEAD";
    const s = await serve(c, (env) => !head && !full(env));
    const etag = viewEtag(s.envelope.etag, `${canonicalQueryKey(query)}|stale=${s.stale}`);
    return respond(c, s, etag, () => {
      if (full(s.envelope)) return serializeFullList(s.envelope, { stale: s.stale });
      const snapshot = s.snapshot();
      const result = queryVehicles(snapshot, query);
      return serializeVehicles(snapshot, result, { stale: s.stale, query });
    });
  });

  r.get("/:vin", async (c) => {
    if (new URL(c.req.url).search !== "") {
      throw new AppError("invalid_parameter", { detail: "this route takes no query parameters" });
    }
    const vin = parseVin(c.req.param("vin"));
    const s = await serve(c);
    const snapshot = s.snapshot();
    const vehicle = snapshot.byVin.get(vin);
    if (!vehicle) throw new AppError("vehicle_not_found", { detail: "no vehicle with this VIN in the current fleet" });
    return respond(c, s, viewEtag(snapshot.etag, `vin=${vin}|stale=${s.stale}`), () =>
      serializeVehicle(snapshot, vehicle, { stale: s.stale }),
    );
  });

  return r;
}
