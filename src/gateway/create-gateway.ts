/**
 * Composition of the world's one gateway: token broker, partner client and snapshot service.
 * The Durable Object wraps it on Cloudflare; Deno and Bun run it in-process. Same rules everywhere.
 */
import type { Config } from "../config.ts";
import type { Clock, FetchFn, KeyValueStore, Logger } from "../deps.ts";
import { TokenBroker } from "../oauth/token-broker.ts";
import { parsePartnerBody } from "../vehicles/schema.ts";
import { Gateway } from "./gateway.ts";

export interface GatewayPlatform {
  fetch: FetchFn;
  store: KeyValueStore;
  clock: Clock;
  log: Logger;
  /** Keep a background promise alive (ctx.waitUntil in a Durable Object). */
  schedule: (p: Promise<unknown>) => void;
}

export function createGateway(config: Config, p: GatewayPlatform): { gateway: Gateway; tokens: TokenBroker } {
  const tokens = new TokenBroker({ config, fetch: p.fetch, store: p.store, clock: p.clock, log: p.log });
  const gateway = new Gateway({
    config,
    fetch: p.fetch,
    tokens,
    clock: p.clock,
    log: p.log,
    store: p.store,
    parseBody: (text) => parsePartnerBody(text, config.partnerMaxVehicles),
    schedule: p.schedule,
  });
  return { gateway, tokens };
}
