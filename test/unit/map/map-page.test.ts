/// <reference types="node" />
/**
 * GET /map and its static files through the server the Deno and Bun entries use
 * (src/runtimes/server.ts, here in Node with Node's readFile over the real public/ directory):
 * the tile settings, the Content Security Policy they produce, and what the static files answer.
 * No request reaches a partner: the page holds no data.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { vendorMap } from "../../../scripts/vendor-map.ts";
import { parseConfig } from "../../../src/config.ts";
import { assetReader } from "../../../src/map/static-files.ts";
import { parseMapTiles } from "../../../src/map/tiles.ts";
import { createGatewayServer, type GatewayServer } from "../../../src/runtimes/server.ts";

const BASE = { PARTNER_CLIENT_ID: "unit-client", PARTNER_CLIENT_SECRET: "unit-secret-never-shown" };
const OSM = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";
const quiet = { log: () => {} };

let server: GatewayServer | undefined;
function serve(settings: Record<string, string>): GatewayServer {
  server = createGatewayServer(
    { ...BASE, ...settings },
    { log: quiet, assets: assetReader(async (url) => new Uint8Array(await readFile(fileURLToPath(url.href)))) },
  );
  return server;
}
const get = (s: GatewayServer, path: string, method = "GET") =>
  s.fetch(new Request(`http://gateway.test${path}`, { method }));
const cspOf = (res: Response) =>
  Object.fromEntries(
    (res.headers.get("content-security-policy") ?? "").split(";").map((d) => {
      const [name = "", ...values] = d.trim().split(/\s+/);
      return [name, values.join(" ")];
    }),
  );

beforeAll(async () => {
  await vendorMap();
});
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe("MAP_TILES_URL and MAP_TILES_ATTRIBUTION", () => {
  it("accepts a tile template with its attribution; the CSP source is its origin", () => {
    expect(parseMapTiles(OSM, "© OpenStreetMap contributors")).toEqual({
      tiles: {
        template: OSM,
        attribution: "© OpenStreetMap contributors",
        cspSource: "https://tile.openstreetmap.org",
      },
    });
    const sub = parseMapTiles("https://{s}.tiles.example.com:8443/v1/{z}/{x}/{y}{r}.png?key=abc", "Example");
    expect("tiles" in sub && sub.tiles?.cspSource).toBe("https://*.tiles.example.com:8443");
    expect(parseMapTiles("http://127.0.0.1:9/{z}/{x}/{y}.png", "local")).toMatchObject({
      tiles: { cspSource: "http://127.0.0.1:9" },
    });
    expect(parseMapTiles(undefined, undefined)).toEqual({ tiles: undefined });
  });

  it("refuses a bad template or a missing attribution, naming the setting (never the value)", () => {
    const cases: [string, string | undefined, string][] = [
      ["https://tiles.example.com/{z}/{x}.png", "A", "MAP_TILES_URL"],
      ["https://tiles.example.com/{z}/{x}/{y}/{q}.png", "A", "MAP_TILES_URL"],
      ["http://tiles.example.com/{z}/{x}/{y}.png", "A", "MAP_TILES_URL"],
      ["https://user:pw@tiles.example.com/{z}/{x}/{y}.png", "A", "MAP_TILES_URL"],
      ["https://tiles.{s}.example.com/{z}/{x}/{y}.png", "A", "MAP_TILES_URL"],
      ["javascript:{z}{x}{y}", "A", "MAP_TILES_URL"],
      [OSM, undefined, "MAP_TILES_ATTRIBUTION"],
    ];
    for (const [url, attribution, setting] of cases) {
      let error: unknown;
      try {
        parseConfig({ ...BASE, MAP_TILES_URL: url, ...(attribution ? { MAP_TILES_ATTRIBUTION: attribution } : {}) });
      } catch (e) {
        error = e;
      }
      expect((error as { settings?: string[] })?.settings, url).toEqual([setting]);
      expect(String((error as Error).message)).not.toContain(url);
    }
  });
});

describe("GET /map", () => {
  it("without tiles: a CSP that allows this origin only, and a page that names no other host", async () => {
    const res = await get(serve({}), "/map");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(cspOf(res)).toEqual({
      "default-src": "'none'",
      "script-src": "'self'",
      "style-src": "'self'",
      "img-src": "'self'",
      "connect-src": "'self'",
      "base-uri": "'none'",
      "form-action": "'none'",
      "frame-ancestors": "'none'",
    });
    const html = await res.text();
    // No inline script or style: every <script> has a src on this origin, no style attribute.
    expect(html.match(/<script[^>]*>/g)).toEqual([
      '<script src="/map/leaflet/leaflet.js" defer>',
      '<script src="/map/map.js" defer>',
    ]);
    expect(html).not.toMatch(/<style|style=|https?:\/\//);
    expect(html).not.toContain("data-tiles-url");
  });

  it("tells the page whether the API wants a key (data-needs-key), and nothing about the keys", async () => {
    const open = await (await get(serve({}), "/map")).text();
    expect(open).not.toContain("data-needs-key");
    await server?.close();
    const keyed = await (await get(serve({ API_KEYS: "map-test-key-0123456789" }), "/map")).text();
    expect(keyed).toContain('data-needs-key="true"');
    expect(keyed).not.toContain("map-test-key-0123456789");
  });

  it("with tiles: img-src adds exactly the tile origin, and the page carries the template and escaped attribution", async () => {
    const res = await get(
      serve({ MAP_TILES_URL: OSM, MAP_TILES_ATTRIBUTION: '© OpenStreetMap <contributors> & "friends"' }),
      "/map",
    );
    const csp = cspOf(res);
    expect(csp["img-src"]).toBe("'self' https://tile.openstreetmap.org");
    expect(csp["connect-src"]).toBe("'self'");
    expect(csp["script-src"]).toBe("'self'");
    const html = await res.text();
    expect(html).toContain(`data-tiles-url="${OSM}"`);
    expect(html).toContain('data-tiles-attribution="© OpenStreetMap &lt;contributors&gt; &amp; &quot;friends&quot;"');
  });

  it("answers a bad tile setting with 500 problem+json naming it", async () => {
    const res = await get(serve({ MAP_TILES_URL: "https://x.example/{z}.png", MAP_TILES_ATTRIBUTION: "x" }), "/map");
    expect(res.status).toBe(500);
    expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    expect(((await res.json()) as { settings: string[] }).settings).toEqual(["MAP_TILES_URL"]);
  });
});

describe("the map's static files (Deno and Bun server)", () => {
  it("serves the page's script, styles and the vendored Leaflet with their types", async () => {
    const s = serve({});
    for (const [path, type] of [
      ["/map/map.js", "text/javascript; charset=utf-8"],
      ["/map/map.css", "text/css; charset=utf-8"],
      ["/map/leaflet/leaflet.js", "text/javascript; charset=utf-8"],
      ["/map/leaflet/leaflet.css", "text/css; charset=utf-8"],
      ["/map/leaflet/images/layers.png", "image/png"],
    ]) {
      const res = await get(s, path as string);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-type")).toBe(type);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      const bytes = new Uint8Array(await res.arrayBuffer());
      expect(bytes.byteLength).toBeGreaterThan(100);
      const head = await get(s, path as string, "HEAD");
      expect(head.headers.get("content-length")).toBe(String(bytes.byteLength));
    }
    const leaflet = await (await get(s, "/map/leaflet/leaflet.js")).text();
    expect(leaflet).toContain("Leaflet 1.9.4");
  });

  it("serves nothing else from the directory: other names are the app's 404 problem", async () => {
    const s = serve({});
    for (const path of [
      "/map/_headers",
      "/map/%2e%2e/%2e%2e/package.json",
      "/map/../package.json",
      "/map/leaflet/",
      "/map/missing.js",
      "/map/.hidden.js",
      "/_headers",
    ]) {
      const res = await get(s, path);
      expect(res.status, path).toBe(404);
      expect(res.headers.get("content-type"), path).toMatch(/^application\/problem\+json/);
    }
    expect((await get(s, "/map/map.js", "POST")).status).not.toBe(200);
  });
});
