/**
 * The prepared snapshot: the fleet as the gateway object builds it once per partner answer, and as
 * every isolate holds it. One binary buffer:
 *
 * ```
 * "SNP2" | u32 header length | header (JSON: counts, fetchedAt, etag, sections, dictionaries, checksum)
 * sections, each 8-byte aligned:
 *   off        Uint32[count+1]  byte offset of each item in `text` (off[count] = text length)
 *   lat, lon   Float64[count]   position, by item
 *   fuel       Float64[count]   fuelLevel (NaN: none)
 *   fuelType   Uint16[count]    1 + index into header.fuelTypes (upper case; 0: none)
 *   trans      Uint8[count]     0 none, 1 GA, 2 GM
 *   seats      Uint8[count]     numberOfSeats (0: none)
 *   idx*       Float64/Int32    the spatial index, built once (SpatialIndex.toParts)
 *   text       UTF-8            the JSON array of the redacted vehicles, VIN ascending
 * ```
 *
 * Why this form (measured in workerd, BENCHMARKS.md): an isolate loads it with no JSON.parse of the
 * fleet and no index build (typed-array views over the buffer it received), and answers are
 * copies of byte ranges of `text`, so a request costs what it returns, not what the fleet weighs,
 * and no answer is UTF-8-encoded again. Item i is `text[off[i], off[i+1] - 1)` (the byte before
 * `off[i+1]` is the `,` or the closing `]`); every item starts with `{"vin":"`, so VINs are read
 * from `text` and no VIN column is shipped.
 *
 * Integrity: `loadPrepared` checks the layout and a checksum over every binary section (offsets,
 * columns, index); every item boundary in `text` (`{"vin":"` at each offset, `}` before each
 * separator) is checked before the item is first served (`checkServed`, a block at a time).
 * Which allow-list wrote `text` is fixed by the versioned cache key and format number (tiers.ts).
 */
import { AppError } from "../errors.ts";
import type { SnapshotEnvelope } from "../gateway/types.ts";
import { sha256Hex } from "../hash.ts";
import { TRANSMISSION_TYPES, type Vehicle } from "./schema.ts";
import { type IndexParts, SpatialIndex } from "./spatial-index.ts";

/** Bump when the layout or the item text changes: it retires every cached copy (tiers.ts key). */
export const PREPARED_FORMAT = 2;
const MAGIC = 0x32504e53; // "SNP2", little-endian
const ITEM_PREFIX = '{"vin":"';
const VIN_LENGTH = 17;
/** Hex digits of SHA-256 in the ETag: 128 bits, plenty for a validator. */
const ETAG_HEX_LENGTH = 32;

type Kind = "u8" | "u16" | "u32" | "i32" | "f64";
const SECTIONS = [
  ["off", "u32"],
  ["lat", "f64"],
  ["lon", "f64"],
  ["fuel", "f64"],
  ["fuelType", "u16"],
  ["trans", "u8"],
  ["seats", "u8"],
  ["idxLat", "f64"],
  ["idxLon", "f64"],
  ["idxId", "i32"],
  ["cellCol", "i32"],
  ["cellStart", "i32"],
  ["rowY", "i32"],
  ["rowCellStart", "i32"],
  ["text", "u8"],
] as const satisfies readonly (readonly [string, Kind])[];
type SectionName = (typeof SECTIONS)[number][0];
const BYTES: Record<Kind, number> = { u8: 1, u16: 2, u32: 4, i32: 4, f64: 8 };

interface Header {
  format: number;
  count: number;
  dropped: number;
  fetchedAt: number;
  etag: string;
  cellDeg: number;
  fuelTypes: string[];
  /** Byte offset and element count of each section. */
  sections: Record<SectionName, [number, number]>;
  /** Checksum of every section but `text` (text is checked item by item). */
  checksum: number;
}

