/**
 * The tiers a vehicles request falls through (DESIGN.md): L1 isolate memory, L2 the Cache API
 * of this data centre, L3 the gateway object. Freshness comes from the snapshot's own
 * `fetchedAt`, so every tier judges it the same way.
 *
 * Nothing here shares an in-flight promise between requests: a Worker cancels a promise when
 * the request that started it ends. Isolate memory holds plain values only (the parsed
 * snapshot, a timestamp); coalescing of partner calls lives in the gateway object.
 */

import { envelopeToResponse, responseToEnvelope, snapshotCacheKey } from "../cache/snapshot-entry.ts";
import type { Config } from "../config.ts";
import type { Deps, SnapshotEnvelope } from "../deps.ts";
import { AppError, type ErrorInfo } from "../errors.ts";
import { fnv1a32 } from "../hash.ts";
import { VEHICLE_FIELDS } from "./schema.ts";
import { buildSnapshot, type Snapshot } from "./snapshot.ts";

export type Tier = "memory" | "cache" | "gateway";

export interface Served {
  /**
   * The served representation as stored text: `body` is the JSON array of allow-listed vehicles
   * this deploy checked (by `buildSnapshot` on L1 and L3, by the versioned L2 key on L2), `etag`
   * its validator and `count` its length. Enough for the unfiltered list, HEAD and 304.
   */
  envelope: SnapshotEnvelope;
  /**
   * The parsed snapshot (filters, a limit below the count, the {vin} route). On an L2 hit that
   * did not need it, it is built on the first call and then kept in L1.
   */
  snapshot: () => Snapshot;
  tier: Tier;
  stale: boolean;
  /** RFC 9211 Cache-Status: the first member is nearest the origin, the last nearest the client. */
  cacheStatus: string;
  ageS: number;
  /** Why a stale copy is served although a refresh was tried (stale-if-error). */
  error?: ErrorInfo;
  /** Time this request waited for the gateway object (L3), for the request log. */
  gatewayMs?: number;
}

interface MemoryEntry {
  snapshot: Snapshot;
  /** As received (freshness, and whether concurrent cold requests got the same one). */
  envelope: SnapshotEnvelope;
  /** As served: `snapshot`'s own text and validator (differ from `envelope` only if re-redacted). */
  view: SnapshotEnvelope;
}

/** What a tier holds: a parsed entry (L1, L3), or an L2 entry's checked text, parsed on demand. */
interface Held {
  envelope: SnapshotEnvelope;
  view: SnapshotEnvelope;
  snapshot: () => Snapshot;
}

function memoryEntry(snapshot: Snapshot, envelope: SnapshotEnvelope): MemoryEntry {
  const same =
    snapshot.body === envelope.body && snapshot.etag === envelope.etag && snapshot.vehicles.length === envelope.count;
  const view = same
    ? envelope
    : {
        body: snapshot.body,
        etag: snapshot.etag,
        fetchedAt: snapshot.fetchedAt,
        count: snapshot.vehicles.length,
        dropped: snapshot.dropped,
      };
  return { snapshot, envelope, view };
}

const held = (e: MemoryEntry): Held => ({ envelope: e.envelope, view: e.view, snapshot: () => e.snapshot });

/** At most one background revalidation per isolate in this window. */
const REVALIDATE_GUARD_MS = 5_000;

export interface TierContext {
  deps: Deps;
  config: Config;
  waitUntil: (p: Promise<unknown>) => void;
  /** Skip tiers (benchmarks and tests of the lower tiers). */
  bypass?: { memory?: boolean; cache?: boolean };
  /**
   * Whether this request needs the parsed snapshot of an L2 entry (default: yes). When it does
   * not, an L2 hit is served from its text and L1 is filled behind the response.
   */
  needsSnapshot?: (envelope: SnapshotEnvelope) => boolean;
}

/** A short, non-reversible tag for the client id (it is configured as a secret). */
function fnv1a(s: string): string {
  return fnv1a32(s).toString(16).padStart(8, "0");
}

/**
 * Bump when what `redactVehicles` emits changes without a change of the field list (value
 * normalization, order of items, the envelope headers): it retires every L2 entry.
 */
export const SNAPSHOT_FORMAT = 1;

/** A short tag of the allow-list (field names in served order) and the snapshot format. */
export function allowListVersion(fields: readonly string[] = VEHICLE_FIELDS, format = SNAPSHOT_FORMAT): string {
  return fnv1a(`${format}:${fields.join(",")}`);
}

const ALLOW_LIST_VERSION = allowListVersion();

