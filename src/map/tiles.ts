/**
 * MAP_TILES_URL and MAP_TILES_ATTRIBUTION: the tile source of the /map page, parsed with the
 * other settings. The page's Content Security Policy allows exactly the origin of this template
 * (CSP Level 3 §2.3.1 source expressions), so the template is checked here, once.
 */

export interface MapTiles {
  /** Leaflet URL template, e.g. `https://tile.openstreetmap.org/{z}/{x}/{y}.png`. */
  template: string;
  /** Plain text the provider requires on the map (escaped before it reaches the page). */
  attribution: string;
  /** The CSP source expression for img-src: the template's origin, `{s}` as a `*.` wildcard label. */
  cspSource: string;
}

const PLACEHOLDERS = /\{[a-z]+\}/g;
const ALLOWED = new Set(["{s}", "{z}", "{x}", "{y}", "{r}"]);

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host);
}

/** Parses the two settings; `problem` names what is wrong (never echoes the value). */
export function parseMapTiles(
  urlRaw: string | undefined,
  attributionRaw: string | undefined,
): { tiles: MapTiles | undefined } | { problem: { setting: string; reason: string } } {
  if (urlRaw === undefined) return { tiles: undefined };
  const bad = (reason: string, setting = "MAP_TILES_URL") => ({ problem: { setting, reason } });
  const names: string[] = urlRaw.match(PLACEHOLDERS) ?? [];
  if (!["{z}", "{x}", "{y}"].every((p) => names.includes(p)) || names.some((n) => !ALLOWED.has(n)))
    return bad("must be a tile URL template with {z}, {x} and {y} (and optionally {s}, {r})");
  // `{s}` only as the whole leftmost host label (a subdomain), so the CSP source stays one host.
  const sub = /^https?:\/\/\{s\}\./.test(urlRaw);
  if (names.includes("{s}") && !sub) return bad("{s} may only stand for the leftmost label of the host");
  let u: URL;
  try {
    u = new URL(urlRaw.replace("{s}", "a").replace(PLACEHOLDERS, "0"));
  } catch {
    return bad("must be an absolute URL template");
  }
  if (u.protocol !== "https:" && !(u.protocol === "http:" && isLoopback(u.hostname)))
    return bad("must use https (http only for loopback)");
  if (u.username || u.password) return bad("must not carry credentials");
  const attribution = attributionRaw?.trim() ?? "";
  if (attribution === "" || attribution.length > 500)
    return bad("must be set (up to 500 characters) when MAP_TILES_URL is set", "MAP_TILES_ATTRIBUTION");
  const host = sub ? `*.${u.host.slice(2)}` : u.host;
  return { tiles: { template: urlRaw, attribution, cspSource: `${u.protocol}//${host}` } };
}
