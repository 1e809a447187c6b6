/**
 * The HTML of GET /map. Markup only: the page's script and styles are static assets
 * (`public/map/`), Leaflet is vendored next to them by scripts/vendor-map.ts. The tile settings
 * reach the script as data attributes, so the page needs no inline script, and its Content
 * Security Policy (W3C CSP Level 3) allows this origin plus the tile host and nothing else.
 */
import type { MapTiles } from "./tiles.ts";

/** Where the static files live (Workers Static Assets on Cloudflare, src/map/static-files.ts elsewhere). */
const MAP_ASSETS = "/map/";

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);

/** The policy: scripts, styles and API calls from this origin; images from it and the tile host only. */
export function mapCsp(tiles: MapTiles | undefined): string {
  const img = tiles ? `'self' ${tiles.cspSource}` : "'self'";
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    `img-src ${img}`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

export function renderMapPage(tiles: MapTiles | undefined, opts: { needsKey?: boolean } = {}): string {
  // Whether the API wants `x-api-key`: the page asks for one before its first call. (The public
  // /health answer says nothing internal, and the API's own 401 would come one call late.)
  const data =
    (tiles
      ? ` data-tiles-url="${escapeHtml(tiles.template)}" data-tiles-attribution="${escapeHtml(tiles.attribution)}"`
      : "") + (opts.needsKey ? ' data-needs-key="true"' : "");
  const a = MAP_ASSETS;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vehicles map · SHARE NOW gateway</title>
<link rel="stylesheet" href="${a}leaflet/leaflet.css">
<link rel="stylesheet" href="${a}map.css">
<script src="${a}leaflet/leaflet.js" defer></script>
<script src="${a}map.js" defer></script>
</head>
<body data-state="loading"${data}>
<header>
<h1>Vehicles map</h1>
<p id="status" role="status">Loading…</p>
</header>
<aside>
<form id="key-form" hidden>
<label>API key <input id="key" type="password" autocomplete="off" required minlength="16"></label>
<button type="submit">Use key</button>
<small>Kept in this tab only (sessionStorage).</small>
</form>
<form id="filters">
<fieldset><legend>Area</legend>
<button type="button" id="draw-box">Draw box</button>
<button type="button" id="view-box">Visible area</button>
<label><input type="checkbox" id="follow-view"> follow the view (drag the map)</label>
<button type="button" id="pick-near">Pick centre</button>
<label>radius (m) <input id="radius" type="number" min="1" max="100000" step="100" value="1000"></label>
<button type="button" id="clear-area">Clear area</button>
</fieldset>
<fieldset><legend>Vehicle</legend>
<label>fuelType <select id="fuelType"><option value="">any</option></select></label>
<label>minFuelLevel <input id="minFuelLevel" type="number" min="0" max="100" step="5" placeholder="0–100"></label>
<label>transmission <select id="transmission"><option value="">any</option><option value="GA">GA automatic</option><option value="GM">GM manual</option></select></label>
<label>seats <select id="seats"><option value="">any</option></select></label>
</fieldset>
</form>
<p>Request: <a id="query-url" href="/v1/vehicles"><code>/v1/vehicles</code></a></p>
<p id="count"></p>
<ul id="legend"></ul>
<p id="error" role="alert" hidden></p>
<p><a href="/docs">API reference</a></p>
</aside>
<main id="map"></main>
</body>
</html>
`;
}
