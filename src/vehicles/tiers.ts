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
import { buildSnapshot, type Snapshot } from "./snapshot.ts";

export type Tier = "memory" | "cache" | "gateway";

export interface Served {
  snapshot: Snapshot;
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
  envelope: SnapshotEnvelope;
}

/** At most one background revalidation per isolate in this window. */
const REVALIDATE_GUARD_MS = 5_000;

export interface TierContext {
  deps: Deps;
  config: Config;
  waitUntil: (p: Promise<unknown>) => void;
  /** Skip tiers (benchmarks and tests of the lower tiers). */
  bypass?: { memory?: boolean; cache?: boolean };
}

/** A short, non-reversible tag for the client id (it is configured as a secret). */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/** The L2 key for this configuration: the normalized upstream request, never the client's query. */
export function tierCacheKey(config: Config): string {
  return snapshotCacheKey(config.apiUrl, fnv1a(config.clientId));
}

function remember(deps: Deps, entry: MemoryEntry): void {
  const cur = deps.memory.snapshot as MemoryEntry | undefined;
  if (!cur || cur.envelope.fetchedAt <= entry.envelope.fetchedAt) deps.memory.snapshot = entry;
}

function errorCode(err: unknown): string {
  return err instanceof AppError ? err.code : "internal";
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

/** The newest snapshot the tiers can give, or an AppError when there is nothing to serve. */
export async function loadSnapshot(t: TierContext): Promise<Served> {
  const { deps, config } = t;
  const now = deps.clock.now();
  const ttlMs = config.vehiclesTtlS * 1000;
  const servableMs = ttlMs + config.vehiclesStaleS * 1000;
  const age = (e: SnapshotEnvelope) => now - e.fetchedAt;
  const ttl = (e: SnapshotEnvelope) => Math.round((e.fetchedAt + ttlMs - now) / 1000);
  const served = (entry: MemoryEntry, tier: Tier, stale: boolean, cacheStatus: string): Served => ({
    snapshot: entry.snapshot,
    tier,
    stale,
    cacheStatus,
    ageS: Math.max(0, Math.floor(age(entry.envelope) / 1000)),
  });

  // L1: isolate memory.
  const mem = t.bypass?.memory ? undefined : (deps.memory.snapshot as MemoryEntry | undefined);
  if (mem && age(mem.envelope) < ttlMs) {
    return served(mem, "memory", false, `gateway-memory; hit; ttl=${ttl(mem.envelope)}`);
  }
  let candidate: { entry: MemoryEntry; tier: Tier } | undefined =
    mem && age(mem.envelope) < servableMs ? { entry: mem, tier: "memory" } : undefined;
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
    const snapshot =
      env && age(env) < servableMs && (!candidate || env.fetchedAt > candidate.entry.envelope.fetchedAt)
        ? parseCached(deps, env)
        : undefined;
    if (env && snapshot) {
      const entry = { snapshot, envelope: env };
      if (!t.bypass?.memory) remember(deps, entry);
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
  const out = served(r.entry, "gateway", r.stale, status.join(", "));
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
  const entry = known ? cur : { snapshot: buildSnapshot(res.snapshot), envelope: res.snapshot };
  if (!t.bypass?.memory) remember(deps, entry);
  const cache = t.bypass?.cache ? undefined : deps.cache;
  if (cache && !known) {
    const keepS = config.vehiclesTtlS + config.vehiclesStaleS;
    t.waitUntil(
      cache
        .put(key, envelopeToResponse(res.snapshot, keepS))
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
