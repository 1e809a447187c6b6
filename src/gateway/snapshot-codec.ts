/**
 * How the gateway's last good snapshot is stored: in Durable Object storage (or memory) across
 * resets, and in the replicas' shared store (Deno/Bun). The prepared bytes are gzip-compressed
 * where `CompressionStream` exists; a record not written by this codec reads as nothing.
 */
import type { SnapshotEnvelope } from "./types.ts";

/** Storage key of the last good envelope. */
export const SNAPSHOT_STORE_KEY = "snapshot:last";
/**
 * Largest stored record we write, in (estimated) bytes. Durable Object storage caps one value
 * at 2 MB (2,000,000 bytes, SQLite backend: decimal, not MiB); we stay below with 64 kB of room
 * for the record's other fields. A larger snapshot is simply not persisted: after a reset the
 * object then has nothing for stale-if-error until its first successful fetch. The prepared
 * snapshot is gzip-compressed first where `CompressionStream` exists (workerd, Deno, Bun, Node):
 * 20,000 vehicles take about 1 MB that way.
 */
export const MAX_PERSISTED_BYTES = 2_000_000 - 64_000;

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

/** The one codec: StoredSnapshot records. */
export const storedSnapshotCodec = {
  encode: encodeStored,
  decode: decodeStored,
} satisfies SnapshotCodec;

/** Bytes the structured clone of a stored record takes (its body; the other fields are within the room left). */
export function storedBytes(record: StoredSnapshot): number {
  return record.data.byteLength;
}

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
