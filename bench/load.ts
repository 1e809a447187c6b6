/// <reference types="node" />
/**
 * The load generator: a minimal HTTP/1.1 keep-alive client on raw sockets, run as a child
 * process so it can sit on its own core (`taskset -c 1 node bench/load.ts '<json spec>'`); it
 * prints one JSON line.
 *
 * Why not autocannon: for the 816 KB full-fleet answer autocannon spent about 2 ms of CPU per
 * response, more than workerd spent producing it, so it measured itself. This client only
 * counts body bytes (Content-Length or chunked), so it stays far below the server's cost.
 *
 * Modes: closed loop (`connections` each send the next request when the answer is complete) for
 * throughput; fixed rate (`rate`, requests per second over all connections) for latency, timed
 * from the moment each request was due (so a stall counts, no coordinated omission); `burst`:
 * every connection opened first, then one request on each written at once (a stampede).
 */
import { connect, type Socket } from "node:net";

export interface LoadSpec {
  url: string;
  connections: number;
  headers?: Record<string, string>;
  /** Seconds (closed loop and fixed rate). */
  durationS?: number;
  /** Fixed rate, requests per second. */
  rate?: number;
  /** One request per connection, all written together; the run ends when all are answered. */
  burst?: boolean;
  /** A request not answered within this is a timeout (its connection is replaced). Default 10 s. */
  timeoutS?: number;
}

export interface LoadResult {
  /** Requests answered (any status). */
  requests: number;
  ok: number;
  non2xx: number;
  /** Socket errors and malformed answers. */
  errors: number;
  timeouts: number;
  durationS: number;
  /** Answered requests per second. */
  rps: number;
  /** Latency percentiles over all answered requests, ms. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Time to the first byte of the answer, over all answered requests, ms (burst: min, p50, p99). */
  ttfb: { min: number; p50: number; p99: number };
  /** Body bytes received. */
  bytes: number;
  statusCodes: Record<string, number>;
  /** CPU seconds this load generator used (is the client the bottleneck?). */
  clientCpuS: number;
  /** Idle connections the server closed, replaced before use (not errors). */
  reconnects: number;
  /** The first few failures: when (ms after the start), what, and for a timeout when it was sent. */
  failures: { atMs: number; kind: "error" | "timeout" | "status"; status?: number; sentAtMs?: number }[];
}

const CRLFCRLF = Buffer.from("\r\n\r\n");
/** workerd closes a keep-alive connection idle for 5 s: one idle this long is replaced before use. */
const IDLE_REPLACE_MS = 4_000;

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

/** The one read buffer of every connection (see Conn.open). */
const READ_BUFFER_BYTES = 1 << 20;
const readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

/** One keep-alive connection: send a request, parse just enough of the answer to know its end. */
class Conn {
  readonly #host: string;
  readonly #port: number;
  readonly #request: Buffer;
  readonly #onDone: (c: Conn, status: number | undefined, bodyBytes: number) => void;
  #socket: Socket | undefined;
  #head: Buffer = Buffer.alloc(0);
  #inBody = false;
  #status = 0;
  #remaining = 0;
  #chunked = false;
  /** Chunked: the text of a chunk-size line not yet complete, or "trailer" handling. */
  #chunkLine = "";
  #chunkState: "size" | "data" | "crlf" | "trailer" = "size";
  #bodyBytes = 0;
  busy = false;
  /**
   * The server closed the connection while it was idle (workerd: after 5 s). A write to it would
   * vanish without an error, so such a connection, or one idle long enough to be closed any
   * moment, is replaced before it is used.
   */
  closed = false;
  idleSince = 0;
  startedAt = 0;
  /** When the first byte of the current answer arrived (0: none yet). */
  firstByteAt = 0;

