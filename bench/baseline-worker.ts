/**
 * The runtime's limit: a bare Worker that answers with bytes it holds, loaded once by the
 * benchmark (`PUT /<name>` with the gateway's own answer). No routing beyond the name, no headers
 * beyond the content type.
 *
 * - `GET /<name>`: a new string per request, the stored text spliced from two pieces (as the
 *   gateway splices its stored text into each answer). The limit the gateway is compared with.
 * - `GET /<name>/constant`: the one stored string itself, every time. In workerd this measured
 *   slower (a long-lived string handed to `new Response` again and again costs more CPU and waits
 *   longer than a fresh one), so it is shown beside the limit, not used as it.
 * - `GET /<name>/cache`: the answer as stored in this Worker's Cache API, streamed as it is: the
 *   least an L2 hit can cost here (the local Cache API is an emulation on the same cores).
 * - `GET /<name>/blob`: the stored bytes as one Blob made at load, the same Blob every time: how
 *   the gateway now answers an unfiltered page (src/vehicles/snapshot.ts). Shown beside the limit:
 *   the runtime sends a Blob from its own bytes, cheaper than any string.
 */
const texts = new Map<string, { whole: string; head: string; tail: string; blob: Blob }>();

const HEADERS = { "content-type": "application/json; charset=utf-8" };
const CACHE_NAME = "bench-baseline";
const cacheKey = (name: string) => `https://baseline.bench.invalid${name}`;

export default {
  async fetch(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    if (request.method === "PUT") {
      const whole = await request.text();
      texts.set(path, { whole, head: whole.slice(0, 1), tail: whole.slice(1), blob: new Blob([whole]) });
      const cache = await caches.open(CACHE_NAME);
      await cache.put(
        cacheKey(path),
        new Response(whole, { headers: { ...HEADERS, "cache-control": "max-age=3600" } }),
      );
      return new Response(null, { status: 204 });
    }
    const slash = path.indexOf("/", 1);
    const name = slash < 0 ? path : path.slice(0, slash);
    const variant = slash < 0 ? "" : path.slice(slash + 1);
    if (variant === "cache") {
      const hit = await (await caches.open(CACHE_NAME)).match(cacheKey(name));
      return hit ?? new Response("not in the cache", { status: 503 });
    }
    const t = texts.get(name);
    if (!t) return new Response("not loaded", { status: 503 });
    if (variant === "blob") return new Response(t.blob, { headers: HEADERS });
    return new Response(variant === "constant" ? t.whole : t.head + t.tail, { headers: HEADERS });
  },
};
