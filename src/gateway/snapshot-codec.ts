/**
 * How the gateway's last good snapshot is stored.
 * - In its own key-value store (Durable Object storage, or memory), across resets: the prepared
 *   bytes as they are, in parts under the store's value limit (`storeRecords`, `loadStored`).
 *   Not compressed: gzip of the 9.2 MB prepared snapshot of 20,000 vehicles took the object about
 *   0.3 s of CPU on every refresh (workerd, bench/stampede.ts), during which the one object
 *   answers nobody; writing the parts takes SQLite a few milliseconds.
 * - In the replicas' shared store (Deno/Bun, over the network): one gzip-compressed record
 *   (`storedSnapshotCodec`), 1.3 MB instead of 9.2 MB at 20,000 vehicles.
 * A record not written by this module reads as nothing.
 */
import type { KeyValueStore } from "../ports.ts";
import type { SnapshotEnvelope } from "./types.ts";

/** Storage key of the last good envelope. */
export const SNAPSHOT_STORE_KEY = "snapshot:last";
/**
 * Bytes of one stored part. Durable Object storage caps one value at 2 MB (2,000,000 bytes,
 * SQLite backend: decimal, not MiB); a part stays below with 64 kB of room for the record's other
 * fields.
 */
export const STORED_PART_BYTES = 2_000_000 - 64_000;
/**
 * At most this many parts: 15.5 MB, about 33,000 vehicles (20,000 take 5). A larger snapshot is
 * simply not persisted (logged `snapshot_not_persisted`): after a reset the object then has
 * nothing for stale-if-error until its first successful fetch. Writing 23 MB at every refresh of
 * a 50,000-vehicle fleet cost the object more than the copy is worth: the bench's sustained run at
 * 50,000 (2 s TTL) answered at p50 3.2 s with it and 2.2 s without.
 */
export const MAX_STORED_PARTS = 8;

/** The first record, under SNAPSHOT_STORE_KEY: the envelope's fields and the first part. */
interface StoredHead {
  v: 3;
  fetchedAt: number;
  etag: string;
  count: number;
  dropped: number;
  /** Total bytes and number of parts. */
  bytes: number;
  parts: number;
  data: Uint8Array;
}

/** Part `i` (1 ≤ i < parts), under `${SNAPSHOT_STORE_KEY}:${i}`; `etag` ties it to its head. */
interface StoredPart {
  etag: string;
  data: Uint8Array;
}

const partKey = (i: number): string => `${SNAPSHOT_STORE_KEY}:${i}`;

/**
 * The records that store `envelope`: the head first, then the parts (undefined when it would take
 * more than `maxParts`). Each part is a copy: a stored view would take its whole buffer along.
 */
export function storeRecords(
  envelope: SnapshotEnvelope,
  partBytes = STORED_PART_BYTES,
  maxParts = MAX_STORED_PARTS,
): [string, StoredHead | StoredPart][] | undefined {
  const { data, etag } = envelope;
  const parts = Math.max(1, Math.ceil(data.byteLength / partBytes));
  if (parts > maxParts) return undefined;
  const part = (i: number) => data.slice(i * partBytes, (i + 1) * partBytes);
  const head: StoredHead = {
    v: 3,
    fetchedAt: envelope.fetchedAt,
    etag,
    count: envelope.count,
    dropped: envelope.dropped,
    bytes: data.byteLength,
    parts,
    data: part(0),
  };
  const out: [string, StoredHead | StoredPart][] = [[SNAPSHOT_STORE_KEY, head]];
  for (let i = 1; i < parts; i++) out.push([partKey(i), { etag, data: part(i) }]);
  return out;
}

/** Keys of parts a snapshot of `parts` parts leaves behind when the one before had `before`. */
export function leftoverPartKeys(parts: number, before: number): string[] {
  const keys: string[] = [];
  for (let i = Math.max(1, parts); i < before; i++) keys.push(partKey(i));
  return keys;
}

/**
 * The stored envelope, undefined when there is none, or "unreadable" when what is there is not one
 * this module wrote whole (a part missing, of another snapshot, or of the wrong size). Reads the
 * gzip record of earlier versions too (`storedSnapshotCodec`), so a deploy keeps the last copy.
 */
