/**
 * FNV-1a (32 bit): a fast, non-cryptographic hash for cache keys and weak validators, where
 * collisions cost a cache miss at worst. For anything that must not reveal its input, use
 * `sha256Hex` (src/http/upstream.ts).
 */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** FNV-1a (32 bit) as 8 lower-case hex digits. */
export function fnv1aHex(s: string): string {
  return fnv1a32(s).toString(16).padStart(8, "0");
}
