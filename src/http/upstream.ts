/**
 * The one way the gateway talks to an upstream (token endpoint, partner API): a deadline that
 * covers headers *and* body, a cap on the body size, and `redirect: "manual"` so a redirect is
 * an answer we refuse, never a hop that carries our credentials elsewhere.
 */
import type { FetchFn } from "../ports.ts";

export interface UpstreamResponse {
  status: number;
  headers: Headers;
  /** The body as text, at most `maxBytes` bytes. */
  text: string;
}

/** Why an upstream call failed before we had a complete answer. */
export type UpstreamFailure = "timeout" | "network" | "too_large";

export class UpstreamError extends Error {
  readonly kind: UpstreamFailure;
  constructor(kind: UpstreamFailure, cause?: unknown) {
    // The message names the kind only: a cause may quote a URL or header we do not want in logs.
    super(`upstream ${kind}`, cause === undefined ? undefined : { cause });
    this.name = "UpstreamError";
    this.kind = kind;
  }
}

/**
 * Sends `request` and reads the whole body within `timeoutMs`, refusing bodies over `maxBytes`
 * (checked against Content-Length first, then while streaming).
 */
export async function fetchUpstream(
  fetchFn: FetchFn,
  request: Request,
  opts: { timeoutMs: number; maxBytes: number },
): Promise<UpstreamResponse> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, opts.timeoutMs);
  try {
    const res = await fetchFn(new Request(request, { redirect: "manual", signal: controller.signal }));
    const declared = Number(res.headers.get("content-length"));
    if (Number.isFinite(declared) && declared > opts.maxBytes) {
      return await refuseTooLarge(res.body);
    }
    const text = await readCapped(res, opts.maxBytes);
    return { status: res.status, headers: res.headers, text };
  } catch (err) {
    if (err instanceof UpstreamError) throw err;
    throw new UpstreamError(timedOut ? "timeout" : "network", err);
  } finally {
    clearTimeout(timer);
  }
}

/** A body over the cap: let go of the rest of it (a cancel that fails changes nothing), and refuse it. */
async function refuseTooLarge(body: { cancel(): Promise<void> } | null): Promise<never> {
  await body?.cancel().catch(() => {});
  throw new UpstreamError("too_large");
}

/** The first buffer when no usable Content-Length says how much to expect. */
const FIRST_BUFFER_BYTES = 64 * 1024;

/**
 * Reads the body into one buffer and decodes it once. A BYOB reader fills the buffer in a few
 * large reads (workerd: 3 reads for 8.8 MB, 23-40 ms of CPU); the default reader hands over
 * about 2,200 chunks of 4 KB, each a promise and a decode into a string rope (83-130 ms, and
 * JSON.parse then flattens the rope). The buffer starts at the declared length plus one byte (the
 * read that sees the end needs room) and only grows when the body runs past it, never beyond
 * `maxBytes` + 1: the byte past the cap is what tells a body over it. Content-Length is only a
 * size hint here; the cap is counted on the bytes received (a decoded body may differ from it).
 */
async function readCapped(res: Response, maxBytes: number): Promise<string> {
  const body = res.body;
  if (!body) return "";
  let reader: ReadableStreamBYOBReader;
  try {
    reader = body.getReader({ mode: "byob" });
  } catch {
    // A runtime whose fetch body is not a byte stream.
    return readChunks(body, maxBytes);
  }
  const declared = Number(res.headers.get("content-length") ?? Number.NaN);
  const limit = maxBytes + 1;
  let buffer = new ArrayBuffer(
    Number.isSafeInteger(declared) && declared >= 0
      ? Math.min(declared + 1, limit)
      : Math.min(FIRST_BUFFER_BYTES, limit),
  );
  let size = 0;
  for (;;) {
    if (size === buffer.byteLength) {
      const grown = new ArrayBuffer(Math.min(Math.max(size * 2, FIRST_BUFFER_BYTES), limit));
      new Uint8Array(grown).set(new Uint8Array(buffer, 0, size));
      buffer = grown;
    }
    const { done, value } = await reader.read(new Uint8Array(buffer, size));
    // The view handed in is transferred: its buffer comes back in `value`.
    if (value) buffer = value.buffer as ArrayBuffer;
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      return await refuseTooLarge(reader);
    }
  }
  return new TextDecoder().decode(new Uint8Array(buffer, 0, size));
}

/** The same with a default reader: chunks collected, decoded once. */
async function readChunks(body: ReadableStream<Uint8Array>, maxBytes: number): Promise<string> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      return await refuseTooLarge(reader);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return new TextDecoder().decode(all);
}

/**
 * `Retry-After` in seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date), clamped to
 * [0, maxS]; undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, nowMs: number, maxS = 3600): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  let s: number;
  if (/^\d+$/.test(v)) s = Number(v);
  else {
    const t = Date.parse(v);
    if (Number.isNaN(t)) return undefined;
    s = Math.ceil((t - nowMs) / 1000);
  }
  return Math.min(Math.max(s, 0), maxS);
}

/** Capped exponential backoff with full jitter: a uniform delay in [0, min(cap, base * 2^attempt)). */
export function backoffMs(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

/** Lower-cased media type of a Content-Type header, without parameters. */
export function mediaType(headers: Headers): string {
  return (headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}