export async function loadStored(
  store: Pick<KeyValueStore, "get">,
): Promise<{ envelope: SnapshotEnvelope; parts: number } | "unreadable" | undefined> {
  const head = await store.get<unknown>(SNAPSHOT_STORE_KEY);
  if (head === undefined) return undefined;
  const h = head as Partial<StoredHead>;
  if (h.v !== 3) {
    const envelope = await storedSnapshotCodec.decode(head);
    return envelope ? { envelope, parts: 1 } : "unreadable";
  }
  if (
    typeof h.fetchedAt !== "number" ||
    typeof h.etag !== "string" ||
    typeof h.count !== "number" ||
    typeof h.dropped !== "number" ||
    typeof h.bytes !== "number" ||
    typeof h.parts !== "number" ||
    !Number.isInteger(h.parts) ||
    h.parts < 1 ||
    h.parts > MAX_STORED_PARTS ||
    !(h.data instanceof Uint8Array)
  ) {
    return "unreadable";
  }
  const data = new Uint8Array(h.bytes);
  let at = 0;
  for (let i = 0; i < h.parts; i++) {
    const p = i === 0 ? h : ((await store.get<unknown>(partKey(i))) as Partial<StoredPart> | undefined);
    if (!p || p.etag !== h.etag || !(p.data instanceof Uint8Array)) return "unreadable";
    if (at + p.data.byteLength > data.byteLength) return "unreadable";
    data.set(p.data, at);
    at += p.data.byteLength;
  }
  if (at !== data.byteLength) return "unreadable";
  const envelope = { data, fetchedAt: h.fetchedAt, etag: h.etag, count: h.count, dropped: h.dropped };
  return { envelope, parts: h.parts };
}

/** How an envelope is stored (the service's own records, and the replicas' shared store). */
export interface SnapshotCodec {
  encode(envelope: SnapshotEnvelope): Promise<unknown>;
  decode(stored: unknown): Promise<SnapshotEnvelope | undefined>;
}

/** The persisted form: the envelope with its body possibly compressed. */
interface StoredSnapshot {
  v: 2;
  fetchedAt: number;
  etag: string;
  count: number;
  dropped: number;
  encoding: "gzip" | "identity";
  data: Uint8Array;
}

/** The replicas' shared store's codec: one StoredSnapshot record, gzip where it can. */
export const storedSnapshotCodec = {
  encode: encodeStored,
  decode: decodeStored,
} satisfies SnapshotCodec;

async function encodeStored(envelope: SnapshotEnvelope): Promise<StoredSnapshot> {
  const base = {
    v: 2 as const,
    fetchedAt: envelope.fetchedAt,
    etag: envelope.etag,
    count: envelope.count,
    dropped: envelope.dropped,
  };
  // Feature-detect, don't sniff the runtime.
  if (typeof CompressionStream === "function") {
    const stream = new Blob([envelope.data as Uint8Array<ArrayBuffer>])
      .stream()
      .pipeThrough(new CompressionStream("gzip"));
    const data = new Uint8Array(await new Response(stream).arrayBuffer());
    return { ...base, encoding: "gzip", data };
  }
  return { ...base, encoding: "identity", data: envelope.data };
}

/** The envelope back from storage, or undefined when the record is not one we wrote. */
async function decodeStored(stored: unknown): Promise<SnapshotEnvelope | undefined> {
  if (typeof stored !== "object" || stored === null) return undefined;
  const s = stored as Partial<StoredSnapshot>;
  if (
    s.v !== 2 ||
    typeof s.fetchedAt !== "number" ||
    typeof s.etag !== "string" ||
    typeof s.count !== "number" ||
    typeof s.dropped !== "number"
  ) {
    return undefined;
  }
  let data: Uint8Array;
  if (s.encoding === "identity" && s.data instanceof Uint8Array) data = s.data;
  else if (s.encoding === "gzip" && s.data instanceof Uint8Array && typeof DecompressionStream === "function") {
    const stream = new Blob([s.data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream("gzip"));
    data = new Uint8Array(await new Response(stream).arrayBuffer());
  } else return undefined;
  return { data, fetchedAt: s.fetchedAt, etag: s.etag, count: s.count, dropped: s.dropped };
}
