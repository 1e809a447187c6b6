/**
 * The gateway's latest vehicle snapshot: fresh within the TTL, one upstream fetch at a time
 * (single-flight), stale-while-revalidate and stale-if-error within a bounded stale window
 * (the semantics of RFC 5861, applied to our own copy).
 *
 * Every answer is plain data (`SnapshotResult`): it crosses a Durable Object RPC boundary,
 * where thrown errors lose their custom fields. `get()` never throws.
 *
 * Inside a Durable Object all calls share one context, so the in-flight promise is the normal way
 * to make concurrent callers join one fetch; it is cleared in `finally` only if still current.
 */

import { type ErrorInfo, errorName, toErrorInfo } from "../errors.ts";
import type { Clock, KeyValueStore, Logger } from "../ports.ts";
import { prepareSnapshot } from "../vehicles/prepared.ts";
import type { Vehicle } from "../vehicles/schema.ts";
import { ageS, type FreshnessWindow, isFresh, isServable } from "./freshness.ts";
import {
  leftoverPartKeys,
  loadStored,
  MAX_STORED_PARTS,
  type SnapshotCodec,
  STORED_PART_BYTES,
  storedSnapshotCodec,
  storeRecords,
} from "./snapshot-codec.ts";
import type { SnapshotEnvelope, SnapshotResult } from "./types.ts";

/** After a failed refresh, callers asking for newer data get the servable copy for this long. */
export const FAILED_REFRESH_HOLD_MS = 5_000;

/** What the service asks of the partner: validated, redacted vehicles in VIN order. Throws on failure. */
export type FetchSnapshot = () => Promise<{ vehicles: Vehicle[]; dropped: number }>;

export interface SnapshotServiceOptions {
  fetchSnapshot: FetchSnapshot;
  clock: Clock;
  log: Logger;
  /** Fresh for this long after the partner answered. */
  ttlMs: number;
  /** Past the TTL, served for this long more: while revalidating, or when the partner fails. */
  staleMs: number;
  /** Keeps a background promise alive past the request that started it (`waitUntil`, or a no-op in a Durable Object). */
  schedule: (p: Promise<unknown>) => void;
  /** Where the last good envelope survives a reset of the object; optional. */
  store?: KeyValueStore;
  /**
   * Replicas sharing one store (Deno/Bun; src/gateway/shared-snapshot.ts): another replica's fresh
   * envelope, else `fetchOwn` under their lease, the envelope stored with this service's own codec.
   */
  shared?: {
    fetch(
      fetchOwn: () => Promise<SnapshotEnvelope>,
      heldFetchedAt: number | undefined,
      codec: SnapshotCodec,
    ): Promise<SnapshotEnvelope>;
    /** The stored envelope whatever its age (undefined if none); never throws. */
    lastGood(codec: SnapshotCodec): Promise<SnapshotEnvelope | undefined>;
  };
}

/** For /health. */
export interface SnapshotStatus {
  fetchedAt: number | undefined;
  ageS: number | undefined;
  count: number | undefined;
}

export interface SnapshotCounters {
  /** Upstream fetches started (single-flight leaders, foreground or background). */
  snapshotFetches: number;
  /** Of those, the ones that failed. */
  snapshotFetchFailures: number;
  /** `get()` answers that carried a snapshot (fresh or stale). */
  snapshotServed: number;
  /** Partner items dropped as malformed, summed over successful fetches. */
  droppedVehicles: number;
}

export class SnapshotService {
  readonly #fetchSnapshot: FetchSnapshot;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #window: FreshnessWindow;
  readonly #schedule: (p: Promise<unknown>) => void;
  readonly #store: KeyValueStore | undefined;
  readonly #shared: SnapshotServiceOptions["shared"];

