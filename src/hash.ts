/**
 * The gateway's hashes. FNV-1a (32 bit): a fast, non-cryptographic hash for cache keys and weak
 * validators, where collisions cost a cache miss at worst. SHA-256 (Web Crypto): for anything
 * that must not reveal its input or must not collide (key tags, token fingerprints, the
 * snapshot's ETag, the docs' CSP hash).
 */

/** FNV-1a (32 bit) of a string's UTF-16 code units. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** FNV-1a (32 bit) as 8 lower-case hex digits. */
export function fnv1aHex(s: string): string {
  return fnv1a32(s).toString(16).padStart(8, "0");
}

const encoder = new TextEncoder();
/** Bytes as Web Crypto takes them (spelled through `digest`, since the runtimes' type libraries name it differently). */
type Bytes = Parameters<SubtleCrypto["digest"]>[1];

/** SHA-256 of a string (as UTF-8) or of bytes. */
async function sha256(input: string | Bytes): Promise<Uint8Array<ArrayBuffer>> {
  const bytes = typeof input === "string" ? encoder.encode(input) : input;
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** SHA-256 as 64 lower-case hex digits. */
export async function sha256Hex(input: string | Bytes): Promise<string> {
  let out = "";
  for (const b of await sha256(input)) out += b.toString(16).padStart(2, "0");
  return out;
}