/** A loaded prepared snapshot: views over one buffer, plus the index. Immutable; safe in isolate memory. */
export interface Prepared {
  readonly count: number;
  readonly dropped: number;
  readonly fetchedAt: number;
  /** Strong validator of `text` (quoted, RFC 9110 §8.8.3). */
  readonly etag: string;
  /** Size of the buffer (what one transfer moves). */
  readonly bytes: number;
  readonly text: Uint8Array;
  readonly off: Uint32Array;
  readonly lat: Float64Array;
  readonly lon: Float64Array;
  readonly fuel: Float64Array;
  readonly fuelType: Uint16Array;
  readonly fuelTypes: readonly string[];
  readonly trans: Uint8Array;
  readonly seats: Uint8Array;
  readonly index: SpatialIndex;
  /**
   * Blocks of ITEMS_PER_BLOCK items whose boundaries are not checked yet (1) or checked (0):
   * `checkServed` checks a block the first time an answer includes one of its items. The only
   * state that changes in a loaded snapshot, once per block, from 1 to 0.
   */
  readonly unchecked: Uint8Array;
}

const encoder = new TextEncoder();
const align8 = (n: number): number => (n + 7) & ~7;

/** FNV-1a over 32-bit words (little-endian), then the tail bytes. Cheap: about 1 MB per ms. */
function checksum(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  const words = (end - start) >>> 2;
  // Sections are 8-byte aligned in an aligned buffer (loadPrepared copies one that is not).
  const view = new Uint32Array(bytes.buffer, bytes.byteOffset + start, words);
  for (let k = 0; k < words; k++) h = Math.imul(h ^ (view[k] as number), 0x01000193);
  for (let k = start + words * 4; k < end; k++) h = Math.imul(h ^ (bytes[k] as number), 0x01000193);
  return h >>> 0;
}

/**
 * Builds the prepared snapshot from redacted vehicles in VIN order (what `redactVehicles` emits).
 * The item text is `JSON.stringify(vehicle)`, byte for byte what the API has always served.
 */
export async function prepareSnapshot(
  vehicles: readonly Vehicle[],
  meta: { fetchedAt: number; dropped: number },
): Promise<SnapshotEnvelope> {
  const count = vehicles.length;
  const parts: string[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const json = JSON.stringify(vehicles[i]);
    if (!json.startsWith(ITEM_PREFIX)) throw new AppError("internal", { cause: new TypeError("vin must come first") });
    parts[i] = json;
  }
  const textString = `[${parts.join(",")}]`;
  const text = encoder.encode(textString);
  const etag = `"${(await sha256Hex(text)).slice(0, ETAG_HEX_LENGTH)}"`;

  const off = new Uint32Array(count + 1);
  // All ASCII (the usual case): a byte per character, no need to count UTF-8 lengths item by item.
  const ascii = text.length === textString.length;
  let pos = 1;
  for (let i = 0; i < count; i++) {
    off[i] = pos;
    const part = parts[i] as string;
    pos += (ascii ? part.length : utf8Length(part)) + 1;
  }
  off[count] = text.length;

  const lat = new Float64Array(count);
  const lon = new Float64Array(count);
  const fuel = new Float64Array(count);
  const fuelType = new Uint16Array(count);
  const trans = new Uint8Array(count);
  const seats = new Uint8Array(count);
  const fuelTypes: string[] = [];
  const fuelCode = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const v = vehicles[i] as Vehicle;
    lat[i] = v.position.latitude;
    lon[i] = v.position.longitude;
    fuel[i] = v.fuelLevel ?? Number.NaN;
    if (v.fuelType !== undefined) {
      const key = v.fuelType.toUpperCase();
      let code = fuelCode.get(key);
      if (code === undefined) {
        fuelTypes.push(key);
        code = fuelTypes.length;
        fuelCode.set(key, code);
      }
      fuelType[i] = code;
    }
    trans[i] = v.transmissionType === undefined ? 0 : TRANSMISSION_TYPES.indexOf(v.transmissionType) + 1;
    seats[i] = v.numberOfSeats ?? 0;
  }
  const index = new SpatialIndex(vehicles.map((v) => v.position)).toParts();
  const arrays: Record<SectionName, ArrayBufferView> = {
    off,
    lat,
    lon,
    fuel,
    fuelType,
    trans,
    seats,
    idxLat: index.lat,
    idxLon: index.lon,
    idxId: index.id,
    cellCol: index.cellCol,
    cellStart: index.cellStart,
    rowY: index.rowY,
    rowCellStart: index.rowCellStart,
    text,
  };

  // Lay out the sections after a header whose size depends on their offsets: place them after a
  // generous fixed reserve for the header, so one pass suffices.
  const headerReserve = align8(1024 + fuelTypes.reduce((n, f) => n + f.length * 3 + 4, 0) + SECTIONS.length * 48);
  let at = 8 + headerReserve;
  const sections = {} as Record<SectionName, [number, number]>;
  for (const [name, kind] of SECTIONS) {
    const a = arrays[name];
    const length = a.byteLength / BYTES[kind];
    sections[name] = [at, length];
    at = align8(at + a.byteLength);
  }
  const data = new Uint8Array(at);
  for (const [name] of SECTIONS) {
    const a = arrays[name];
    data.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), sections[name][0]);
  }
  const header: Header = {
    format: PREPARED_FORMAT,
    count,
    dropped: meta.dropped,
    fetchedAt: meta.fetchedAt,
    etag,
    cellDeg: index.cellDeg,
    fuelTypes,
    sections,
    checksum: checksum(data, 8 + headerReserve, sections.text[0]),
  };
  const headerBytes = encoder.encode(JSON.stringify(header));
  if (headerBytes.length > headerReserve) throw new AppError("internal", { cause: new RangeError("header too large") });
  const dv = new DataView(data.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, headerBytes.length, true);
  data.set(headerBytes, 8);
  return { data, fetchedAt: meta.fetchedAt, etag, count, dropped: meta.dropped };
}

