/**
 * The Cache-Status header (RFC 9211) of a vehicles answer: one member per tier the request went
 * through, the first nearest the origin (the gateway object), the last nearest the client
 * (isolate memory). `stored` only where the tier is known to keep what it was given.
 */

/** The header value: the members, origin side first. */
export function cacheStatus(...members: string[]): string {
  return members.join(", ");
}

/** L1 answered: its copy had `ttlS` seconds of TTL left (negative: stale). */
export function memoryHit(ttlS: number): string {
  return `gateway-memory; hit; ttl=${ttlS}`;
}

/** L1 answered after waiting for another request's fill, which stored what it got. */
export const MEMORY_COLLAPSED = "gateway-memory; fwd=miss; collapsed; stored";

/** L1 passed the request on: skipped (`x-gateway-bypass`), or missed and stored the answer. */
export function memoryForward(bypassed: boolean): string {
  return bypassed ? "gateway-memory; fwd=bypass" : "gateway-memory; fwd=miss; stored";
}

/** L1 passed the request on and stored nothing (the response cache answered): skipped, empty, or stale. */
export function memoryPassed(l1: "bypass" | "miss" | "stale"): string {
  return `gateway-memory; fwd=${l1}`;
}

/** L2 answered: its copy had `ttlS` seconds of TTL left (negative: stale). */
export function cacheHit(ttlS: number): string {
  return `gateway-cache; hit; ttl=${ttlS}`;
}

/** L2's response cache answered with a rendered answer, fresh with `ttlS` seconds left. */
export function responseHit(ttlS: number): string {
  return `gateway-cache; hit; ttl=${ttlS}; detail=response`;
}

/**
 * L2 passed the request on: none (or skipped), known to store nothing (not asked, not written), a
 * miss whose answer it keeps, or a miss not yet known to keep anything.
 */
export function cacheForward(l2: { present: boolean; notStoring: boolean; storing: boolean }): string {
  if (!l2.present) return "gateway-cache; fwd=bypass";
  if (l2.notStoring) return "gateway-cache; fwd=bypass; detail=not-storing";
  return l2.storing ? "gateway-cache; fwd=miss; stored" : "gateway-cache; fwd=miss";
}

/** The gateway object answered with its stale copy (`ttlS` left, negative), after a failed refresh if `staleIfError`. */
export function objectStale(ttlS: number, staleIfError: boolean): string {
  return `gateway-object; hit; ttl=${ttlS}${staleIfError ? "; detail=stale-if-error" : ""}`;
}

/** The gateway object answered with a snapshot it fetched (or held fresh) for this request. */
export const OBJECT_FETCHED = "gateway-object; fwd=miss; stored";
