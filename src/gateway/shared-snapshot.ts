/**
 * The latest snapshot, shared by replicas (Deno/Bun with GATEWAY_STORE): a partner fetch runs
 * under the "snapshot" lease of one replica; the others take its stored envelope (fresh within
 * the TTL) instead of calling the partner themselves. A failed fetch stores its failure window
 * (Retry-After, else a short cooldown), so replicas back off together instead of each trying.
 *
 * The envelope goes through the snapshot service's own encode/decode (its SnapshotCodec) and is
 * opaque here: any plain structure with strings, numbers and typed arrays round-trips.
 */

import { AppError, type ErrorInfo, toErrorInfo } from "../errors.ts";
import type { Clock, Logger } from "../ports.ts";
import { coordinated, type GuardedCoordinator, type Lease, RecordTooLargeError } from "./coordination.ts";
import type { SnapshotCodec } from "./snapshot-codec.ts";
import type { SnapshotEnvelope } from "./types.ts";

const SHARED_SNAPSHOT = "snapshot";
const SHARED_SNAPSHOT_GATE = "snapshot-gate";
/** Replicas wait this long after a failed fetch that named no Retry-After (the breaker's job per process). */
const SNAPSHOT_FAILURE_WINDOW_MS = 2_000;
/** Default lease: short, kept alive by the holder's heartbeat (a fetch may take 10 s and more). */
const SNAPSHOT_LEASE_MS = 3_000;

export interface SharedSnapshotsOptions {
  coordinator: GuardedCoordinator;
  clock: Clock;
  log: Logger;
  /** Fresh for this long: a stored envelope older than that is fetched again. */
  ttlMs: number;
  /** Kept in the store this long (TTL + stale window): stale-if-error for a replica that starts cold. */
  keepMs: number;
  /** Lease lifetime; the holder renews it every third of that while it fetches, so a dead holder's lapses soon. */
  leaseMs?: number;
  /** The longest a fetch may take (token, partner request, retries): waiters give up after that. */
  maxFetchMs: number;
  sleep?: (ms: number) => Promise<void>;
}

interface Gate {
  until: number;
  error: ErrorInfo;
}

export class SharedSnapshots {
  readonly #o: SharedSnapshotsOptions;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(opts: SharedSnapshotsOptions) {
    this.#o = opts;
    this.#sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  /**
   * A fresh envelope newer than `heldFetchedAt` from the store, else `fetchOwn()` under the lease
   * (its result stored for the others), else (the store is down) `fetchOwn()` alone.
   */
  fetch(
    fetchOwn: () => Promise<SnapshotEnvelope>,
    heldFetchedAt: number | undefined,
    codec: SnapshotCodec,
  ): Promise<SnapshotEnvelope> {
    const { coordinator, clock } = this.#o;
    return coordinated({
      coordinator,
      lease: SHARED_SNAPSHOT,
      leaseMs: this.#o.leaseMs ?? SNAPSHOT_LEASE_MS,
      // A fetch may legitimately outlast several leases (the holder renews): wait as long as one may take.
      waitMs: this.#o.maxFetchMs,
      clock,
      sleep: this.#sleep,
      readShared: () => this.#read(heldFetchedAt, codec),
      work: (lease) => this.#fetchAndShare(fetchOwn, lease, codec),
    });
  }

