/**
 * How a snapshot is stored in L2. Our own freshness stamp (`x-gateway-fetched-at`) decides
 * freshness, not the cache: the Cache API implements no stale directive, and miniflare's
 * local emulation differs from production on `max-age` and `Age` (DESIGN.md).
 */
import type { SnapshotEnvelope } from "../gateway/types.ts";

/**
 * The named cache for snapshots, on every runtime that has the Cache API (the Worker, Deno): not
 * caches.default, which fetch() subrequests share; one name, so one deployment's key space reads the same.
 */
export const CACHE_NAME = "sharenow-vehicles-v1";

/** When the partner answered (epoch ms): every tier judges freshness by it, so every entry carries it. */
export const FETCHED_AT = "x-gateway-fetched-at";
const DROPPED = "x-gateway-dropped";
const COUNT = "x-gateway-count";

/**
 * The L2 key: the normalized *upstream* request, never the client's query (no cache-busting),
 * and the version of the representation stored under it (entries of another version are never read).
 */
export function snapshotCacheKey(apiUrl: string, clientIdHash: string, version: string): string {
  const u = new URL("https://snapshot.gateway.invalid/v1/partner-vehicles");
  u.searchParams.set("api", apiUrl);
  u.searchParams.set("client", clientIdHash);
  u.searchParams.set("v", version);
  return u.href;
}

/**
 * The headers that carry an envelope's metadata beside its prepared bytes: in a Cache API entry
 * and in a snapshot feed answer (src/gateway/snapshot-feed.ts) alike; `entryMeta` reads them back.
 */
export function envelopeHeaders(env: SnapshotEnvelope): Record<string, string> {
  return {
    "content-type": "application/octet-stream",
    etag: env.etag,
    [FETCHED_AT]: String(env.fetchedAt),
    [DROPPED]: String(env.dropped),
    [COUNT]: String(env.count),
  };
}

/** A cacheable Response for the envelope; kept for ttl + stale seconds at most. */
export function envelopeToResponse(env: SnapshotEnvelope, keepS: number): Response {
  return new Response(env.data as Uint8Array<ArrayBuffer>, {
    headers: {
      ...envelopeHeaders(env),
      // `public` and a max-age: cache.put silently skips private/no-store responses.
      "cache-control": `public, max-age=${Math.max(1, Math.ceil(keepS))}`,
    },
  });
}

/** An entry's metadata, read from its headers before its body (so a useless entry is never read). */
export interface EntryMeta {
  fetchedAt: number;
  etag: string;
  count: number;
  dropped: number;
}

/** The metadata of a cached Response; undefined if the entry is not ours. */
export function entryMeta(res: Response): EntryMeta | undefined {
  const fetchedAt = Number(res.headers.get(FETCHED_AT));
  const etag = res.headers.get("etag");
  const count = Number(res.headers.get(COUNT));
  if (!Number.isFinite(fetchedAt) || fetchedAt <= 0 || !etag || !Number.isInteger(count)) return undefined;
  return { fetchedAt, etag, count, dropped: Number(res.headers.get(DROPPED)) || 0 };
}

/** The envelope: `meta` (read by `entryMeta`) and the answer's body as the prepared bytes. */
export async function readEnvelope(res: Response, meta: EntryMeta): Promise<SnapshotEnvelope> {
  return { ...meta, data: new Uint8Array(await res.arrayBuffer()) };
}
