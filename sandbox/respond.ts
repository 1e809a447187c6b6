/// <reference types="node" />
/**
 * Response writers for the fault switches, and the bookkeeping that lets `clearFaults`, `reset`
 * and `close` end what a fault left hanging (parked responses, trickle timers).
 */
import type { ServerResponse } from "node:http";
import type { OversizeFault, SlowBodyFault } from "./faults.ts";

/** Tracks timers and parked responses so none outlives the sandbox. */
export class Lifecycle {
  #timers = new Set<NodeJS.Timeout>();
  #parked = new Set<ServerResponse>();

  /** Resolves after `ms`, unless `close()` comes first (then it never resolves: nothing waits on a dead server). */
  delay(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        resolve();
      }, ms);
      this.#timers.add(timer);
    });
  }

  /** Keeps `res` open, unanswered, until `release()` or `close()`. */
  park(res: ServerResponse): void {
    this.#parked.add(res);
    res.once("close", () => this.#parked.delete(res));
  }

  /** How many responses are parked (hang, stalled body). */
  get parked(): number {
    return this.#parked.size;
  }

  /** Drops the connections of parked responses: the client sees a reset, as from a dead upstream. */
  release(): void {
    for (const res of this.#parked) res.destroy();
    this.#parked.clear();
  }

  /** Releases everything and cancels every timer. */
  close(): void {
    this.release();
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }
}

/** Writes a complete response with Content-Length. */
export function send(
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  body: string | Buffer = "",
): void {
  const buf = typeof body === "string" ? Buffer.from(body) : body;
  res.writeHead(status, { ...headers, "content-length": String(buf.length) });
  res.end(buf);
}

/** JSON with the headers an OAuth server sends (RFC 6749 §5.1: no-store). */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  send(
    res,
    status,
    { "content-type": "application/json", "cache-control": "no-store", ...headers },
    JSON.stringify(body),
  );
}

/** Waits until `res` can take more, or is gone. Returns false when gone. */
function drained(res: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => () => {
      res.off("drain", onDrain);
      res.off("close", onClose);
      resolve(ok);
    };
    const onDrain = done(true);
    const onClose = done(false);
    res.once("drain", onDrain);
    res.once("close", onClose);
  });
}

/**
 * Headers at once, then `body` in small chunks; with `stallAfterBytes` it stops there and the
 * response is parked (never ends) until released.
 */
export async function trickle(
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  body: Buffer,
  fault: SlowBodyFault,
  life: Lifecycle,
): Promise<void> {
  const chunkBytes = fault.chunkBytes ?? 64;
  const intervalMs = fault.intervalMs ?? 100;
  const stallAt = fault.stallAfterBytes ?? Number.POSITIVE_INFINITY;
  // No Content-Length: a client must not learn the size up front, only by reading.
  res.writeHead(status, headers);
  res.flushHeaders();
  let sent = 0;
  while (sent < body.length) {
    if (res.destroyed) return;
    if (sent >= stallAt) {
      life.park(res);
      return;
    }
    const end = Math.min(body.length, sent + chunkBytes, stallAt);
    res.write(body.subarray(sent, end));
    sent = end;
    await life.delay(intervalMs);
  }
  if (sent >= stallAt) life.park(res);
  else res.end();
}

/**
 * A syntactically valid JSON body of at least `mb` MiB: `head`, then `unit` repeated, then
 * `tail`. Written with backpressure so a client that stops reading does not balloon our memory.
 */
export async function oversize(
  res: ServerResponse,
  headers: Record<string, string>,
  parts: { head: string; unit: string; tail: string },
  fault: OversizeFault,
): Promise<void> {
  const target = Math.ceil((fault.mb ?? 20) * 1024 * 1024);
  const head = Buffer.from(parts.head);
  const tail = Buffer.from(parts.tail);
  const unit = Buffer.from(parts.unit);
  const units = Math.max(1, Math.ceil((target - head.length - tail.length) / unit.length));
  const total = head.length + units * unit.length + tail.length;
  const perBlock = Math.max(1, Math.floor(65_536 / unit.length));
  const block = Buffer.concat(Array.from({ length: perBlock }, () => unit));
  res.writeHead(200, fault.declareLength ? { ...headers, "content-length": String(total) } : headers);
  res.write(head);
  for (let left = units; left > 0; left -= perBlock) {
    if (res.destroyed) return;
    const chunk = left >= perBlock ? block : block.subarray(0, left * unit.length);
    if (!res.write(chunk) && !(await drained(res))) return;
  }
  res.end(tail);
}
