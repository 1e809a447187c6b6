/**
 * The pages' static files (the map's, and the /docs stylesheet) for the Deno and Bun server: the same `public/` directory that
 * Workers Static Assets serve on Cloudflare (wrangler.toml `[assets]`), answered before the app
 * as Cloudflare does. Runtime-agnostic: the entry hands in its way to read a file.
 */

/** Reads one file under `public/`; undefined when there is none. */
export type ReadAsset = (path: string) => Promise<Uint8Array<ArrayBuffer> | undefined>;

const TYPES: Record<string, string> = {
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  png: "image/png",
  svg: "image/svg+xml",
};
/** Plain names only: no `..`, no dot files, no encoded characters; one of the types above. */
/** Under /map/ or /docs/ (the directories of public/ the pages load from). */
const SAFE_PATH = /^\/(?:map|docs)\/(?:[A-Za-z0-9_-][A-Za-z0-9._-]*\/)*[A-Za-z0-9_-][A-Za-z0-9._-]*\.(js|css|png|svg)$/;

/**
 * A reader of `public/` from the runtime's readFile. `readFile` gets a file: URL and may throw
 * (not found, a directory): any failure is "no such asset", and the app answers (404).
 */
export function assetReader(readFile: (url: URL) => Promise<Uint8Array<ArrayBuffer>>): ReadAsset {
  const root = new URL("../../public/", import.meta.url);
  return async (path) => {
    try {
      return await readFile(new URL(`.${path}`, root));
    } catch {
      return undefined;
    }
  };
}

/** A static file for GET or HEAD of a path under /map/ or /docs/, else undefined (the app handles it). */
export async function serveAsset(request: Request, read: ReadAsset): Promise<Response | undefined> {
  if (request.method !== "GET" && request.method !== "HEAD") return undefined;
  const path = new URL(request.url).pathname;
  const ext = SAFE_PATH.exec(path)?.[1];
  if (ext === undefined) return undefined;
  const bytes = await read(path);
  if (bytes === undefined) return undefined;
  const headers = {
    "content-type": TYPES[ext] ?? "application/octet-stream",
    // As Workers Static Assets by default: cacheable, revalidated before use.
    "cache-control": "public, max-age=0, must-revalidate",
    "x-content-type-options": "nosniff",
    "content-length": String(bytes.byteLength),
  };
  return new Response(request.method === "HEAD" ? null : bytes, { status: 200, headers });
}
