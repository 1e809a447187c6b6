/**
 * The PartnerGateway Durable Object: the one place in the world that holds the partner access
 * token and talks to the partner. RPC methods only; the token never leaves this object.
 */
import { DurableObject } from "cloudflare:workers";
import { configFor } from "../../config.ts";
import type { GatewayStatus, KeyValueStore, SnapshotResult, SnapshotSource, WarmResult } from "../../deps.ts";
import { consoleLogger, systemClock } from "../../deps.ts";
import { createGateway } from "../../gateway/create-gateway.ts";
import type { Gateway } from "../../gateway/gateway.ts";
import type { Env } from "./env.ts";

/** When the alarm cannot say when the token is due (no token, failing), look again after this. */
const IDLE_ALARM_MS = 30_000;

function storageStore(storage: DurableObjectStorage): KeyValueStore {
  return {
    get: (key) => storage.get(key),
    put: (key, value) => storage.put(key, value),
    delete: async (key) => {
      await storage.delete(key);
    },
  };
}

export class PartnerGateway extends DurableObject<Env> implements SnapshotSource {
  readonly #gateway: Gateway | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const config = configFor(env as unknown as Record<string, unknown>);
    if (config instanceof Error) return;
    this.#gateway = createGateway(config, {
      // Looked up per call, so tests that spy on globalThis.fetch see every request.
      fetch: (input, init) => fetch(input, init),
      store: storageStore(ctx.storage),
      clock: systemClock,
      log: consoleLogger,
      schedule: (p) => ctx.waitUntil(p),
    }).gateway;
  }

  #configured(): Gateway {
    if (!this.#gateway) throw new Error("gateway not configured");
    return this.#gateway;
  }

  async getSnapshot(opts?: { notOlderThan?: number }): Promise<SnapshotResult> {
    if (!this.#gateway) return { ok: false, error: { code: "config_invalid", status: 500 } };
    const result = await this.#gateway.getSnapshot(opts);
    await this.#armAlarm();
    return result;
  }

  async status(): Promise<GatewayStatus> {
    return this.#configured().status();
  }

  async warm(opts: { tokenValidForS: number }): Promise<WarmResult> {
    if (!this.#gateway)
      return {
        tokenSecondsLeft: undefined,
        snapshotFetchedAt: undefined,
        error: { code: "config_invalid", status: 500 },
      };
    const result = await this.#gateway.warm(opts);
    await this.#armAlarm();
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

  /** Keeps one alarm set at the token's refresh time (earlier wins). */
  async #armAlarm(force = false): Promise<void> {
    const gw = this.#gateway;
    if (!gw) return;
    const now = Date.now();
    const due = gw.nextAlarmAt() ?? now + IDLE_ALARM_MS;
    const at = Math.max(due, now + 1_000);
    const current = await this.ctx.storage.getAlarm();
    if (force || current === null || current > at) await this.ctx.storage.setAlarm(at);
  }
}
