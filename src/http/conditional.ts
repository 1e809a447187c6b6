/** Conditional requests (RFC 9110 §13): the one If-None-Match check of every route that sends an ETag. */

/**
 * Whether `If-None-Match` matches our current `etag` (RFC 9110 §13.1.2): `*` matches any current
 * representation; otherwise any listed tag matches by weak comparison (`W/` ignored on both
 * sides), which is what GET and HEAD use. An absent or empty header matches nothing.
 */
export function ifNoneMatchMatches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  if (ifNoneMatch.trim() === "*") return true;
  const bare = (t: string) => t.trim().replace(/^W\//, "");
  return ifNoneMatch.split(",").some((t) => bare(t) === bare(etag));
}