function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/** Why a prepared snapshot was refused: the cause of the AppError `internal` it is thrown as. */
class DamagedSnapshot extends TypeError {}

function damaged(why: string): AppError {
  return new AppError("internal", { cause: new DamagedSnapshot(`prepared snapshot: ${why}`) });
}

/** True for the error `loadPrepared` or `checkServed` throw for a damaged snapshot. */
export function isDamagedSnapshot(err: unknown): boolean {
  return err instanceof AppError && err.cause instanceof DamagedSnapshot;
}

const PREFIX_BYTES = encoder.encode(ITEM_PREFIX);

/**
 * Loads a prepared snapshot: views over `env.data` (no copy, no JSON.parse of the fleet). Throws
 * AppError `internal` when the buffer is not one `prepareSnapshot` of this format wrote, is
 * damaged, or disagrees with the envelope.
 */
export function loadPrepared(env: SnapshotEnvelope): Prepared {
  const data = env.data;
  if (!(data instanceof Uint8Array) || data.byteLength < 8) throw damaged("no data");
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw damaged("not a prepared snapshot");
  const headerLength = dv.getUint32(4, true);
  if (8 + headerLength > data.byteLength) throw damaged("header out of range");
  let h: Header;
  try {
    h = JSON.parse(new TextDecoder().decode(data.subarray(8, 8 + headerLength))) as Header;
  } catch {
    throw damaged("header unreadable");
  }
  if (h.format !== PREPARED_FORMAT) throw damaged("format");
  if (h.count !== env.count || h.etag !== env.etag || h.fetchedAt !== env.fetchedAt) throw damaged("envelope mismatch");
  const count = h.count;
  // Every buffer handed to a typed array must be 8-aligned: copy once if the transport did not align it.
  const base = data.byteOffset % 8 === 0 ? data : data.slice();
  const views = {} as Record<SectionName, ArrayBufferView>;
  let first = Number.POSITIVE_INFINITY;
  for (const [name, kind] of SECTIONS) {
    const s = h.sections?.[name];
    if (!Array.isArray(s) || !Number.isInteger(s[0]) || !Number.isInteger(s[1]) || s[0] % 8 !== 0 || s[1] < 0) {
      throw damaged(`section ${name}`);
    }
    const [at, length] = s;
    if (at < 8 + headerLength || at + length * BYTES[kind] > base.byteLength) throw damaged(`section ${name} range`);
    first = Math.min(first, at);
    const o = base.byteOffset + at;
    const b = base.buffer;
    views[name] =
      kind === "u8"
        ? new Uint8Array(b, o, length)
        : kind === "u16"
          ? new Uint16Array(b, o, length)
          : kind === "u32"
            ? new Uint32Array(b, o, length)
            : kind === "i32"
              ? new Int32Array(b, o, length)
              : new Float64Array(b, o, length);
  }
  const v = views as unknown as {
    off: Uint32Array;
    lat: Float64Array;
    lon: Float64Array;
    fuel: Float64Array;
    fuelType: Uint16Array;
    trans: Uint8Array;
    seats: Uint8Array;
    idxLat: Float64Array;
    idxLon: Float64Array;
    idxId: Int32Array;
    cellCol: Int32Array;
    cellStart: Int32Array;
    rowY: Int32Array;
    rowCellStart: Int32Array;
    text: Uint8Array;
  };
  if (
    v.off.length !== count + 1 ||
    v.lat.length !== count ||
    v.lon.length !== count ||
    v.fuel.length !== count ||
    v.fuelType.length !== count ||
    v.trans.length !== count ||
    v.seats.length !== count ||
    v.idxLat.length !== count ||
    v.idxId.length !== count
  ) {
    throw damaged("section lengths");
  }
  if (checksum(base, first, h.sections.text[0]) !== h.checksum) throw damaged("checksum");
  checkTextBounds(v.text, v.off, count);
  if (!Array.isArray(h.fuelTypes) || !h.fuelTypes.every((f) => typeof f === "string")) throw damaged("fuel types");
  const parts: IndexParts = {
    cellDeg: h.cellDeg,
    lat: v.idxLat,
    lon: v.idxLon,
    id: v.idxId,
    cellCol: v.cellCol,
    cellStart: v.cellStart,
    rowY: v.rowY,
    rowCellStart: v.rowCellStart,
  };
  return {
    count,
    dropped: h.dropped,
    fetchedAt: h.fetchedAt,
    etag: h.etag,
    bytes: data.byteLength,
    text: v.text,
    off: v.off,
    lat: v.lat,
    lon: v.lon,
    fuel: v.fuel,
    fuelType: v.fuelType,
    fuelTypes: h.fuelTypes,
    trans: v.trans,
    seats: v.seats,
    index: SpatialIndex.fromParts(parts),
    unchecked: new Uint8Array(Math.ceil(count / ITEMS_PER_BLOCK)).fill(1),
  };
}

