/**
 * Queries and answers over a prepared snapshot (prepared.ts). A query reads the typed-array
 * columns and the prebuilt index; an answer is a copy of byte ranges of the snapshot's JSON text,
 * never a JSON.stringify of vehicles and never a UTF-8 encoding of the fleet. So a request costs
 * in proportion to what it returns: the fleet's size only enters through the filters that scan
 * a column.
 */

import { checkServed, checkServedIds, firstAfterVin, type Prepared, vinAt } from "./prepared.ts";
import { hasFilters, type VehicleQuery } from "./query.ts";

/** An answer to a query: at most `limit` vehicles; `total` counts every match. */
export interface QueryResult {
  /** Items in answer order: a contiguous run `[start, end)` (unfiltered pages), or a list. */
  readonly run?: readonly [number, number];
  readonly ids?: ArrayLike<number>;
  /** With `near`: each answered item's distance in metres (not rounded), aligned with `ids`. */
  readonly distances?: ArrayLike<number>;
  readonly total: number;
  /** VIN of the last item served when more matches follow (the next page's cursor). */
  readonly lastVin?: string;
}

/** Number of vehicles in a result. */
function resultCount(r: QueryResult): number {
  return r.run ? r.run[1] - r.run[0] : (r.ids?.length ?? 0);
}

/** The non-spatial filters of `q` as one predicate over items (undefined: none). */
function attributeFilter(p: Prepared, q: VehicleQuery): ((i: number) => boolean) | undefined {
  const tests: ((i: number) => boolean)[] = [];
  if (q.bbox && q.near) {
    // Both given: the index answers `near`, the box is checked here with the same test as the index's.
    const { minLon, minLat, maxLon, maxLat } = q.bbox;
    const { lat, lon } = p;
    tests.push((i) => {
      const y = lat[i] as number;
      const x = lon[i] as number;
      return y >= minLat && y <= maxLat && x >= minLon && x <= maxLon;
    });
  }
  if (q.fuelTypes) {
    const wanted = new Uint8Array(p.fuelTypes.length + 1);
    p.fuelTypes.forEach((f, k) => {
      if (q.fuelTypes?.includes(f)) wanted[k + 1] = 1;
    });
    const codes = p.fuelType;
    tests.push((i) => wanted[codes[i] as number] === 1);
  }
  if (q.minFuelLevel !== undefined) {
    const min = q.minFuelLevel;
    const fuel = p.fuel;
    // NaN (no level) never passes.
    tests.push((i) => (fuel[i] as number) >= min);
  }
  if (q.transmission) {
    const code = q.transmission === "GA" ? 1 : 2;
    const trans = p.trans;
    tests.push((i) => trans[i] === code);
  }
  if (q.seats) {
    const wanted = new Uint8Array(256);
    for (const n of q.seats) wanted[n] = 1;
    const seats = p.seats;
    tests.push((i) => (seats[i] as number) !== 0 && wanted[seats[i] as number] === 1);
  }
  if (tests.length === 0) return undefined;
  if (tests.length === 1) return tests[0];
  return (i) => tests.every((t) => t(i));
}

/**
 * Applies every filter of `q`, then the cursor and `limit`. With `near`: the nearest `limit`
 * (a bounded selection, not a sort of every hit), sorted by distance, ties by VIN. Otherwise: VIN
 * order, from the item after the cursor's VIN. `total` counts every match, cursor or not.
 */
export function queryVehicles(p: Prepared, q: VehicleQuery): QueryResult {
  const start = q.after === undefined ? 0 : firstAfterVin(p, q.after);
  if (!hasFilters(q)) {
    const end = Math.min(p.count, start + q.limit);
    return withNext(p, { run: [start, end], total: p.count }, end < p.count);
  }
  const keep = attributeFilter(p, q);

  if (q.near) {
    const { ids, distances } = p.index.near(q.near.lat, q.near.lon, q.near.radiusM);
    const top = new TopK(q.limit);
    let total = 0;
    for (let k = 0; k < ids.length; k++) {
      const i = ids[k] as number;
      if (keep && !keep(i)) continue;
      total++;
      top.offer(distances[k] as number, i);
    }
    const sorted = top.sorted();
    return withNext(p, { ids: sorted.ids, distances: sorted.distances, total }, false);
  }

  const out: number[] = [];
  let total = 0;
  let more = false;
  const take = (i: number): void => {
    if (keep && !keep(i)) return;
    total++;
    if (i < start) return;
    if (out.length < q.limit) out.push(i);
    else more = true;
  };
  if (q.bbox) {
    for (const i of p.index.within(q.bbox)) take(i);
  } else {
    for (let i = 0; i < p.count; i++) take(i);
  }
  return withNext(p, { ids: out, total }, more);
}