/**
 * The L2 key for this configuration: the normalized upstream request, never the client's query.
 * It carries the allow-list version because an L2 hit of the unfiltered list is served as its
 * stored text, without `buildSnapshot`'s allow-list check: an entry written by a deploy with
 * another allow-list (one that still had `fuelCardPin`, say) must never be readable by this one.
 * Entries are written only from text this deploy's `buildSnapshot` checked (fromGateway).
 */
export function tierCacheKey(config: Config, version: string = ALLOW_LIST_VERSION): string {
  return snapshotCacheKey(config.apiUrl, fnv1a(config.clientId), version);
}

function remember(deps: Deps, entry: MemoryEntry): void {
  const cur = deps.memory.snapshot as MemoryEntry | undefined;
  if (!cur || cur.envelope.fetchedAt <= entry.envelope.fetchedAt) deps.memory.snapshot = entry;
}

function errorCode(err: unknown): string {
  return err instanceof AppError ? err.code : "internal";
}

/** Runs `fn` after the current task (after the response is handed back), under waitUntil. */
function afterResponse(t: TierContext, fn: () => void): void {
  t.waitUntil(new Promise<void>((resolve) => setTimeout(resolve, 0)).then(fn));
}

/** A cached entry as a snapshot; a damaged one is a miss (logged), never a 500. */
function parseCached(deps: Deps, env: SnapshotEnvelope): Snapshot | undefined {
  try {
    return buildSnapshot(env);
  } catch (err) {
    deps.log.log("warn", "cache_entry_invalid", { code: errorCode(err) });
    return undefined;
  }
}

/**
 * An L2 entry served from its text; parsed on the first call of `snapshot()` (and then kept in
 * L1 unless memory is bypassed). Its text is trusted as checked because of the versioned key.
 */
function lazyEntry(t: TierContext, env: SnapshotEnvelope): Held {
  let parsed: Snapshot | undefined;
  return {
    envelope: env,
    view: env,
    snapshot: () => {
      if (parsed === undefined) {
        const entry = memoryEntry(buildSnapshot(env), env);
        parsed = entry.snapshot;
        if (!t.bypass?.memory) remember(t.deps, entry);
      }
      return parsed;
    },
  };
}

