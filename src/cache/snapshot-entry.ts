/**
 * How a snapshot is stored in L2. Our own freshness stamp (`x-gateway-fetched-at`) decides
 * freshness, not the cache: the Cache API implements no stale directive, and miniflare's
 * local emulation differs from production on `max-age` and `Age` (DESIGN.md).
 */
import type { SnapshotEnvelope } from "../deps.ts";

const FETCHED_AT = "x-gateway-fetched-at";
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

/** A cacheable Response for the envelope; kept for ttl + stale seconds at most. */
export function envelopeToResponse(env: SnapshotEnvelope, keepS: number): Response {
  return new Response(env.body, {
    headers: {
      "content-type": "application/json",
      // `public` and a max-age: cache.put silently skips private/no-store responses.
      "cache-control": `public, max-age=${Math.max(1, Math.ceil(keepS))}`,
      etag: env.etag,
      [FETCHED_AT]: String(env.fetchedAt),
      [DROPPED]: String(env.dropped),
      [COUNT]: String(env.count),
    },
  });
}

/** The envelope back from a cached Response; undefined if the entry is not ours or is damaged. */
export async function responseToEnvelope(res: Response): Promise<SnapshotEnvelope | undefined> {
  const fetchedAt = Number(res.headers.get(FETCHED_AT));
  const etag = res.headers.get("etag");
  const count = Number(res.headers.get(COUNT));
  if (!Number.isFinite(fetchedAt) || fetchedAt <= 0 || !etag || !Number.isInteger(count)) {
    await res.body?.cancel();
    return undefined;
  }
  return { body: await res.text(), fetchedAt, etag, count, dropped: Number(res.headers.get(DROPPED)) || 0 };
}
