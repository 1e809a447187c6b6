/**
 * GET|HEAD /v1/vehicles and /v1/vehicles/{vin}: filters are computed here, at the edge, over the
 * cached snapshot; they are never sent to the partner and never part of a shared cache key.
 */

import type { Context } from "hono";
import { JSON_TYPE, type ResponseBody } from "../cache/response-entry.ts";
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import { fnv1a32 } from "../hash.ts";
import { ifNoneMatchMatches } from "../http/conditional.ts";
import { type AppEnv, waitUntilOf } from "../http/context.ts";
import { Hono } from "../http/hono.ts";
import { findVin, isDamagedSnapshot, type Prepared } from "./prepared.ts";
import { canonicalQueryKey, parseVehicleQuery, parseVin } from "./query.ts";
import { queryVehicles, serializeVehicle, vehiclesBody } from "./snapshot.ts";
import {
  type Bypass,
  type CachedAnswer,
  discardDamaged,
  loadTiers,
  type Served,
  storeAnswer,
  type TierContext,
} from "./tiers.ts";

/** Which tiers a benchmark may skip (only when ALLOW_TIER_BYPASS is set). */
function bypassOf(c: Context<AppEnv>): Bypass | undefined {
  if (!c.env.deps.allowTierBypass) return undefined;
  const h = c.req.header("x-gateway-bypass");
  if (!h) return undefined;
  const parts = h.split(",").map((s) => s.trim());
  return { memory: parts.includes("memory"), cache: parts.includes("cache"), responses: parts.includes("responses") };
}

/** An answer's name in the response cache: the route and the canonical query... */
export function listView(canonicalQuery: string): string {
  return `vehicles?${canonicalQuery}`;
}

/** ...or the route and the VIN. */
export function vinView(vin: string): string {
  return `vehicles/${vin}`;
}

/** The tiers as this request sees them; `view` names its answer in the response cache. */
function tiersOf(c: Context<AppEnv>, view: string): TierContext {
  const bypass = bypassOf(c);
  return {
    deps: c.env.deps,
    config: c.get("config"),
    waitUntil: waitUntilOf(c),
    view,
    ...(bypass ? { bypass } : {}),
  };
}

async function serve(c: Context<AppEnv>, t: TierContext): Promise<Served | CachedAnswer> {
  const s = await loadTiers(t);
  const counters = t.deps.memory.counters;
  if (s.tier === "memory") counters.memoryHits++;
  if (s.stale) counters.staleServed++;
  const fields: Record<string, unknown> = { tier: s.tier, stale: s.stale, cacheStatus: s.cacheStatus };
  if (s.tier !== "response") {
    if (s.gatewayMs !== undefined) fields.gatewayMs = s.gatewayMs;
    if (s.error) fields.upstreamError = s.error.code;
  }
  Object.assign(c.get("logFields"), fields);
  return s;
}

/**
 * The snapshot for this request and what `use` makes of it. `use` is where items are first read
 * (queryVehicles, findVin), and prepared.ts checks their boundaries then: a damaged snapshot is
 * dropped (tiers.ts `discardDamaged`) and the request served once more from a fresh fill, so a
 * damaged copy costs a refill, never a 500.
 */
async function serveWith<T>(
  c: Context<AppEnv>,
  t: TierContext,
  use: (p: Prepared) => T,
): Promise<{ cached: CachedAnswer } | { s: Served; out: T }> {
  const s = await serve(c, t);
  if (s.tier === "response") return { cached: s };
  try {
    return { s, out: use(s.snapshot) };
  } catch (err) {
    if (!isDamagedSnapshot(err)) throw err;
    discardDamaged(c.env.deps, s.snapshot);
    const again = await serve(c, t);
    if (again.tier === "response") return { cached: again };
    return { s: again, out: use(again.snapshot) };
  }
}

