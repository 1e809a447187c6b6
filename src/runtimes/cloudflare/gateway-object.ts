/**
 * The PartnerGateway Durable Object: the one place in the world that holds the partner access
 * token and talks to the partner. RPC methods only; the token never leaves this object.
 */
import { DurableObject } from "cloudflare:workers";
import { type Config, configFor } from "../../config.ts";
import { errorName } from "../../errors.ts";
import { createGateway } from "../../gateway/create-gateway.ts";
import { freshNotOlderThan } from "../../gateway/freshness.ts";
import type { Gateway } from "../../gateway/gateway.ts";
import { FEED_PATH, feedResponse } from "../../gateway/snapshot-feed.ts";
import type { GatewayStatus, SnapshotResult, WarmResult } from "../../gateway/types.ts";
import { unconfiguredGateway } from "../../gateway/unconfigured.ts";
import { alarmTime, shouldSetAlarm } from "../../oauth/alarm-policy.ts";
import type { KeyValueStore, SnapshotSource } from "../../ports.ts";
import { consoleLogger, systemClock } from "../standard-ports.ts";

function storageStore(storage: DurableObjectStorage): KeyValueStore {
  return {
    get: (key) => storage.get(key),
    put: (key, value) => storage.put(key, value),
    delete: async (key) => {
      await storage.delete(key);
    },
    sync: () => storage.sync(),
  };
}

/**
 * What the object reads of its bindings: the settings, as strings (configFor checks them). Not
 * the Worker's Env, which names this class for its namespace: the types then import one way.
 */
type ObjectEnv = Record<string, unknown>;

export class PartnerGateway extends DurableObject<ObjectEnv> implements SnapshotSource {
  readonly #gateway: Gateway | undefined;
  readonly #config: Config | undefined;
  /** Snapshot answers given through fetch() (the feed), since this instance started. */
  #feedRequests = 0;

  constructor(ctx: DurableObjectState, env: ObjectEnv) {
    super(ctx, env);
    const config = configFor(env);
    if (config instanceof Error) return;
    this.#config = config;
    this.#gateway = createGateway(config, {
      // Looked up per call, so tests that spy on globalThis.fetch see every request.
      fetch: (input, init) => fetch(input, init),
      store: storageStore(ctx.storage),
      clock: systemClock,
      log: consoleLogger,
      schedule: (p) => ctx.waitUntil(p),
    });
  }

  async getSnapshot(opts?: { notOlderThan?: number }): Promise<SnapshotResult> {
    if (!this.#gateway) return unconfiguredGateway.getSnapshot(opts);
    const result = await this.#gateway.getSnapshot(opts);
    await this.#armAlarmSafely();
    return result;
  }

  /**
   * The snapshot feed (`GET /snapshot`): the same result as `getSnapshot()`, as an HTTP answer whose
   * body is the prepared bytes and whose Cache-Control follows the snapshot's age (snapshot-feed.ts).
   * A fetch body reaches the isolate cheaper than an RPC return value of the same bytes, and it can
   * stream through the feed entrypoint and be kept by Workers Cache.
   */
  override async fetch(request: Request): Promise<Response> {
    if (new URL(request.url).pathname !== FEED_PATH) return new Response(null, { status: 404 });
    this.#feedRequests++;
    const c = this.#config;
    // Fresh, or wait for the one refresh (stale-if-error still applies): what the feed answers is
    // kept by Workers Cache for the rest of its TTL, and the cache does its own stale-while-revalidate.
    const result = await this.getSnapshot({
      notOlderThan: freshNotOlderThan(Date.now(), { ttlMs: (c?.vehiclesTtlS ?? 0) * 1000 }),
    });
    return feedResponse(result, { ttlS: c?.vehiclesTtlS ?? 0, staleS: c?.vehiclesStaleS ?? 0, now: Date.now() });
  }

  async status(): Promise<GatewayStatus> {
    const s = await (this.#gateway ?? unconfiguredGateway).status();
    return { ...s, counters: { ...s.counters, feedRequests: this.#feedRequests } };
  }

  async warm(opts: { tokenValidForS: number }): Promise<WarmResult> {
    if (!this.#gateway) return unconfiguredGateway.warm(opts);
    const result = await this.#gateway.warm(opts);
    await this.#armAlarmSafely();
    return result;
  }

  /**
   * Proactive refresh. Alarms run at least once, so this is idempotent: it refreshes only a token
   * that is due, and always reschedules itself.
   */
  override async alarm(): Promise<void> {
    if (!this.#gateway) return;
    await this.#gateway.refreshTokenIfDue().catch(() => {
      // Logged by the broker; its own backoff and negative cache keep this from storming.
    });
    await this.#armAlarm(true);
  }

  /**
   * #armAlarm for the RPC methods: a storage error while setting the alarm must not throw away
   * the result the caller asked for (a good snapshot would become a 503). The token is still
   * refreshed on demand, and the next call or cron tick sets the alarm again.
   */
  async #armAlarmSafely(): Promise<void> {
    try {
      await this.#armAlarm();
    } catch (err) {
      consoleLogger.log("warn", "alarm_set_failed", { error: errorName(err) });
    }
  }

  /** Keeps one alarm set (src/oauth/alarm-policy.ts); with no token to keep, none. */
  async #armAlarm(force = false): Promise<void> {
    const at = alarmTime(this.#gateway?.nextAlarmAt(), Date.now());
    if (at === undefined) return;
    const current = await this.ctx.storage.getAlarm();
    if (shouldSetAlarm(current ?? undefined, at, force)) await this.ctx.storage.setAlarm(at);
  }
}
