/**
 * Request ids: RFC 9562 version 4 UUIDs (122 random bits), drawn from one
 * `crypto.getRandomValues` of 256 ids at a time. `crypto.randomUUID()` asks the system for
 * randomness on every call: about 20 µs of a request's CPU in workerd (a V8 profile of the memory
 * tier, BENCHMARKS.md), against about 1 µs here. The pool is plain bytes, never shared as a
 * promise or stream, so requests of one isolate may take ids from it in any order.
 */
const IDS_PER_DRAW = 256;
const pool = new Uint8Array(16 * IDS_PER_DRAW);
let next = IDS_PER_DRAW;
const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

export function newRequestId(): string {
  if (next === IDS_PER_DRAW) {
    crypto.getRandomValues(pool);
    next = 0;
  }
  const o = 16 * next++;
  const h = (k: number) => HEX[pool[o + k] as number] as string;
  // Version 4 in the high nibble of byte 6, the RFC 9562 variant (10xx) in byte 8.
  const version = HEX[((pool[o + 6] as number) & 0x0f) | 0x40] as string;
  const variant = HEX[((pool[o + 8] as number) & 0x3f) | 0x80] as string;
  return `${h(0)}${h(1)}${h(2)}${h(3)}-${h(4)}${h(5)}-${version}${h(7)}-${variant}${h(9)}-${h(10)}${h(11)}${h(12)}${h(13)}${h(14)}${h(15)}`;
}