  /**
   * The stored envelope whatever its age (it is kept for TTL + stale window), for a replica that
   * has none when its fetch fails: stale-if-error from another replica's copy. Never throws.
   */
  async lastGood(codec: SnapshotCodec): Promise<SnapshotEnvelope | undefined> {
    try {
      return await codec.decode(parse(await this.#o.coordinator.read(SHARED_SNAPSHOT)));
    } catch {
      return undefined;
    }
  }

  async #read(heldFetchedAt: number | undefined, codec: SnapshotCodec): Promise<SnapshotEnvelope | undefined> {
    const { coordinator, clock, ttlMs, log } = this.#o;
    const now = clock.now();
    const gate = parse(await coordinator.read(SHARED_SNAPSHOT_GATE)) as Gate | undefined;
    if (gate && typeof gate.until === "number" && gate.until > now && gate.error) {
      throw AppError.fromInfo({ ...gate.error, retryAfterS: Math.max(1, Math.ceil((gate.until - now) / 1000)) });
    }
    const raw = await coordinator.read(SHARED_SNAPSHOT);
    if (raw === undefined) return undefined;
    const envelope = await codec.decode(parse(raw));
    if (envelope === undefined) {
      log.log("warn", "shared_snapshot_unreadable", {});
      return undefined;
    }
    if (now - envelope.fetchedAt >= ttlMs) return undefined;
    if (heldFetchedAt !== undefined && envelope.fetchedAt <= heldFetchedAt) return undefined;
    log.log("info", "snapshot_shared", { fetchedAt: envelope.fetchedAt, count: envelope.count, etag: envelope.etag });
    return envelope;
  }

  async #fetchAndShare(
    fetchOwn: () => Promise<SnapshotEnvelope>,
    lease: Lease | undefined,
    codec: SnapshotCodec,
  ): Promise<SnapshotEnvelope> {
    const { coordinator, clock, keepMs, log } = this.#o;
    const leaseMs = this.#o.leaseMs ?? SNAPSHOT_LEASE_MS;
    // Heartbeat: the lease lives while this replica works, and lapses soon after it dies.
    const beat =
      lease === undefined
        ? undefined
        : setInterval(() => {
            coordinator.renew(lease, leaseMs).catch(() => false);
          }, leaseMs / 3);
    let envelope: SnapshotEnvelope;
    try {
      envelope = await fetchOwn();
    } catch (err) {
      if (lease !== undefined) {
        const error = toErrorInfo(err);
        const windowMs =
          error.retryAfterS !== undefined && error.retryAfterS > 0
            ? error.retryAfterS * 1000
            : SNAPSHOT_FAILURE_WINDOW_MS;
        const { retryAfterS: _, ...rest } = error; // recomputed by each reader from `until`
        const gate: Gate = { until: clock.now() + windowMs, error: rest };
        await coordinator.write(SHARED_SNAPSHOT_GATE, JSON.stringify(gate), lease, windowMs).catch(() => false);
      }
      throw err;
    } finally {
      clearInterval(beat);
    }
    if (lease === undefined) return envelope;
    try {
      const record = stringify(await codec.encode(envelope));
      const ttl = envelope.fetchedAt + keepMs - clock.now();
      if (ttl > 0 && !(await coordinator.write(SHARED_SNAPSHOT, record, lease, ttl))) {
        log.log("warn", "shared_write_fenced", { record: SHARED_SNAPSHOT, fence: lease.fence });
      }
    } catch (err) {
      // Too large for the store: each replica fetches its own. Store down: logged once by the guard.
      if (err instanceof RecordTooLargeError) log.log("warn", "snapshot_not_shared", { reason: "too_large" });
    }
    return envelope;
  }
}

const TYPED: Record<string, (b: ArrayBuffer) => ArrayBufferView> = {
  Uint8Array: (b) => new Uint8Array(b),
  Int8Array: (b) => new Int8Array(b),
  Uint16Array: (b) => new Uint16Array(b),
  Int16Array: (b) => new Int16Array(b),
  Uint32Array: (b) => new Uint32Array(b),
  Int32Array: (b) => new Int32Array(b),
  Float32Array: (b) => new Float32Array(b),
  Float64Array: (b) => new Float64Array(b),
};

/** JSON with typed arrays as `{ $typed, $b64 }` (stores hold strings; the envelope may hold columns). */
export function stringify(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
      const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      let bin = "";
      for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return { $typed: v.constructor.name, $b64: btoa(bin) };
    }
    return v;
  });
}

/** The inverse of stringify; undefined for anything that does not parse. */
export function parse(raw: string | undefined): unknown {
  if (raw === undefined) return undefined;
  try {
    return JSON.parse(raw, (_key, v: unknown) => {
      if (typeof v === "object" && v !== null && "$typed" in v && "$b64" in v) {
        const { $typed, $b64 } = v as { $typed: string; $b64: string };
        const make = TYPED[$typed];
        if (!make) throw new Error(`unknown typed array ${$typed}`);
        const bin = atob($b64);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        return make(bytes.buffer);
      }
      return v;
    });
  } catch {
    return undefined;
  }
}
