/**
 * GET|HEAD /map: the page that draws the current snapshot with the filters of /v1/vehicles as
 * controls. Only the HTML is served here (its CSP depends on MAP_TILES_URL); everything it
 * loads is a static asset. Rendered once per isolate and tile setting, kept as a plain string.
 */

import type { AppEnv } from "../http/context.ts";
import { Hono } from "../http/hono.ts";
import { mapCsp, renderMapPage } from "./page.ts";

let cached: { key: string; html: string; csp: string } | undefined;

export function mapRoutes(): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  r.get("/map", (c) => {
    const config = c.get("config");
    const tiles = config.mapTiles;
    const needsKey = config.apiKeys !== undefined;
    const key = `${tiles ? `${tiles.template}\n${tiles.attribution}` : ""}\n${needsKey}`;
    if (cached?.key !== key) cached = { key, html: renderMapPage(tiles, { needsKey }), csp: mapCsp(tiles) };
    return c.body(cached.html, 200, {
      "content-type": "text/html; charset=utf-8",
      // The page holds no data (the script fetches it), so it may be cached briefly.
      "cache-control": "public, max-age=300",
      "content-security-policy": cached.csp,
      "referrer-policy": "no-referrer",
      "x-frame-options": "DENY",
    });
  });
  return r;
}
