/**
 * The snapshot feed's wire format: how a `SnapshotResult` travels as an HTTP answer, from the
 * gateway object's `fetch()` through the Worker's `SnapshotFeed` entrypoint (which Workers Cache
 * may answer instead) to an isolate. One place writes it and one place reads it.
 *
 * - A snapshot: 200, the prepared bytes as the body, the envelope in headers, and
 *   `Cache-Control: public, max-age=<seconds left of the TTL>, stale-while-revalidate=<stale window>`
 *   (RFC 9111 §5.2.2, RFC 5861), so a shared cache keeps it exactly as long as it is fresh. A stale
 *   answer (the object serves its stale copy) is kept 2 s at most: an outage then costs the object
 *   one call per cache per 2 s, not one per isolate.
 * - An error: its status, a small JSON body of the ErrorInfo, `Cache-Control: no-store` (an error is
 *   never cached).
 * The feed holds nothing secret: the same redacted bytes that the Cache API holds.
 */
import { entryMeta, envelopeHeaders, readEnvelope } from "../cache/snapshot-entry.ts";
import type { ErrorInfo } from "../errors.ts";
import { ttlLeftS } from "./freshness.ts";
import type { SnapshotResult } from "./types.ts";

/**
 * The snapshot's bytes as a Blob, made once per snapshot: `new Response(bytes)` copies its bytes on
 * every answer (9.2 MB at 20,000 vehicles), a Response of a Blob streams the Blob's own. Measured
 * in workerd (bench/compare.ts, an isolate's L1 fill from the object, the process's CPU per fill at
 * 20,000 vehicles, three rounds each): 10.4–12.2 ms against 13.5–14.2 ms.
 */
const blobs = new WeakMap<Uint8Array, Blob>();
function blobOf(data: Uint8Array): Blob {
  let blob = blobs.get(data);
  if (blob === undefined) {
    blob = new Blob([data as Uint8Array<ArrayBuffer>]);
    blobs.set(data, blob);
  }
  return blob;
}

/** The path the feed answers (any other path is a 404). */
export const FEED_PATH = "/snapshot";

/** Beside the envelope's own headers (snapshot-entry.ts): whether it is stale, and why. */
const H = { stale: "x-gateway-stale", error: "x-gateway-error" } as const;

/** Seconds a stale answer may be reused by a shared cache. */
const STALE_MAX_AGE_S = 2;

/** The answer for a result, with Cache-Control from the TTL and stale window (seconds) at `now`. */
export function feedResponse(r: SnapshotResult, opts: { ttlS: number; staleS: number; now: number }): Response {
  if (!r.ok) {
    return new Response(JSON.stringify(r.error), {
      status: r.error.status,
      headers: { "content-type": "application/json", "cache-control": "no-store" },
    });
  }
  const s = r.snapshot;
  const left = Math.floor(ttlLeftS(s.fetchedAt, opts.now, { ttlMs: opts.ttlS * 1000 }));
  const cacheControl =
    r.stale || left <= 0
      ? `public, max-age=${STALE_MAX_AGE_S}`
      : `public, max-age=${left}, stale-while-revalidate=${opts.staleS}`;
  const headers: Record<string, string> = {
    ...envelopeHeaders(s),
    "cache-control": cacheControl,
    [H.stale]: r.stale ? "1" : "0",
  };
  if (r.error) headers[H.error] = JSON.stringify(r.error);
  return new Response(blobOf(s.data), { status: 200, headers });
}

/** The result back from a feed answer. A malformed answer is `gateway_unavailable`, never a throw. */
export async function readFeedResponse(res: Response): Promise<SnapshotResult> {
  if (res.status !== 200) {
    const info = await res.json().catch(() => undefined);
    return { ok: false, error: isErrorInfo(info) ? info : { code: "gateway_unavailable", status: 503 } };
  }
  const meta = entryMeta(res);
  if (!meta) {
    await res.body?.cancel();
    return { ok: false, error: { code: "gateway_unavailable", status: 503 } };
  }
  const snapshot = await readEnvelope(res, meta);
  const stale = res.headers.get(H.stale) === "1";
  const errorText = res.headers.get(H.error);
  const error = errorText ? (JSON.parse(errorText) as unknown) : undefined;
  return isErrorInfo(error) ? { ok: true, snapshot, stale, error } : { ok: true, snapshot, stale };
}

function isErrorInfo(x: unknown): x is ErrorInfo {
  const e = x as Partial<ErrorInfo> | undefined;
  return typeof e?.code === "string" && typeof e.status === "number";
}