/** The text's own bounds: `[` first, `]` last, the offsets spanning it. Item boundaries: `checkServed`. */
function checkTextBounds(text: Uint8Array, off: Uint32Array, count: number): void {
  const n = text.length;
  if (text[0] !== 0x5b || off[count] !== n || text[n - 1] !== 0x5d) throw damaged("text bounds");
  if (count === 0 && n !== 2) throw damaged("empty text");
  if (count > 0 && off[0] !== 1) throw damaged("first item");
}

/**
 * Items are checked a block at a time, the first time an answer includes one, not all when the
 * snapshot is loaded: an isolate's first request (the L1 fill) then checks the blocks it serves,
 * not the whole fleet. Checking all 20,000 items cost an L1 fill 1.1-3.6 ms of workerd CPU
 * (bench/compare.ts, BYPASS=memory,cache: 9.2-9.6 ms per fill without, 10.6-12.1 ms with).
 */
const BLOCK_SHIFT = 10;
const ITEMS_PER_BLOCK = 1 << BLOCK_SHIFT;

/**
 * Checks the boundaries of items [from, to) before their bytes are served (their blocks, each once
 * per loaded snapshot). Throws AppError `internal` (a damaged snapshot) on a bad boundary.
 */
export function checkServed(p: Prepared, from: number, to: number): void {
  for (let b = from >> BLOCK_SHIFT; b << BLOCK_SHIFT < to; b++) {
    if (p.unchecked[b] === 0) continue;
    checkItems(p.text, p.off, p.count, b << BLOCK_SHIFT, Math.min(p.count, (b + 1) << BLOCK_SHIFT));
    p.unchecked[b] = 0;
  }
}

