/**
 * How a rendered vehicles answer is stored in L2 (the response cache, tiers.ts): the body as
 * served, its `content-type`, `etag` and `link`, and which snapshot it was rendered from. Only
 * fresh 200 answers are stored. Whatever is per request or per client (CORS, `x-request-id`,
 * `Cache-Status`, `Age`, `Vary`, `Cache-Control` for the client) is recomputed on every hit, never
 * stored; an answer holds no token or secret to begin with.
 */
import { FETCHED_AT } from "./snapshot-entry.ts";

/** The content type of every vehicles answer. */
export const JSON_TYPE = "application/json; charset=utf-8";

const SNAPSHOT_ETAG = "x-gateway-snapshot-etag";

/** A body as `new Response` takes it (spelled through Response: the runtimes' type libraries name BodyInit differently). */
export type ResponseBody = ConstructorParameters<typeof Response>[0];

/**
 * The shape of a stored answer, in the key. Bump it when the bytes of an answer change while the
 * allow-list and the prepared format (already in the snapshot key) stay the same: an entry
 * rendered by older code is then never read.
 */
const RESPONSE_FORMAT = 1;

/**
 * The key prefix of rendered answers: the snapshot's L2 key (partner API, client, allow-list
 * version and prepared format) under another path, and the answer format. A view is appended.
 */
export function responseKeyPrefix(snapshotKey: string): string {
  const u = new URL(snapshotKey);
  u.pathname = "/v1/responses";
  u.searchParams.set("f", String(RESPONSE_FORMAT));
  return `${u.href}&view=`;
}

/** What an entry says about itself, read from its headers before its body. */
export interface ResponseMeta {
  /** The snapshot's `fetchedAt`: freshness, and the comparison with L1's snapshot. */
  fetchedAt: number;
  snapshotEtag: string;
  /** The answer's own (weak) validator. */
  etag: string;
  link?: string;
}

/** The entry to put: `body` as served, cacheable for `keepS` seconds (the TTL left). */
export function responseEntry(body: ResponseBody, meta: ResponseMeta, keepS: number): Response {
  const headers: Record<string, string> = {
    "content-type": JSON_TYPE,
    etag: meta.etag,
    [FETCHED_AT]: String(meta.fetchedAt),
    [SNAPSHOT_ETAG]: meta.snapshotEtag,
    // `public` and a max-age: cache.put silently skips private/no-store answers.
    "cache-control": `public, max-age=${Math.max(1, Math.ceil(keepS))}`,
  };
  if (meta.link !== undefined) headers.link = meta.link;
  return new Response(body, { headers });
}

/** The metadata of a stored answer; undefined if it is not one of ours. */
export function responseMeta(res: Response): ResponseMeta | undefined {
  const h = res.headers;
  const fetchedAt = Number(h.get(FETCHED_AT));
  const snapshotEtag = h.get(SNAPSHOT_ETAG);
  const etag = h.get("etag");
  if (res.status !== 200 || !(fetchedAt > 0) || !snapshotEtag || !etag) return undefined;
  const link = h.get("link");
  return link === null ? { fetchedAt, snapshotEtag, etag } : { fetchedAt, snapshotEtag, etag, link };
}
