/**
 * Cloudflare Worker entry: fetch (the Hono app) and scheduled (the warm-up). A few lines of
 * wiring; everything else is the runtime-agnostic core.
 */
import { createApp } from "../../app.ts";
import { cacheApiStore } from "../../cache/cache-api.ts";
import { type Config, configFor } from "../../config.ts";
import type { Deps, SnapshotSource } from "../../deps.ts";
import { consoleLogger, newIsolateMemory, systemClock } from "../../deps.ts";
import { warmUp } from "../../warmup.ts";
import type { Env } from "./env.ts";
import { gatewayStub } from "./gateway-stub.ts";

export { PartnerGateway } from "./gateway-object.ts";

/** The named cache for snapshots (not caches.default, which fetch() subrequests share). */
const CACHE_NAME = "sharenow-vehicles-v1";

const app = createApp();
const depsByEnv = new WeakMap<Env, Deps>();

function depsFor(env: Env): Deps {
  let deps = depsByEnv.get(env);
  if (!deps) {
    const config = configFor(env as unknown as Record<string, unknown>);
    const limiter = env.RATE_LIMITER;
    const gateway: SnapshotSource = gatewayStub(env.GATEWAY, (config as Partial<Config>).gatewayLocationHint);
    deps = {
      config,
      gateway,
      cache: cacheApiStore(CACHE_NAME),
      clock: systemClock,
      log: consoleLogger,
      rateLimit: limiter ? async (key) => (await limiter.limit({ key })).success : undefined,
      allowTierBypass: env.ALLOW_TIER_BYPASS === "true",
      memory: newIsolateMemory(),
    };
    depsByEnv.set(env, deps);
  }
  return deps;
}

export default {
  fetch(request, env, ctx) {
    return app.fetch(request, { deps: depsFor(env) }, ctx);
  },
  scheduled(controller, env, ctx) {
    const deps = depsFor(env);
    ctx.waitUntil(
      warmUp(deps, {
        waitUntil: (p) => ctx.waitUntil(p),
        intervalS: Number(env.WARMUP_INTERVAL_S ?? 60) || 60,
        scheduledTime: controller.scheduledTime,
      }),
    );
  },
} satisfies ExportedHandler<Env>;