/** Cache-Control for downstream caches: shared only when no API key is needed (RFC 9111 §5.2.2). */
function cacheControl(config: Config, s: Answer): string {
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

/** What the headers of an answer are made of, whichever tier gave it. */
interface Answer {
  cacheStatus: string;
  ageS: number;
  stale: boolean;
  etag: string;
  link: string | undefined;
}

/**
 * The answer: 304 on a matching If-None-Match, the headers alone for HEAD, else the body, which
 * `body` builds (or hands over) only then; `unsent` lets go of a body that is not sent.
 */
function respond(c: Context<AppEnv>, a: Answer, body: () => ResponseBody, unsent?: () => void): Response {
  const config = c.get("config");
  const headers = new Headers({
    "cache-status": a.cacheStatus,
    age: String(a.ageS),
    etag: a.etag,
    "cache-control": cacheControl(config, a),
    vary: varyOf(config),
  });
  if (a.link !== undefined) headers.set("link", a.link);
  if (ifNoneMatchMatches(c.req.header("if-none-match"), a.etag)) {
    c.env.deps.memory.counters.notModified++;
    unsent?.();
    return new Response(null, { status: 304, headers });
  }
  headers.set("content-type", JSON_TYPE);
  // HEAD: the same headers, no body built (RFC 9110 §9.3.2).
  if (c.req.method === "HEAD") {
    unsent?.();
    return new Response(null, { status: 200, headers });
  }
  return new Response(body(), { status: 200, headers });
}

/** An answer from the response cache: its stored body passed through unread, its headers recomputed. */
function respondCached(c: Context<AppEnv>, a: CachedAnswer): Response {
  const body = a.response.body;
  const { cacheStatus, ageS, stale, meta } = a;
  return respond(
    c,
    { cacheStatus, ageS, stale, etag: meta.etag, link: meta.link },
    () => body,
    () => {
      body?.cancel().catch(() => {});
    },
  );
}

/**
 * An answer rendered from a snapshot; after a response cache miss, also stored behind the response
 * (`body` called a second time for the put: the same kept Blob, or the answer rendered again).
 */
function respondRendered(
  c: Context<AppEnv>,
  t: TierContext,
  s: Served,
  { etag, link }: Pick<Answer, "etag" | "link">,
  body: () => ResponseBody,
): Response {
  if (s.storeAs !== undefined) {
    const meta = { fetchedAt: s.snapshot.fetchedAt, snapshotEtag: s.snapshot.etag, etag };
    storeAnswer(t, s.storeAs, link === undefined ? meta : { ...meta, link }, body);
  }
  return respond(c, { cacheStatus: s.cacheStatus, ageS: s.ageS, stale: s.stale, etag, link }, body);
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
    const canonical = canonicalQueryKey(query);
    const t = tiersOf(c, listView(canonical));
    // The result (ids and the next cursor) is cheap; the body is built only for a GET that sends one.
    const o = await serveWith(c, t, (p) => queryVehicles(p, query));
    if ("cached" in o) return respondCached(c, o.cached);
    const { s, out: result } = o;
    const etag = viewEtag(s.snapshot.etag, `${canonical}|stale=${s.stale}`);
    const next =
      result.lastVin === undefined
        ? undefined
        : `/v1/vehicles?${canonicalQueryKey({ ...query, after: result.lastVin })}`;
    // RFC 8288: the next page, as a URI reference relative to this one.
    const link = next === undefined ? undefined : `<${next}>; rel="next"`;
    return respondRendered(c, t, s, { etag, link }, () =>
      vehiclesBody(s.snapshot, result, {
        stale: s.stale,
        ...(next === undefined ? {} : { next }),
        keep: `${s.stale ? "stale" : "fresh"}|${canonical}`,
      }),
    );
  });

  r.get("/:vin", async (c) => {
    if (searchOf(c.req.url) !== "") {
      throw new AppError("invalid_parameter", { detail: "this route takes no query parameters" });
    }
    const vin = parseVin(c.req.param("vin"));
    const t = tiersOf(c, vinView(vin));
    const o = await serveWith(c, t, (p) => findVin(p, vin));
    if ("cached" in o) return respondCached(c, o.cached);
    const { s, out: i } = o;
    if (i < 0) throw new AppError("vehicle_not_found", { detail: "no vehicle with this VIN in the current fleet" });
    const etag = viewEtag(s.snapshot.etag, `vin=${vin}|stale=${s.stale}`);
    return respondRendered(c, t, s, { etag, link: undefined }, () =>
      serializeVehicle(s.snapshot, i, { stale: s.stale }),
    );
  });

  return r;
}
