/**
 * The snapshot feed: a named fetch entrypoint that isolates call through `ctx.exports` to get the
 * prepared snapshot. With Workers Cache on (`[cache] enabled = true`, this entrypoint enabled in
 * wrangler.toml), Cloudflare answers it from a tiered cache with request collapsing, so data
 * centres share one object call per upper tier per TTL instead of each calling the one object;
 * with it off, and locally, the same code runs and every fill reaches the object.
 *
 * Not reachable from outside: a named entrypoint has no route (only this Worker's `ctx.exports`,
 * or a service binding of the same account, can call it), and the public default export has no
 * path that forwards here. It holds nothing secret either: the redacted bytes the Cache API holds.
 */
import { WorkerEntrypoint } from "cloudflare:workers";
import { configFor } from "../../config.ts";
import { FEED_PATH, feedResponse } from "../../gateway/snapshot-feed.ts";
import type { Env } from "./env.ts";
import { GATEWAY_NAME } from "./gateway-stub.ts";

export class SnapshotFeed extends WorkerEntrypoint<Env> {
  override async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (request.method !== "GET" || url.pathname !== FEED_PATH) {
      return new Response(null, { status: 404, headers: { "cache-control": "no-store" } });
    }
    const config = configFor(this.env as unknown as Record<string, unknown>);
    const hint = config instanceof Error ? undefined : config.gatewayLocationHint;
    const stub = this.env.GATEWAY.getByName(
      GATEWAY_NAME,
      hint ? { locationHint: hint as DurableObjectLocationHint } : undefined,
    );
    try {
      // The object's answer as it is: its body streams through without being read here, and its
      // Cache-Control (from the snapshot's own age) is what Workers Cache keeps it by.
      return await stub.fetch(`https://gateway.internal${FEED_PATH}`);
    } catch (err) {
      // An error answer of the feed's one wire format (never cacheable); Retry-After as the stub's.
      const f = (err ?? {}) as { overloaded?: boolean };
      const error = { code: "gateway_unavailable", status: 503, retryAfterS: f.overloaded ? 5 : 1 } as const;
      return feedResponse({ ok: false, error }, { ttlS: 0, staleS: 0, now: 0 });
    }
  }
}
