/**
 * Per-isolate wiring for the Worker: the Deps built once from the env and kept in module
 * scope. Holds plain values only (config, stubs, L1 memory); no promise outlives a request.
 */
import { cacheApiStore } from "../../cache/cache-api.ts";
import { type Config, configFor } from "../../config.ts";
import type { Deps } from "../../deps.ts";
import { consoleLogger, newIsolateMemory, systemClock } from "../../deps.ts";
import type { Env } from "./env.ts";
import { gatewayStub } from "./gateway-stub.ts";

/** The named cache for snapshots (not caches.default, which fetch() subrequests share). */
export const CACHE_NAME = "sharenow-vehicles-v1";

let current: Deps | undefined;

/**
 * The isolate's Deps, built from the first env it sees: an isolate belongs to one deployment,
 * so its settings cannot change under it (a new deploy brings new isolates).
 */
export function depsFor(env: Env): Deps {
  if (current) return current;
  const config = configFor(env as unknown as Record<string, unknown>);
  const limiter = env.RATE_LIMITER;
  const deps: Deps = {
    config,
    gateway: gatewayStub(env.GATEWAY, (config as Partial<Config>).gatewayLocationHint),
    cache: cacheApiStore(CACHE_NAME),
    clock: systemClock,
    log: consoleLogger,
    rateLimit: limiter ? async (key) => (await limiter.limit({ key })).success : undefined,
    allowTierBypass: env.ALLOW_TIER_BYPASS === "true",
    memory: newIsolateMemory(),
  };
  current = deps;
  return deps;
}

/** Forget the isolate's memory, as a new isolate would (tests and benchmarks of a cold start). */
export function resetIsolate(): void {
  current = undefined;
}