/** The result, its items checked before any is served (prepared.ts), with the next cursor when more follow. */
function withNext(p: Prepared, r: QueryResult, more: boolean): QueryResult {
  if (r.run) checkServed(p, r.run[0], r.run[1]);
  else if (r.ids) checkServedIds(p, r.ids);
  if (!more) return r;
  const last = r.run ? r.run[1] - 1 : (r.ids?.[r.ids.length - 1] as number);
  return { ...r, lastVin: vinAt(p, last) };
}

/**
 * The `k` smallest (distance, item) pairs seen, ties by item (= by VIN: items are in VIN order).
 * A max-heap of size k: O(n log k) for n offers, memory O(k).
 */
class TopK {
  readonly #k: number;
  readonly #d: number[] = [];
  readonly #i: number[] = [];
  constructor(k: number) {
    this.#k = k;
  }
  #less(a: number, b: number): boolean {
    const d = this.#d;
    return (d[a] as number) < (d[b] as number) || (d[a] === d[b] && (this.#i[a] as number) < (this.#i[b] as number));
  }
  #swap(a: number, b: number): void {
    const d = this.#d;
    const ids = this.#i;
    [d[a], d[b]] = [d[b] as number, d[a] as number];
    [ids[a], ids[b]] = [ids[b] as number, ids[a] as number];
  }
  offer(distance: number, item: number): void {
    const d = this.#d;
    const ids = this.#i;
    if (d.length < this.#k) {
      d.push(distance);
      ids.push(item);
      // Sift up: the root is the largest.
      let c = d.length - 1;
      while (c > 0) {
        const parent = (c - 1) >> 1;
        if (!this.#less(parent, c)) break;
        this.#swap(parent, c);
        c = parent;
      }
      return;
    }
    if (this.#k === 0) return;
    const root = d[0] as number;
    if (distance > root || (distance === root && item > (ids[0] as number))) return;
    d[0] = distance;
    ids[0] = item;
    // Sift down.
    let c = 0;
    for (;;) {
      const l = 2 * c + 1;
      const r = l + 1;
      let big = c;
      if (l < d.length && this.#less(big, l)) big = l;
      if (r < d.length && this.#less(big, r)) big = r;
      if (big === c) break;
      this.#swap(c, big);
      c = big;
    }
  }
  sorted(): { ids: number[]; distances: number[] } {
    const order = this.#d.map((_, k) => k).sort((a, b) => (this.#less(a, b) ? -1 : this.#less(b, a) ? 1 : 0));
    return { ids: order.map((k) => this.#i[k] as number), distances: order.map((k) => this.#d[k] as number) };
  }
}

/**
 * Writes ASCII strings and byte ranges into one buffer: two passes (measure, then copy), one
 * allocation. Every string written here is ASCII (JSON punctuation, numbers, ISO dates, URLs built
 * from parsed, canonical queries); the vehicles' own bytes are copied as they are.
 */
class Bytes {
  readonly #parts: (string | [number, number])[] = [];
  #length = 0;
  readonly #source: Uint8Array;
  constructor(source: Uint8Array) {
    this.#source = source;
  }
  ascii(s: string): this {
    this.#parts.push(s);
    this.#length += s.length;
    return this;
  }
  range(a: number, b: number): this {
    const last = this.#parts[this.#parts.length - 1];
    // Adjacent ranges (consecutive items with their separator) become one copy.
    if (Array.isArray(last) && last[1] === a) last[1] = b;
    else this.#parts.push([a, b]);
    this.#length += b - a;
    return this;
  }
  get length(): number {
    return this.#length;
  }
  build(): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(this.#length);
    this.#copy(out, 0, this.#length);
    return out;
  }
  /** The same bytes as a Blob, copied once, by the runtime, from the parts (the ranges as views). */
  blob(): Blob {
    return new Blob(
      this.#parts.map((part) =>
        typeof part === "string" ? part : (this.#source.subarray(part[0], part[1]) as Uint8Array<ArrayBuffer>),
      ),
    );
  }
  /** The longest range of the source in the body (0 when none). */
  longestRange(): number {
    let n = 0;
    for (const part of this.#parts) if (typeof part !== "string") n = Math.max(n, part[1] - part[0]);
    return n;
  }
  /**
   * The same bytes as a stream, made as the reader pulls: a range of the snapshot's text of at
   * least `viewMin` bytes goes out as views of it of at most `viewMax` bytes (no copy: the
   * unfiltered page is a head, a view and a tail), everything else as copies of at most `chunk`
   * bytes (a filtered answer is thousands of small parts). A large answer never exists whole in the
   * isolate. `onEnd` is called once, when the last piece is handed over or the reader cancels.
   */
  stream(chunk: number, viewMin: number, viewMax: number, onEnd: () => void): ReadableStream<Uint8Array<ArrayBuffer>> {
    const pieces = this.#plan(chunk, viewMin, viewMax);
    let i = 0;
    let ended = false;
    const end = () => {
      if (!ended) onEnd();
      ended = true;
    };
    return new ReadableStream<Uint8Array<ArrayBuffer>>(
      {
        cancel: end,
        pull: (controller) => {
          const piece = pieces[i++] as Piece;
          if ("view" in piece) {
            controller.enqueue(this.#source.subarray(piece.view[0], piece.view[1]) as Uint8Array<ArrayBuffer>);
          } else {
            const out = new Uint8Array(piece.to - piece.from);
            this.#copy(out, piece.from, out.length, piece.k, piece.pos);
            controller.enqueue(out);
          }
          if (i >= pieces.length) {
            controller.close();
            end();
          }
        },
      },
      { highWaterMark: 0 },
    );
  }
  /** The pieces of `stream`, in order. */
  #plan(chunk: number, viewMin: number, viewMax: number): Piece[] {
    const pieces: Piece[] = [];
    // A copy piece being filled: where it starts in the body, and the part holding that byte.
    let open: { from: number; k: number; pos: number } | undefined;
    let pos = 0; // where part k starts in the body
    for (let k = 0; k < this.#parts.length; k++) {
      const part = this.#parts[k] as string | [number, number];
      const len = partLength(part);
      if (typeof part !== "string" && len >= viewMin) {
        if (open) pieces.push({ from: open.from, to: pos, k: open.k, pos: open.pos });
        open = undefined;
        // Views of at most `viewMax` bytes: the runtime copies what a reader has pulled and not yet
        // sent, so one 2 MB view per answer held 1.2 GB in a stampede of 500 (bench/stampede.ts).
        for (let a = part[0]; a < part[1]; a += viewMax) pieces.push({ view: [a, Math.min(a + viewMax, part[1])] });
      } else {
        for (let at = pos; at < pos + len; ) {
          open ??= { from: at, k, pos };
          at = Math.min(open.from + chunk, pos + len);
          if (at - open.from === chunk) {
            pieces.push({ from: open.from, to: at, k: open.k, pos: open.pos });
            open = undefined;
          }
        }
      }
      pos += len;
    }
    if (open) pieces.push({ from: open.from, to: pos, k: open.k, pos: open.pos });
    return pieces;
  }
  /** Copies bytes [from, from + n) of the body into `out`, starting the search at part `k` (at `pos`). */
  #copy(out: Uint8Array, from: number, n: number, k = 0, pos = 0): void {
    const end = from + n;
    for (let i = k; i < this.#parts.length && pos < end; i++) {
      const part = this.#parts[i] as string | [number, number];
      const len = partLength(part);
      const a = Math.max(from, pos);
      const b = Math.min(end, pos + len);
      if (a < b) {
        const dst = a - from;
        if (typeof part === "string") {
          for (let c = a; c < b; c++) out[dst + c - a] = part.charCodeAt(c - pos);
        } else {
          out.set(this.#source.subarray(part[0] + a - pos, part[0] + b - pos), dst);
        }
      }
      pos += len;
    }
  }
}

/** A piece of a streamed body: a range of the source as a view, or bytes [from, to) of the body copied. */
type Piece = { view: [number, number] } | { from: number; to: number; k: number; pos: number };

function partLength(part: string | [number, number]): number {
  return typeof part === "string" ? part.length : part[1] - part[0];
}

/** `fetchedAt` as every answer of a snapshot writes it: formatted once per snapshot, not per request. */
const isoOf = new WeakMap<Prepared, string>();
function fetchedAtIso(p: Prepared): string {
  let iso = isoOf.get(p);
  if (iso === undefined) {
    iso = new Date(p.fetchedAt).toISOString();
    isoOf.set(p, iso);
  }
  return iso;
}

/**
 * The body of `GET /v1/vehicles`: `{ vehicles, count, total, fetchedAt, stale[, next] }`, the
 * vehicles copied from the snapshot's text. `next` (a URL reference of the next page) only when
 * more matches follow. Byte for byte what `JSON.stringify` of the same answer gives.
 */
export function serializeVehicles(
  p: Prepared,
  r: QueryResult,
  opts: { stale: boolean; next?: string },
): Uint8Array<ArrayBuffer> {
  return writeVehicles(p, r, opts).build();
}

/**
 * When a body streams (`vehiclesBody`): when it holds a range of the snapshot's text of at least
 * BODY_VIEW_BYTES (sent as a view of it, not copied), or when it is larger than BODY_STREAM_BYTES
 * (a filtered answer of thousands of items, copied BODY_CHUNK_BYTES at a time as the reader pulls);
 * anything else goes whole, one buffer in one turn of the event loop.
 *
 * The runtime copies each piece it is handed until it is sent, so the pieces in flight are what
 * many large answers at once cost in memory: one 2 MB view per answer held 1.2 GB in a cold
 * stampede of 500 (`bench/stampede.ts`), views of 1 MiB 743 MiB, pieces of 256 KiB about 400 MiB.
 * So a range goes as one view while fewer than MANY_STREAMS large answers of this isolate are in
 * flight, and as views of BODY_CHUNK_BYTES when more are. Measured in workerd, a bare Worker
 * sending the same bytes (CPU per request; 816 KB page / 2 MB page): a head, one view and a tail
 * 729 / 1,639 µs; views of 256 KiB 871 / 1,709; one fresh buffer 830 / 2,155; a fresh string
 * 835 / 2,044; the long-lived buffer alone 1,197 at 816 KB. Below a few hundred KB one buffer
 * costs less than a stream's fixed cost.
 */
const BODY_VIEW_BYTES = 256 * 1024;
const BODY_STREAM_BYTES = 1024 * 1024;
const BODY_CHUNK_BYTES = 256 * 1024;
const MANY_STREAMS = 16;

/** Streamed answers of this isolate not finished yet: plain state of the isolate, no promise. */
let streamsOpen = 0;
const streamEnded = () => {
  streamsOpen--;
};

/**
 * Bodies that are mostly one range of the snapshot's text (unfiltered pages), kept per snapshot as
 * Blobs and answered as they are: a Response of a Blob is sent by the runtime from the Blob's own
 * bytes, with a Content-Length, no copy and no JavaScript stream. Measured in workerd (a bare Worker,
 * CPU per request, 816 KB / 2 MB): a Blob 529-603 / 806-1,034 µs, a head, one view and a tail
 * streamed 705-726 / 1,351-1,489, a fresh string 790-944 / 1,685-2,070, a Blob concatenated per
 * request 1,224-1,396 at 816 KB. At most BODY_BLOBS_PER_SNAPSHOT bodies, holding together no more
 * than the snapshot's text and BODY_BLOBS_SLACK (the whole fleet as one page is its text plus a head
 * and a tail), and never more than BODY_BLOBS_MAX_BYTES; they go with the snapshot (a WeakMap). So
 * a snapshot costs an isolate at most its buffer plus min(text, 16 MiB): at 20,000 vehicles 9.2 +
 * 8.5 MB, at 50,000 23 + 16 MB, twice that while an old snapshot is still being served.
 */
const BODY_BLOBS_PER_SNAPSHOT = 8;
const BODY_BLOBS_SLACK = 64 * 1024;
const BODY_BLOBS_MAX_BYTES = 16 * 1024 * 1024;
const bodyBlobs = new WeakMap<Prepared, { bytes: number; byKey: Map<string, Blob> }>();

/**
 * The body of `GET /v1/vehicles`: whole when small, a Blob kept for the snapshot when mostly one
 * range and `opts.keep` names it (the canonical query and the stale flag: what decides the bytes),
 * streamed when large or mostly one range.
 */
export function vehiclesBody(
  p: Prepared,
  r: QueryResult,
  opts: { stale: boolean; next?: string; keep?: string },
  chunk = BODY_CHUNK_BYTES,
  threshold = BODY_STREAM_BYTES,
  viewMin = BODY_VIEW_BYTES,
): Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array<ArrayBuffer>> | Blob {
  const kept = opts.keep === undefined ? undefined : bodyBlobs.get(p);
  const hit = opts.keep === undefined ? undefined : kept?.byKey.get(opts.keep);
  if (hit) return hit;
  const b = writeVehicles(p, r, opts);
  const longest = b.longestRange();
  if (b.length <= threshold && longest < viewMin) return b.build();
  if (opts.keep !== undefined && longest >= viewMin) {
    const blobs = kept ?? { bytes: 0, byKey: new Map<string, Blob>() };
    if (
      blobs.byKey.size < BODY_BLOBS_PER_SNAPSHOT &&
      blobs.bytes + b.length <= Math.min(p.text.length + BODY_BLOBS_SLACK, BODY_BLOBS_MAX_BYTES)
    ) {
      const blob = b.blob();
      blobs.byKey.set(opts.keep, blob);
      blobs.bytes += b.length;
      if (!kept) bodyBlobs.set(p, blobs);
      return blob;
    }
  }
  const viewMax = streamsOpen >= MANY_STREAMS ? chunk : Number.POSITIVE_INFINITY;
  streamsOpen++;
  return b.stream(chunk, viewMin, viewMax, streamEnded);
}

function writeVehicles(p: Prepared, r: QueryResult, opts: { stale: boolean; next?: string }): Bytes {
  const b = new Bytes(p.text);
  b.ascii('{"vehicles":[');
  const { off } = p;
  if (r.run) {
    const [s, e] = r.run;
    // Items s..e-1 with the commas between them: one contiguous range.
    if (e > s) b.range(off[s] as number, (off[e] as number) - 1);
  } else if (r.ids) {
    const { ids, distances } = r;
    for (let k = 0; k < ids.length; k++) {
      const i = ids[k] as number;
      if (k > 0) b.ascii(",");
      if (distances) {
        // `distanceM` goes last, as JSON.stringify of `{ ...vehicle, distanceM }` puts it.
        b.range(off[i] as number, (off[i + 1] as number) - 2);
        b.ascii(`,"distanceM":${Math.round(distances[k] as number)}}`);
      } else {
        b.range(off[i] as number, (off[i + 1] as number) - 1);
      }
    }
  }
  b.ascii(`],"count":${resultCount(r)},"total":${r.total},"fetchedAt":"${fetchedAtIso(p)}",`);
  b.ascii(`"stale":${opts.stale ? "true" : "false"}`);
  if (opts.next !== undefined) b.ascii(`,"next":${JSON.stringify(opts.next)}`);
  b.ascii("}");
  return b;
}

/** The body of `GET /v1/vehicles/{vin}`: `{ vehicle, fetchedAt, stale }`. */
export function serializeVehicle(p: Prepared, i: number, opts: { stale: boolean }): Uint8Array<ArrayBuffer> {
  return new Bytes(p.text)
    .ascii('{"vehicle":')
    .range(p.off[i] as number, (p.off[i + 1] as number) - 1)
    .ascii(`,"fetchedAt":"${fetchedAtIso(p)}","stale":${opts.stale ? "true" : "false"}}`)
    .build();
}