/** `checkServed` for the items of a filtered answer, in any order. */
export function checkServedIds(p: Prepared, ids: ArrayLike<number>): void {
  for (let k = 0; k < ids.length; k++) {
    const i = ids[k] as number;
    if (p.unchecked[i >> BLOCK_SHIFT] !== 0) checkServed(p, i, i + 1);
  }
}

/**
 * Item boundaries of items [from, to): per item `{"vin":"` … `"` after the 17 VIN bytes … `}` +
 * `,` or `]`. With the checksum over the offsets, this makes every cut of the text at these
 * offsets a whole object as the writer produced it (about 12 byte reads an item). VIN order and
 * characters are the writer's (prepareSnapshot sorts validated vehicles); they are not re-read
 * here, since that tripled the cost, and a wrong one could only misplace a vehicle, never expose a
 * field (which allow-list wrote the text is fixed by the versioned key).
 */
function checkItems(text: Uint8Array, off: Uint32Array, count: number, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const a = off[i] as number;
    const b = off[i + 1] as number;
    if (b < a + 28 || !itemStartsAt(text, a) || text[b - 2] !== 0x7d || text[b - 1] !== (i + 1 < count ? 0x2c : 0x5d)) {
      throw damaged("item bounds");
    }
  }
}

/** `{"vin":"` (7B 22 76 69 6E 22 3A 22) at `a`, and the VIN's closing quote after its 17 bytes. */
function itemStartsAt(text: Uint8Array, a: number): boolean {
  return (
    text[a] === 0x7b &&
    text[a + 1] === 0x22 &&
    text[a + 2] === 0x76 &&
    text[a + 3] === 0x69 &&
    text[a + 4] === 0x6e &&
    text[a + 5] === 0x22 &&
    text[a + 6] === 0x3a &&
    text[a + 7] === 0x22 &&
    text[a + 25] === 0x22
  );
}

/** The VIN of item i. */
export function vinAt(p: Prepared, i: number): string {
  const a = (p.off[i] as number) + PREFIX_BYTES.length;
  let s = "";
  for (let k = 0; k < VIN_LENGTH; k++) s += String.fromCharCode(p.text[a + k] as number);
  return s;
}

/**
 * Compares item i's VIN with `vin` (17 ASCII characters): `compareVin` (schema.ts), the fleet's
 * order, read from the item's bytes. Not `compareVin(vinAt(p, i), vin)`: building the string at
 * every step of the binary search made findVin about 8x slower (10,000 vehicles, Node).
 */
function compareItemVin(p: Prepared, i: number, vin: string): number {
  // The binary search reads items whose block may not be checked yet: their VIN's frame first.
  if (p.unchecked[i >> BLOCK_SHIFT] !== 0 && !itemStartsAt(p.text, p.off[i] as number)) throw damaged("item bounds");
  const a = (p.off[i] as number) + PREFIX_BYTES.length;
  for (let k = 0; k < VIN_LENGTH; k++) {
    const d = (p.text[a + k] as number) - vin.charCodeAt(k);
    if (d !== 0) return d;
  }
  return 0;
}

/** The first item whose VIN is greater than `vin` (`count` when none). */
export function firstAfterVin(p: Prepared, vin: string): number {
  let lo = 0;
  let hi = p.count;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareItemVin(p, mid, vin) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The item with this VIN, or -1. */
export function findVin(p: Prepared, vin: string): number {
  if (vin.length !== VIN_LENGTH) return -1;
  const i = firstAfterVin(p, vin) - 1;
  if (i < 0 || compareItemVin(p, i, vin) !== 0) return -1;
  checkServed(p, i, i + 1);
  return i;
}

/**
 * The JSON text of the vehicles in a prepared buffer, read through its header only (no checks
 * against an envelope): for diagnostics and for tests that inspect what a cache or storage holds.
 */
export function preparedText(data: Uint8Array): string {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (data.byteLength < 8 || dv.getUint32(0, true) !== MAGIC) throw damaged("not a prepared snapshot");
  const h = JSON.parse(new TextDecoder().decode(data.subarray(8, 8 + dv.getUint32(4, true)))) as Header;
  const [at, length] = h.sections.text;
  return new TextDecoder().decode(data.subarray(at, at + length));
}