  #snapshot: SnapshotEnvelope | undefined;
  #inflight: Promise<SnapshotEnvelope> | undefined;
  #loading: Promise<void> | undefined;
  /** Parts of the last snapshot this service stored or loaded (the parts a smaller one leaves over). */
  #storedParts = 0;
  /** Why the last fetch failed, until one succeeds: stale readers are told (stale-if-error). */
  #lastError: { info: ErrorInfo; at: number } | undefined;
  readonly #counters: SnapshotCounters = {
    snapshotFetches: 0,
    snapshotFetchFailures: 0,
    snapshotServed: 0,
    droppedVehicles: 0,
  };

  constructor(opts: SnapshotServiceOptions) {
    this.#fetchSnapshot = opts.fetchSnapshot;
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#window = { ttlMs: opts.ttlMs, staleMs: opts.staleMs };
    this.#schedule = opts.schedule;
    this.#store = opts.store;
    this.#shared = opts.shared;
  }

  /**
   * The snapshot, by these rules:
   * - fresh (age < TTL, and `fetchedAt >= notOlderThan` when given): served, no fetch;
   * - within TTL + stale and satisfying `notOlderThan`: served at once, `stale: true`, while one
   *   background refresh runs (stale-while-revalidate); with `error` if the last fetch failed;
   * - otherwise: join or start the one upstream fetch and wait for it; if it fails, a snapshot
   *   within the stale window is served with `error` (stale-if-error), else `{ ok: false, error }`.
   * Never throws.
   */
  async get(opts: { notOlderThan?: number } = {}): Promise<SnapshotResult> {
    try {
      await this.#ensureLoaded();
      const now = this.#clock.now();
      const snap = this.#snapshot;
      const recentEnough =
        snap !== undefined && (opts.notOlderThan === undefined || snap.fetchedAt >= opts.notOlderThan);
      if (snap && recentEnough && this.#isFresh(snap, now)) return this.#served(snap, false);
      if (snap && recentEnough && this.#isServable(snap, now)) {
        // Read the last failure before revalidating: a new refresh does not clear it until it succeeds.
        const error = this.#lastErrorInfo(now);
        this.#revalidate();
        return this.#served(snap, true, error);
      }
      // A caller that asks for newer data than we hold (the feed, the cron) right after a refresh
      // failed gets the servable copy with the error, not another partner call: one attempt per
      // hold window, however many data centres ask (stale-if-error, RFC 5861 §4).
      if (snap && !this.#inflight && this.#isServable(snap, now) && this.#failedRecently(now)) {
        return this.#served(snap, !this.#isFresh(snap, now), this.#lastErrorInfo(now));
      }
      try {
        const fetched = await this.#refresh().promise;
        return this.#served(fetched, false);
      } catch (err) {
        return this.#fallback(toErrorInfo(err));
      }
    } catch (err) {
      // Only a bug gets here (a throwing clock, say): still plain data.
      this.#log.log("error", "snapshot_get_failed", { error: String(err) });
      return { ok: false, error: toErrorInfo(err) };
    }
  }

  /** The current snapshot's age and size (loads the persisted one first, if any). */
  async status(): Promise<SnapshotStatus> {
    await this.#ensureLoaded();
    const snap = this.#snapshot;
    if (!snap) return { fetchedAt: undefined, ageS: undefined, count: undefined };
    return { fetchedAt: snap.fetchedAt, ageS: ageS(snap.fetchedAt, this.#clock.now()), count: snap.count };
  }

  /** Counters since this instance started (a copy). */
  counters(): SnapshotCounters {
    return { ...this.#counters };
  }

  /** The last failure, its `retryAfterS` counted down to `now`. */
  #lastErrorInfo(now: number): ErrorInfo | undefined {
    const last = this.#lastError;
    if (!last) return undefined;
    if (last.info.retryAfterS === undefined) return last.info;
    const retryAfterS = Math.max(0, Math.ceil(last.info.retryAfterS - (now - last.at) / 1000));
    return { ...last.info, retryAfterS };
  }

  /** Whether the last fetch failed within the hold window (FAILED_REFRESH_HOLD_MS, or its Retry-After). */
  #failedRecently(now: number): boolean {
    const last = this.#lastError;
    if (!last) return false;
    const holdMs = Math.max(FAILED_REFRESH_HOLD_MS, (last.info.retryAfterS ?? 0) * 1000);
    return now - last.at < holdMs;
  }

  #isFresh(snap: SnapshotEnvelope, now: number): boolean {
    return isFresh(snap.fetchedAt, now, this.#window);
  }

  #isServable(snap: SnapshotEnvelope, now: number): boolean {
    return isServable(snap.fetchedAt, now, this.#window);
  }

  #served(snapshot: SnapshotEnvelope, stale: boolean, error?: ErrorInfo): SnapshotResult {
    this.#counters.snapshotServed += 1;
    return error === undefined ? { ok: true, snapshot, stale } : { ok: true, snapshot, stale, error };
  }

  /** Stale-if-error (RFC 5861 §4): the last good copy within the stale window, marked, else the error. */
  #fallback(error: ErrorInfo): SnapshotResult {
    const snap = this.#snapshot;
    const now = this.#clock.now();
    if (snap && this.#isServable(snap, now)) return this.#served(snap, !this.#isFresh(snap, now), error);
    return { ok: false, error };
  }

  /** Stale-while-revalidate: at most one background refresh, joined by every stale reader. */
  #revalidate(): void {
    const { promise, started } = this.#refresh();
    if (!started) return;
    // The rejection is handled here (and logged in #fetch): nobody else awaits this promise.
    this.#schedule(promise.then(noop, noop));
  }

  /** Joins the in-flight fetch, or starts one. */
  #refresh(): { promise: Promise<SnapshotEnvelope>; started: boolean } {
    if (this.#inflight) return { promise: this.#inflight, started: false };
    const promise: Promise<SnapshotEnvelope> = this.#fetchAny().finally(() => {
      if (this.#inflight === promise) this.#inflight = undefined;
    });
    this.#inflight = promise;
    return { promise, started: true };
  }

  /** With replicas: another's fresh envelope, or ours under their lease (see `shared`). */
  async #fetchAny(): Promise<SnapshotEnvelope> {
    const shared = this.#shared;
    if (shared === undefined) return this.#fetch();
    let envelope: SnapshotEnvelope;
    try {
      envelope = await shared.fetch(() => this.#fetch(), this.#snapshot?.fetchedAt, storedSnapshotCodec);
    } catch (err) {
      this.#lastError = { info: toErrorInfo(err), at: this.#clock.now() };
      // A replica with nothing of its own takes the others' last copy for stale-if-error.
      if (this.#snapshot === undefined) {
        const last = await shared.lastGood(storedSnapshotCodec);
        if (this.#snapshot === undefined && last !== undefined) this.#snapshot = last;
      }
      throw err;
    }
    if (!this.#snapshot || this.#snapshot.fetchedAt < envelope.fetchedAt) {
      this.#snapshot = envelope;
      this.#lastError = undefined;
    }
    return this.#snapshot;
  }

  async #fetch(): Promise<SnapshotEnvelope> {
    this.#counters.snapshotFetches += 1;
    let result: { vehicles: Vehicle[]; dropped: number };
    try {
      result = await this.#fetchSnapshot();
    } catch (err) {
      this.#counters.snapshotFetchFailures += 1;
      const info = toErrorInfo(err);
      this.#lastError = { info, at: this.#clock.now() };
      this.#log.log("warn", "snapshot_fetch_failed", { code: info.code, retryAfterS: info.retryAfterS });
      throw err;
    }
    const fetchedAt = this.#clock.now();
    // Built once here, for every isolate of the world: validated, redacted, serialized, indexed.
    const envelope = await prepareSnapshot(result.vehicles, { fetchedAt, dropped: result.dropped });
    const etag = envelope.etag;
    this.#counters.droppedVehicles += result.dropped;
    this.#lastError = undefined;
    // Never step back in time (a persisted copy loaded meanwhile could be newer only in theory).
    if (!this.#snapshot || this.#snapshot.fetchedAt <= fetchedAt) this.#snapshot = envelope;
    this.#log.log("info", "snapshot_fetched", { count: envelope.count, dropped: envelope.dropped, etag });
    if (this.#store) this.#schedule(this.#persist(this.#store, envelope));
    return this.#snapshot;
  }

  /** Loads the persisted envelope once, lazily; a failure only costs stale-if-error after a reset. */
  async #ensureLoaded(): Promise<void> {
    if (!this.#store) return;
    this.#loading ??= this.#load(this.#store);
    await this.#loading;
  }

  async #load(store: KeyValueStore): Promise<void> {
    try {
      const stored = await loadStored(store);
      if (stored === undefined) return;
      if (stored === "unreadable") {
        this.#log.log("warn", "snapshot_store_unreadable", {});
        return;
      }
      const { envelope } = stored;
      this.#storedParts = Math.max(this.#storedParts, stored.parts);
      if (!this.#snapshot || this.#snapshot.fetchedAt < envelope.fetchedAt) this.#snapshot = envelope;
      this.#log.log("info", "snapshot_loaded", { fetchedAt: envelope.fetchedAt, count: envelope.count });
    } catch (err) {
      this.#log.log("warn", "snapshot_load_failed", { error: errorName(err) });
    }
  }

  /**
   * Never rejects: persistence is best effort. The head, its parts and the deletion of the parts a
   * larger snapshot left are issued with no await between them, which Durable Object storage
   * commits as one atomic write. What is left over is worked out before any await, so a persist
   * that starts while an earlier one is still writing deletes that one's extra parts too.
   */
  async #persist(store: KeyValueStore, envelope: SnapshotEnvelope): Promise<void> {
    try {
      const records = storeRecords(envelope);
      if (!records) {
        this.#log.log("warn", "snapshot_not_persisted", {
          bytes: envelope.data.byteLength,
          limit: STORED_PART_BYTES * MAX_STORED_PARTS,
        });
        return;
      }
      const leftover = leftoverPartKeys(records.length, this.#storedParts);
      this.#storedParts = records.length;
      await Promise.all([
        ...records.map(([key, value]) => store.put(key, value)),
        ...leftover.map((key) => store.delete(key)),
      ]);
    } catch (err) {
      this.#log.log("warn", "snapshot_persist_failed", { error: errorName(err) });
    }
  }
}

function noop(): void {}
