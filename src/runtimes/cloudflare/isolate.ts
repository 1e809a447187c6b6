/**
 * Per-isolate wiring for the Worker: the Deps built once from the env and kept in module
 * scope. Holds plain values only (config, stubs, L1 memory); no promise outlives a request.
 */
import { exports } from "cloudflare:workers";
import { cacheApiStore } from "../../cache/cache-api.ts";
import { CACHE_NAME } from "../../cache/snapshot-entry.ts";
import { type Config, configFor } from "../../config.ts";
import { FEED_PATH, readFeedResponse } from "../../gateway/snapshot-feed.ts";
import type { Deps, SnapshotSource } from "../../ports.ts";
import { newIsolateMemory } from "../../vehicles/isolate-memory.ts";
import { tierCacheKey } from "../../vehicles/tiers.ts";
import { consoleLogger, systemClock } from "../standard-ports.ts";
import type { Env } from "./env.ts";
import { gatewayStub } from "./gateway-stub.ts";

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
    gateway: viaFeed(
      gatewayStub(env.GATEWAY, (config as Partial<Config>).gatewayLocationHint),
      config instanceof Error ? "" : new URL(tierCacheKey(config)).search,
    ),
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

/**
 * Snapshots come through the feed entrypoint (`ctx.exports.SnapshotFeed`, snapshot-feed.ts), which
 * Workers Cache can answer; status and warm-up go to the object by RPC (never cached). The feed URL
 * carries the same version as the L2 key (upstream, client, allow-list and format), so an answer
 * cached for another configuration or deploy is never asked for.
 */
function viaFeed(object: SnapshotSource, version: string): SnapshotSource {
  const url = `https://feed.internal${FEED_PATH}${version}`;
  return {
    getSnapshot: async () => {
      try {
        const feed = (exports as unknown as { SnapshotFeed: Fetcher }).SnapshotFeed;
        return await readFeedResponse(await feed.fetch(url));
      } catch {
        return { ok: false, error: { code: "gateway_unavailable", status: 503, retryAfterS: 1 } };
      }
    },
    status: () => object.status(),
    warm: (opts) => object.warm(opts),
  };
}

/** Forget the isolate's memory, as a new isolate would (tests and benchmarks of a cold start). */
export function resetIsolate(): void {
  current = undefined;
}
