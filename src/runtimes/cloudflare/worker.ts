/**
 * Cloudflare Worker entry: fetch (the Hono app) and scheduled (the warm-up). A few lines of
 * wiring; everything else is the runtime-agnostic core.
 */
import { createApp } from "../../app.ts";
import { warmUp } from "../../warmup.ts";
import type { Env } from "./env.ts";
import { depsFor } from "./isolate.ts";

export { PartnerGateway } from "./gateway-object.ts";
export { SnapshotFeed } from "./snapshot-feed.ts";

const app = createApp();

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
