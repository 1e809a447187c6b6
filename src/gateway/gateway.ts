/**
 * L3, the world's one gateway: the token broker, the circuit breaker, the partner client and the
 * snapshot service, composed. Runtime-agnostic: the Cloudflare Durable Object wraps this class
 * (its RPC methods forward here), and the Deno and Bun entry points use it in-process.
 *
 * Every method answers in plain data and never throws for an upstream failure: results cross a
 * Durable Object RPC boundary, where custom Error fields are lost.
 */
import type { Config } from "../config.ts";
import { type ErrorInfo, toErrorInfo } from "../errors.ts";
import { type ParseBody, PartnerClient } from "../partner/vehicles-client.ts";
import type { Clock, FetchFn, GatewayTokenBroker, KeyValueStore, Logger, SnapshotSource } from "../ports.ts";
import type { Vehicle } from "../vehicles/schema.ts";
import { type FreshnessWindow, freshnessWindow, warmNotOlderThan } from "./freshness.ts";
import { SnapshotService, type SnapshotServiceOptions } from "./snapshot-service.ts";
import type { GatewayStatus, SnapshotResult, WarmResult } from "./types.ts";

export interface GatewayOptions {
  config: Config;
  /** The fetch used for the partner API (the broker brings its own). */
  fetch: FetchFn;
  tokens: GatewayTokenBroker;
  clock: Clock;
  log: Logger;
  /** Durable Object storage, or memory: keeps the last good snapshot across resets. */
  store: KeyValueStore;
  /** Stands in for the partner client's validator, `parsePartnerBody` (tests). */
  parseBody?: ParseBody;
  /** Keeps background work alive (`ctx.waitUntil`, or a no-op where promises outlive requests anyway). */
  schedule: (p: Promise<unknown>) => void;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Replicas on Deno/Bun: the snapshot shared through their store (a SharedSnapshots, shared-snapshot.ts). */
  sharedSnapshots?: SnapshotServiceOptions["shared"];
}

export class Gateway implements SnapshotSource {
  readonly #tokens: GatewayTokenBroker;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #window: FreshnessWindow;
  readonly #partner: PartnerClient;
  readonly #snapshots: SnapshotService;

  constructor(opts: GatewayOptions) {
    this.#tokens = opts.tokens;
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#window = freshnessWindow(opts.config);
    const partner = new PartnerClient({
      config: opts.config,
      fetch: opts.fetch,
      tokens: opts.tokens,
      clock: opts.clock,
      log: opts.log,
      store: opts.store,
      parseBody: opts.parseBody,
      random: opts.random,
      sleep: opts.sleep,
    });
    this.#partner = partner;

    this.#snapshots = new SnapshotService({
      fetchSnapshot: async () => {
        const r = await partner.fetchVehicles();
        // parseBody is parsePartnerBody (or a test's stand-in): validated, redacted, VIN order.
        return { vehicles: r.vehicles as Vehicle[], dropped: r.dropped };
      },
      clock: opts.clock,
      log: opts.log,
      ttlMs: this.#window.ttlMs,
      staleMs: this.#window.staleMs,
      schedule: opts.schedule,
      store: opts.store,
      ...(opts.sharedSnapshots ? { shared: opts.sharedSnapshots } : {}),
    });
  }

  /** See SnapshotService.get: fresh, stale-while-revalidate, single-flight fetch, stale-if-error. Never throws. */
  getSnapshot(opts?: { notOlderThan?: number }): Promise<SnapshotResult> {
    return this.#snapshots.get(opts);
  }

  /** Token, snapshot, breaker and counters, for /health. Never the token. */
  async status(): Promise<GatewayStatus> {
    const token = this.#tokens.status();
    const snapshot = await this.#snapshots.status();
    await this.#partner.breaker.ready();
    const c = this.#snapshots.counters();
    return {
      token,
      snapshot,
      breaker: this.#partner.breaker.state(),
      counters: {
        tokenRequests: token.tokenRequests,
        partnerRequests: this.#partner.requests,
        partnerFailures: this.#partner.failures,
        snapshotServed: c.snapshotServed,
        snapshotFetches: c.snapshotFetches,
        droppedVehicles: c.droppedVehicles,
      },
    };
  }

  /**
   * Cron warm-up: a token valid for at least `tokenValidForS`, and a snapshot fetched within the
   * last half TTL (so the next tick's readers still find it fresh). Never throws: the first
   * failure is returned as `error`. The snapshot is attempted even when the token step failed,
   * since the current token may still be good enough for it.
   */
  async warm(opts: { tokenValidForS: number }): Promise<WarmResult> {
    let error: ErrorInfo | undefined;
    try {
      await this.#tokens.ensureValidFor(opts.tokenValidForS);
    } catch (err) {
      error = toErrorInfo(err);
      this.#log.log("warn", "warm_token_failed", { code: error.code });
    }
    let snapshotFetchedAt: number | undefined;
    try {
      const result = await this.#snapshots.get({ notOlderThan: warmNotOlderThan(this.#clock.now(), this.#window) });
      if (result.ok) snapshotFetchedAt = result.snapshot.fetchedAt;
      if (result.error) error ??= result.error;
    } catch (err) {
      error ??= toErrorInfo(err);
    }
    let tokenSecondsLeft: number | undefined;
    try {
      tokenSecondsLeft = this.#tokens.status().secondsLeft;
    } catch (err) {
      error ??= toErrorInfo(err);
    }
    const out: WarmResult = { tokenSecondsLeft, snapshotFetchedAt };
    if (error) out.error = error;
    return out;
  }

  /**
   * For the alarm (which runs at least once, so this is idempotent): refreshes the token only
   * when its refresh time has come; with no token held, does nothing (nobody needs one yet).
   * Never throws: a failure is logged by the broker and returned as plain data.
   */
  async refreshTokenIfDue(): Promise<{ refreshed: boolean; error?: ErrorInfo }> {
    try {
      const due = this.#tokens.nextRefreshAt();
      if (due === undefined || due > this.#clock.now()) return { refreshed: false };
      // Ask for a little more validity than the current token has left: that forces exactly one
      // (single-flight) refresh in the broker, whatever its own hand-out margin is.
      const left = this.#tokens.status().secondsLeft ?? 0;
      await this.#tokens.ensureValidFor(Math.max(0, Math.ceil(left)) + 1);
      return { refreshed: true };
    } catch (err) {
      const error = toErrorInfo(err);
      this.#log.log("warn", "alarm_refresh_failed", { code: error.code });
      return { refreshed: false, error };
    }
  }

  /** When the alarm should next run: when the token needs refreshing (undefined: no token to keep). */
  nextAlarmAt(): number | undefined {
    try {
      return this.#tokens.nextRefreshAt();
    } catch {
      return undefined;
    }
  }
}
