import type { Logger, ResponseCache } from "../ports.ts";

/** The part of the Cache API used here; typed locally, as Bun's types (like Bun) have none. */
interface NamedCaches {
  open(name: string): Promise<{
    match(key: string): Promise<Response | undefined>;
    put(key: string, response: Response): Promise<void>;
  }>;
}

/**
 * L2 of a server process: the runtime's Cache API (Deno) in a named cache, opened once for the
 * process. Deno keeps that cache on disk under DENO_DIR, so opening it can fail (a read-only or
 * missing DENO_DIR); then the process uses `fallback` (a bounded memory cache) from then on and
 * logs it once, instead of retrying the open and logging a failed match and put on every
 * request. With no Cache API at all (Bun, Node), `fallback` from the start, silently.
 * Feature detection, no runtime import.
 */
export function processCache(name: string, log: Logger, fallback: () => ResponseCache): ResponseCache {
  const storage = (globalThis as { caches?: NamedCaches }).caches;
  if (typeof storage?.open !== "function") return fallback();
  // One open shared by every request: safe in a long-lived process (it would not be in a Worker).
  let current: Promise<ResponseCache> | undefined;
  const cache = (): Promise<ResponseCache> => {
    current ??= Promise.resolve()
      .then(() => storage.open(name))
      .then(
        (opened): ResponseCache => ({
          match: async (key) => (await opened.match(key)) ?? undefined,
          put: (key, response) => opened.put(key, response),
        }),
        (err: unknown) => {
          // The error names the directory at most; no token or secret can be in it.
          log.log("warn", "cache_unavailable", { cache: name, error: String(err), fallback: "memory" });
          return fallback();
        },
      );
    return current;
  };
  return {
    match: async (key) => (await cache()).match(key),
    put: async (key, response) => (await cache()).put(key, response),
  };
}