/** The newest snapshot the tiers can give, or an AppError when there is nothing to serve. */
export async function loadSnapshot(t: TierContext): Promise<Served> {
  const { deps, config } = t;
  const now = deps.clock.now();
  const ttlMs = config.vehiclesTtlS * 1000;
  const servableMs = ttlMs + config.vehiclesStaleS * 1000;
  const age = (e: SnapshotEnvelope) => now - e.fetchedAt;
  const ttl = (e: SnapshotEnvelope) => Math.round((e.fetchedAt + ttlMs - now) / 1000);
  const served = (entry: Held, tier: Tier, stale: boolean, cacheStatus: string): Served => ({
    envelope: entry.view,
    snapshot: entry.snapshot,
    tier,
    stale,
    cacheStatus,
    ageS: Math.max(0, Math.floor(age(entry.envelope) / 1000)),
  });

  // L1: isolate memory.
  const mem = t.bypass?.memory ? undefined : (deps.memory.snapshot as MemoryEntry | undefined);
  if (mem && age(mem.envelope) < ttlMs) {
    return served(held(mem), "memory", false, `gateway-memory; hit; ttl=${ttl(mem.envelope)}`);
  }
  let candidate: { entry: Held; tier: Tier } | undefined =
    mem && age(mem.envelope) < servableMs ? { entry: held(mem), tier: "memory" } : undefined;
  // RFC 9211 §2.2: `fwd=bypass` when a tier was configured not to answer (benchmarks only).
  const memStatus = t.bypass?.memory
    ? "gateway-memory; fwd=bypass"
    : `${mem ? "gateway-memory; fwd=stale" : "gateway-memory; fwd=miss"}; stored`;

  // L2: this data centre's Cache API (another isolate may have filled it with a fresher copy).
  const cache = t.bypass?.cache ? undefined : deps.cache;
  const key = tierCacheKey(config);
  if (cache) {
    const hit = await cache.match(key).catch((err: unknown) => {
      deps.log.log("warn", "cache_match_failed", { error: String(err) });
      return undefined;
    });
    const env = hit ? await responseToEnvelope(hit) : undefined;
    let entry: Held | undefined;
    if (env && age(env) < servableMs && (!candidate || env.fetchedAt > candidate.entry.envelope.fetchedAt)) {
      if (t.needsSnapshot?.(env) ?? true) {
        const snapshot = parseCached(deps, env);
        if (snapshot) {
          const parsed = memoryEntry(snapshot, env);
          if (!t.bypass?.memory) remember(deps, parsed);
          entry = held(parsed);
        }
      } else {
        entry = lazyEntry(t, env);
        // The next request of this isolate should be a memory hit: parse behind this response.
        if (!t.bypass?.memory) {
          const parse = entry.snapshot;
          afterResponse(t, () => {
            try {
              parse();
            } catch (err) {
              deps.log.log("warn", "cache_entry_invalid", { code: errorCode(err) });
            }
          });
        }
      }
    }
    if (env && entry) {
      if (age(env) < ttlMs) {
        return served(entry, "cache", false, `gateway-cache; hit; ttl=${ttl(env)}, ${memStatus}`);
      }
      candidate = { entry, tier: "cache" };
    }
  }

  // Stale-while-revalidate: serve the stale copy now and refresh behind it, once per isolate.
  if (candidate) {
    if ((deps.memory.revalidatingUntil ?? 0) <= now) {
      deps.memory.revalidatingUntil = now + REVALIDATE_GUARD_MS;
      t.waitUntil(
        fromGateway(t, key, candidate.entry.envelope.fetchedAt + 1).then(
          (r) => {
            // Only a fresh snapshot ends the window early. A failed refresh (an error, or the
            // object's own stale copy) keeps it: a failing partner then costs one refresh per
            // isolate per window, not one per request.
            if (!r.stale) deps.memory.revalidatingUntil = 0;
          },
          (err: unknown) => deps.log.log("warn", "revalidate_failed", { code: errorCode(err) }),
        ),
      );
    }
    const name = candidate.tier === "memory" ? "gateway-memory" : "gateway-cache";
    return served(candidate.entry, candidate.tier, true, `${name}; hit; ttl=${ttl(candidate.entry.envelope)}`);
  }

  // L3: the gateway object, one partner fetch at a time for the world.
  const started = deps.clock.now();
  const r = await fromGateway(t, key, undefined);
  const gatewayMs = deps.clock.now() - started;
  const status = [
    r.stale
      ? `gateway-object; hit; ttl=${ttl(r.entry.envelope)}${r.error ? "; detail=stale-if-error" : ""}`
      : "gateway-object; fwd=miss; stored",
  ];
  status.push(cache ? "gateway-cache; fwd=miss; stored" : "gateway-cache; fwd=bypass");
  status.push(memStatus);
  const out = served(held(r.entry), "gateway", r.stale, status.join(", "));
  out.gatewayMs = gatewayMs;
  if (r.error) out.error = r.error;
  return out;
}

/** Ask the gateway object; keep the answer in L1 and, behind the response, in L2. */
async function fromGateway(
  t: TierContext,
  key: string,
  notOlderThan: number | undefined,
): Promise<{ entry: MemoryEntry; stale: boolean; error?: ErrorInfo }> {
  const { deps, config } = t;
  const res = await deps.gateway.getSnapshot(notOlderThan === undefined ? {} : { notOlderThan });
  if (!res.ok) throw AppError.fromInfo(res.error);
  // Concurrent cold requests of one isolate all get the same envelope: the first to resume parses
  // and stores it, the others reuse that (no second parse, no second 800 KB cache write).
  const cur = t.bypass?.memory ? undefined : (deps.memory.snapshot as MemoryEntry | undefined);
  const known =
    cur !== undefined && cur.envelope.etag === res.snapshot.etag && cur.envelope.fetchedAt === res.snapshot.fetchedAt;
  const entry = known ? cur : memoryEntry(buildSnapshot(res.snapshot), res.snapshot);
  if (!t.bypass?.memory) remember(deps, entry);
  const cache = t.bypass?.cache ? undefined : deps.cache;
  if (cache && !known) {
    const keepS = config.vehiclesTtlS + config.vehiclesStaleS;
    t.waitUntil(
      cache
        // The checked text (entry.view), never the envelope as received: an L2 hit of the full
        // list is served as stored, without another allow-list check (tierCacheKey).
        .put(key, envelopeToResponse(entry.view, keepS))
        .catch((err: unknown) => deps.log.log("warn", "cache_put_failed", { error: String(err) })),
    );
  }
  const out: { entry: MemoryEntry; stale: boolean; error?: ErrorInfo } = { entry, stale: res.stale };
  if (res.error) out.error = res.error;
  return out;
}

/** Warm-up: fill this data centre's cache (and isolate memory) from the gateway object. */
export async function warmTiers(t: TierContext): Promise<void> {
  await fromGateway(t, tierCacheKey(t.config), t.deps.clock.now() - (t.config.vehiclesTtlS * 1000) / 2);
}
