/// <reference types="node" />
/**
 * Copies the map library (Leaflet, pinned in package.json) from node_modules into the static
 * assets directory, `public/map/leaflet/` (git-ignored). Run by wrangler's `[build] command`
 * (wrangler dev, deploy, `npm run build`) and by the npm scripts that start the Deno or Bun
 * server or run the tests, so the page never loads code from a third-party CDN at run time.
 * Idempotent; only files that differ are written.
 */
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const VENDOR_DIR = join(ROOT, "public", "map", "leaflet");
/** What the page needs: the minified library, its stylesheet and the images that stylesheet names. */
const FILES = ["leaflet.js", "leaflet.css", "images/layers.png", "images/layers-2x.png", "images/marker-icon.png"];

async function same(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([readFile(a), readFile(b).catch(() => undefined)]);
  return y !== undefined && x.equals(y);
}

export async function vendorMap(): Promise<string> {
  const require = createRequire(join(ROOT, "package.json"));
  const dist = join(dirname(require.resolve("leaflet/package.json")), "dist");
  for (const file of FILES) {
    const from = join(dist, file);
    const to = join(VENDOR_DIR, file);
    if (await same(from, to)) continue;
    await mkdir(dirname(to), { recursive: true });
    await copyFile(from, to);
  }
  return VENDOR_DIR;
}

if (import.meta.main) {
  vendorMap().catch((err: unknown) => {
    console.error(`vendor-map: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
