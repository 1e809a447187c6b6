/**
 * Composition of the world's one gateway: token broker, partner client and snapshot service.
 * The Durable Object wraps it on Cloudflare; Deno and Bun run it in-process. Same rules everywhere.
 */
import type { Config } from "../config.ts";
import { RETRY_BUDGET_MS, TokenBroker } from "../oauth/token-broker.ts";
import type { Clock, FetchFn, KeyValueStore, Logger } from "../ports.ts";
import type { GuardedCoordinator } from "./coordination.ts";
import { freshnessWindow, keepMs } from "./freshness.ts";
import { Gateway } from "./gateway.ts";
import type { SharedSnapshots, SharedSnapshotsOptions } from "./shared-snapshot.ts";

export interface GatewayPlatform {
  fetch: FetchFn;
  store: KeyValueStore;
  clock: Clock;
  log: Logger;
  /** Keep a background promise alive (ctx.waitUntil in a Durable Object). */
  schedule: (p: Promise<unknown>) => void;
  /** Replicas on Deno/Bun sharing one store (GATEWAY_STORE); absent: this process alone. */
  coordinator?: GuardedCoordinator;
  /**
   * Builds the replicas' shared snapshots (server.ts: `(o) => new SharedSnapshots(o)`). Injected,
   * not imported, so the Worker's bundle (50 KB budget) carries no code it never runs.
   */
  shareSnapshots?: (opts: SharedSnapshotsOptions) => SharedSnapshots;
}

export function createGateway(config: Config, p: GatewayPlatform): Gateway {
  const c = p.coordinator;
  const tokens = new TokenBroker({
    config,
    fetch: p.fetch,
    store: p.store,
    clock: p.clock,
    log: p.log,
    ...(c ? { coordinator: c } : {}),
  });
  const window = freshnessWindow(config);
  const shared =
    c && p.shareSnapshots
      ? p.shareSnapshots({
          coordinator: c,
          clock: p.clock,
          log: p.log,
          ttlMs: window.ttlMs,
          keepMs: keepMs(window),
          // A token refresh (its retry budget) and a partner request with one replay.
          maxFetchMs: RETRY_BUDGET_MS + 2 * config.partnerTimeoutMs,
        })
      : undefined;
  return new Gateway({
    config,
    fetch: p.fetch,
    tokens,
    clock: p.clock,
    log: p.log,
    store: p.store,
    schedule: p.schedule,
    ...(shared ? { sharedSnapshots: shared } : {}),
  });
}
