import type { ResponseCache } from "../ports.ts";

/**
 * L2 over the Cache API, in a named cache: `caches.default` is shared with `fetch()`
 * subrequests, a named cache is ours alone. Per data centre, never replicated.
 * Returns undefined where the runtime has no Cache API (Bun): feature detection, not sniffing.
 */
export function cacheApiStore(name: string): ResponseCache | undefined {
  const storage = (globalThis as { caches?: CacheStorage }).caches;
  if (!storage || typeof storage.open !== "function") return undefined;
  let opened: Cache | undefined;
  const open = async (): Promise<Cache> => {
    opened ??= await storage.open(name);
    return opened;
  };
  return {
    async match(key) {
      return (await (await open()).match(key)) ?? undefined;
    },
    async put(key, response) {
      await (await open()).put(key, response);
    },
  };
}