  constructor(
    host: string,
    port: number,
    request: Buffer,
    onDone: (c: Conn, status: number | undefined, bodyBytes: number) => void,
  ) {
    this.#host = host;
    this.#port = port;
    this.#request = request;
    this.#onDone = onDone;
  }

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      // Reads land in one buffer shared by every connection (`onread`): no Buffer allocated per
      // read, and reads of up to READ_BUFFER_BYTES. #data handles each read before the next one
      // and copies what it keeps (an incomplete head).
      const s = connect({
        host: this.#host,
        port: this.#port,
        noDelay: true,
        onread: {
          buffer: readBuffer,
          callback: (n: number, buf: Uint8Array): boolean => {
            this.#data(Buffer.from(buf.buffer, buf.byteOffset, n));
            return true;
          },
        },
      });
      this.#socket = s;
      s.once("connect", () => {
        this.idleSince = performance.now();
        resolve();
      });
      s.on("error", (err) => {
        if (!this.busy) reject(err);
        this.#fail();
      });
      s.on("close", () => {
        this.closed = true;
        if (this.busy) this.#fail();
      });
    });
  }

  send(dueAt: number): void {
    this.busy = true;
    this.startedAt = dueAt;
    this.firstByteAt = 0;
    this.#head = Buffer.alloc(0);
    this.#inBody = false;
    this.#bodyBytes = 0;
    this.#socket?.write(this.#request);
  }

  close(): void {
    this.busy = false;
    this.#socket?.destroy();
  }

  #fail(): void {
    if (!this.busy) return;
    this.busy = false;
    this.#socket?.destroy();
    this.#onDone(this, undefined, 0);
  }

  #finish(): void {
    this.busy = false;
    this.idleSince = performance.now();
    this.#onDone(this, this.#status, this.#bodyBytes);
  }

  #data(d: Buffer): void {
    if (!this.busy) return;
    if (this.firstByteAt === 0) this.firstByteAt = performance.now();
    let buf = d;
    if (!this.#inBody) {
      const source = this.#head.length === 0 ? buf : Buffer.concat([this.#head, buf]);
      const end = source.indexOf(CRLFCRLF);
      if (end < 0) {
        // Kept as a copy: `d` is the shared read buffer, overwritten by the next read.
        this.#head = source === buf ? Buffer.from(buf) : source;
        return;
      }
      this.#head = Buffer.alloc(0);
      const head = source.subarray(0, end).toString("latin1");
      buf = source.subarray(end + 4);
      const lines = head.split("\r\n");
      this.#status = Number(lines[0]?.split(" ")[1]);
      let length = -1;
      this.#chunked = false;
      for (const line of lines) {
        const colon = line.indexOf(":");
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        if (name === "content-length") length = Number(value);
        else if (name === "transfer-encoding" && value.toLowerCase().includes("chunked")) this.#chunked = true;
      }
      this.#inBody = true;
      this.#chunkState = "size";
      this.#chunkLine = "";
      if (!this.#chunked) {
        if (length < 0) {
          // No framing we can follow on a keep-alive connection.
          this.#fail();
          return;
        }
        this.#remaining = length;
      }
    }
    if (!this.#chunked) {
      this.#bodyBytes += Math.min(buf.length, this.#remaining);
      this.#remaining -= buf.length;
      if (this.#remaining <= 0) this.#finish();
      return;
    }
    this.#chunks(buf);
  }

  /** Chunked transfer coding (RFC 9112 §7.1), counting data bytes. */
  #chunks(buf: Buffer): void {
    let i = 0;
    while (i < buf.length) {
      if (this.#chunkState === "data") {
        const n = Math.min(this.#remaining, buf.length - i);
        this.#bodyBytes += n;
        this.#remaining -= n;
        i += n;
        if (this.#remaining === 0) {
          this.#chunkState = "crlf";
          this.#chunkLine = "";
        }
        continue;
      }
      const nl = buf.indexOf(10, i);
      const piece = buf.subarray(i, nl < 0 ? buf.length : nl + 1).toString("latin1");
      i = nl < 0 ? buf.length : nl + 1;
      this.#chunkLine += piece;
      if (nl < 0) return;
      const line = this.#chunkLine.trim();
      this.#chunkLine = "";
      if (this.#chunkState === "crlf") {
        this.#chunkState = "size";
      } else if (this.#chunkState === "size") {
        const size = Number.parseInt(line.split(";")[0] ?? "", 16);
        if (!Number.isFinite(size)) {
          this.#fail();
          return;
        }
        if (size === 0) this.#chunkState = "trailer";
        else {
          this.#remaining = size;
          this.#chunkState = "data";
        }
      } else if (line === "") {
        // The empty line after the (usually empty) trailer section.
        this.#finish();
        return;
      }
    }
  }
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const url = new URL(spec.url);
  const host = url.hostname;
  const port = Number(url.port || 80);
  const headerLines = Object.entries({ host: url.host, ...spec.headers })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("");
  const request = Buffer.from(`GET ${url.pathname}${url.search} HTTP/1.1\r\n${headerLines}\r\n`, "latin1");
  const timeoutMs = (spec.timeoutS ?? 10) * 1000;
  const durationMs = (spec.durationS ?? 5) * 1000;

  const latencies: number[] = [];
  const firstBytes: number[] = [];
  const statusCodes: Record<string, number> = {};
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  let timeouts = 0;
  let bytes = 0;
  let reconnects = 0;
  let stopping = false;
  let finishRun: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    finishRun = resolve;
  });

  const idle: Conn[] = [];
  const conns: Conn[] = [];
  let t0 = 0;
  const now = () => performance.now();

  const failures: LoadResult["failures"] = [];
  const failed = (f: LoadResult["failures"][number]) => {
    if (failures.length < 20) failures.push(f);
  };

  const onDone = (c: Conn, status: number | undefined, bodyBytes: number): void => {
    if (status === undefined) {
      errors++;
      failed({ atMs: now() - t0, kind: "error", sentAtMs: c.startedAt - t0 });
      // Replace a broken connection (bounded: at most one reconnect per failure).
      void replace(c);
    } else {
      latencies.push(now() - c.startedAt);
      firstBytes.push(c.firstByteAt - c.startedAt);
      statusCodes[status] = (statusCodes[status] ?? 0) + 1;
      if (status >= 200 && status < 300) ok++;
      else {
        non2xx++;
        failed({ atMs: now() - t0, kind: "status", status, sentAtMs: c.startedAt - t0 });
      }
      bytes += bodyBytes;
      idle.push(c);
    }
    next();
  };

  async function replace(c: Conn): Promise<void> {
    const i = conns.indexOf(c);
    if (stopping) return;
    const fresh = new Conn(host, port, request, onDone);
    try {
      await fresh.open();
    } catch {
      errors++;
      failed({ atMs: now() - t0, kind: "error" });
      return;
    }
    if (i >= 0) conns[i] = fresh;
    idle.push(fresh);
    next();
  }

  /** Closed loop or fixed rate: hand due requests to idle connections. */
  let due = 0;
  function next(): void {
    if (spec.burst) {
      if (latencies.length + errors + timeouts >= conns.length) finishRun();
      return;
    }
    if (stopping) {
      if (conns.every((c) => !c.busy)) finishRun();
      return;
    }
    while (idle.length > 0) {
      const last = idle[idle.length - 1] as Conn;
      if (last.closed || now() - last.idleSince > IDLE_REPLACE_MS) {
        idle.pop();
        last.close();
        reconnects++;
        void replace(last);
        continue;
      }
      let dueAt: number;
      if (spec.rate !== undefined) {
        dueAt = t0 + (due * 1000) / spec.rate;
        if (dueAt > now()) break;
        due++;
      } else {
        dueAt = now();
      }
      const c = idle.pop() as Conn;
      c.send(dueAt);
    }
  }

  for (let i = 0; i < spec.connections; i++) conns.push(new Conn(host, port, request, onDone));
  // Open in batches: a stampede of connects is not what is measured.
  for (let i = 0; i < conns.length; i += 50) await Promise.all(conns.slice(i, i + 50).map((c) => c.open()));

  const cpu0 = process.cpuUsage();
  t0 = now();
  const watchdog = setInterval(() => {
    const t = now();
    for (const c of conns) {
      if (c.busy && t - c.startedAt > timeoutMs) {
        timeouts++;
        failed({ atMs: t - t0, kind: "timeout", sentAtMs: c.startedAt - t0 });
        c.close();
        void replace(c);
      }
    }
    if (!spec.burst && t - t0 >= durationMs && !stopping) {
      stopping = true;
      next();
    }
    // Never wait for stragglers beyond the timeout (every loop here is bounded in time).
    if (t - t0 >= (spec.burst ? 0 : durationMs) + timeoutMs + 1000) finishRun();
  }, 50);
  const pacer = spec.rate !== undefined ? setInterval(next, 1) : undefined;

  if (spec.burst) {
    for (const c of conns) {
      c.send(t0);
    }
  } else {
    idle.push(...conns);
    next();
  }
  await finished;
  const elapsedMs = now() - t0;
  clearInterval(watchdog);
  if (pacer) clearInterval(pacer);
  const cpu = process.cpuUsage(cpu0);
  for (const c of conns) c.close();

  const sorted = Float64Array.from(latencies).sort();
  const sortedFirst = Float64Array.from(firstBytes).sort();
  const durationS = elapsedMs / 1000;
  return {
    requests: latencies.length,
    ok,
    non2xx,
    errors,
    timeouts,
    durationS,
    rps: latencies.length / durationS,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: percentile(sorted, 100),
    ttfb: { min: percentile(sortedFirst, 0), p50: percentile(sortedFirst, 50), p99: percentile(sortedFirst, 99) },
    bytes,
    statusCodes,
    clientCpuS: (cpu.user + cpu.system) / 1e6,
    reconnects,
    failures,
  };
}

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2] ?? "{}") as LoadSpec;
  const result = await runLoad(spec);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}
