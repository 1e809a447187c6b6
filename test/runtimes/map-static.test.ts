/// <reference types="node" />
/**
 * The map's static files on the real Deno binary (Bun draws the page in
 * test/browser/map.browser.ts): Deno may read public/ (--allow-read=public) and nothing else,
 * and the server answers the same files Workers Static Assets serve on Cloudflare.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Sandbox, startSandbox } from "../../sandbox/index.ts";
import { VENDOR_DIR, vendorMap } from "../../scripts/vendor-map.ts";
import { type RuntimeProcess, sandboxSettings, startRuntime } from "./runtime-process.ts";

describe("the pages' static files on deno (the map's, the /docs stylesheet)", () => {
  let sandbox: Sandbox;
  let proc: RuntimeProcess;

  beforeAll(async () => {
    await vendorMap();
    sandbox = await startSandbox({ port: 0, fleetSize: 10, tickMs: 0 });
    proc = await startRuntime("deno", {
      ...sandboxSettings(sandbox),
      MAP_TILES_URL: "https://{s}.tiles.example.com/{z}/{x}/{y}.png",
      MAP_TILES_ATTRIBUTION: "© Example",
    });
  }, 30_000);

  afterAll(async () => {
    await proc?.stop();
    await sandbox?.close();
  });

  it("serves /map with the tile host in its CSP, and the vendored Leaflet byte for byte", async () => {
    const page = await fetch(`${proc.url}/map`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toContain("img-src 'self' https://*.tiles.example.com;");
    expect(await page.text()).toContain('data-tiles-url="https://{s}.tiles.example.com/{z}/{x}/{y}.png"');
    const js = await fetch(`${proc.url}/map/leaflet/leaflet.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(Buffer.from(await js.arrayBuffer()).equals(await readFile(join(VENDOR_DIR, "leaflet.js")))).toBe(true);
    const css = await fetch(`${proc.url}/map/map.css`);
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    await css.body?.cancel();
    // The /docs page's stylesheet, from the same directory as on Cloudflare.
    const docsCss = await fetch(`${proc.url}/docs/docs.css`);
    expect(docsCss.status).toBe(200);
    expect(docsCss.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect(
      Buffer.from(await docsCss.arrayBuffer()).equals(await readFile(join(VENDOR_DIR, "../../docs/docs.css"))),
    ).toBe(true);
  });

  it("answers 404 problem+json for anything else, and made no partner request for any of it", async () => {
    for (const path of [
      "/map/missing.js",
      "/map/%2e%2e/%2e%2e/package.json",
      "/map/_headers",
      "/docs/missing.css",
      "/docs/%2e%2e/_headers",
    ]) {
      const res = await fetch(`${proc.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(res.headers.get("content-type"), path).toMatch(/^application\/problem\+json/);
      await res.body?.cancel();
    }
    // Static files and the page cost the partner nothing.
    expect(sandbox.counters().token.total).toBe(0);
    expect(sandbox.counters().vehicles.total).toBe(0);
    expect(proc.output()).not.toMatch(/PermissionDenied|NotCapable/);
  });
});
