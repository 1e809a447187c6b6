/**
 * Coordination between replicas of the Deno/Bun server (issue 13): what one Durable Object gives
 * the Worker for free, several processes get from a shared store (Deno KV, Redis).
 *
 * - A **lease** per job ("token", "snapshot"): one replica at a time refreshes the token or
 *   fetches the fleet; the others wait for its stored result and take over when the lease lapses.
 * - Every lease carries a **fencing value** (a counter bumped on each grant). A write of a shared
 *   record succeeds only while no newer lease on that job was granted, so a replica that stalled
 *   past its lease (GC pause, slow network) cannot overwrite a newer token or snapshot
 *   (Kleppmann's fencing tokens; the store is the one that checks).
 * - Records are strings: the adapters store them as they are (Redis) or in chunks (Deno KV's
 *   64 KiB value limit). What a record means is the caller's business.
 *
 * Runtime-agnostic: the port and an in-memory adapter are here; the Deno KV and Redis adapters
 * live in src/runtimes/ (they use runtime APIs). When the store fails, callers fall back to what a
 * single process does (`coordinated` runs the work without a lease) and `StoreHealth` says so once
 * per episode, in the log and in /health.
 */
import { errorName } from "../errors.ts";
import type { Clock, Logger } from "../ports.ts";
import type { StoreKind, StoreStatus } from "./types.ts";

/** A granted lease. `fence` grows with every grant of the same name. */
export interface Lease {
  readonly name: string;
  readonly fence: number;
  /** Epoch ms at which the lease lapses unless renewed (the holder's clock; informational). */
  readonly until: number;
}

/** The store-side port. Every method may throw when the store is unreachable. */
export interface Coordinator {
  /** `kv` (Deno KV), `redis`, or `memory` (one process; tests). */
  readonly kind: StoreKind;
  /** Takes the lease `name` for `ttlMs` if nobody holds it (or the holder's lapsed); else undefined. */
  tryAcquire(name: string, ttlMs: number): Promise<Lease | undefined>;
  /** Extends a lease still held; false when it lapsed and was granted again (the holder lost it). */
  renew(lease: Lease, ttlMs: number): Promise<boolean>;
  /** Gives the lease up if still held (a lapsed one is left alone). */
  release(lease: Lease): Promise<void>;
  /** The record `name`, or undefined. */
  read(name: string): Promise<string | undefined>;
  /**
   * Writes the record `name` (kept for `ttlMs`) only if no lease on `lease.name` newer than `lease`
   * was granted: the fencing check, done by the store atomically with the write. false: fenced out.
   */
  write(name: string, value: string, lease: Lease, ttlMs: number): Promise<boolean>;
  /** Writes with no lease: for records nobody fences (a failure window). */
  put(name: string, value: string, ttlMs: number): Promise<void>;
  /** Compare-and-delete: removes the record only if it is exactly `expected`. */
  deleteIf(name: string, expected: string): Promise<boolean>;
  /** Closes connections (shutdown). */
  close(): Promise<void>;
}

/** The store did not answer (or answered an error): the caller falls back to per-process behaviour. */
class StoreUnavailableError extends Error {
  constructor(op: string, cause?: unknown) {
    super(`shared store unavailable (${op})`, { cause });
    this.name = "StoreUnavailableError";
  }
}

/** A record the store cannot hold (Deno KV: 800 KiB per atomic write). Not a store failure. */
export class RecordTooLargeError extends Error {
  constructor(bytes: number) {
    super(`record too large for the store (${bytes} characters)`);
    this.name = "RecordTooLargeError";
  }
}

/** The lease was granted to another replica while this one worked: its result will be fenced out. */
export class LeaseLostError extends Error {
  constructor() {
    super("lease lost");
    this.name = "LeaseLostError";
  }
}

/** One store operation longer than this counts as the store being unreachable. */
const STORE_OP_TIMEOUT_MS = 1_000;
/** After a failure, the store is not asked again for this long (each job then runs per process). */
export const STORE_RETRY_MS = 1_000;
/** How often a waiting replica looks whether the lease holder finished (or its lease lapsed). */
const LEASE_POLL_MS = 100;

/**
 * A Coordinator with a deadline on every operation and the store's health: the first failure of
 * an episode is logged once (`store_unavailable`, error name only: a Redis URL may hold a password),
 * the first success after it once (`store_recovered`). While unavailable, operations fail fast for
 * STORE_RETRY_MS instead of waiting on a dead store each time.
 */
export class GuardedCoordinator {
  readonly #inner: Coordinator;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  #downSince: number | undefined;
  #retryAt = 0;
  #failures = 0;

  constructor(inner: Coordinator, opts: { clock: Clock; log: Logger; timeoutMs?: number }) {
    this.#inner = inner;
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#timeoutMs = opts.timeoutMs ?? STORE_OP_TIMEOUT_MS;
  }

  get kind(): Coordinator["kind"] {
    return this.#inner.kind;
  }

  status(): StoreStatus {
    return {
      kind: this.#inner.kind,
      state: this.#downSince === undefined ? "ok" : "unavailable",
      since: this.#downSince,
      failures: this.#failures,
    };
  }

  tryAcquire(name: string, ttlMs: number): Promise<Lease | undefined> {
    return this.#run("acquire", () => this.#inner.tryAcquire(name, ttlMs));
  }
  renew(lease: Lease, ttlMs: number): Promise<boolean> {
    return this.#run("renew", () => this.#inner.renew(lease, ttlMs));
  }
  release(lease: Lease): Promise<void> {
    return this.#run("release", () => this.#inner.release(lease));
  }
  read(name: string): Promise<string | undefined> {
    return this.#run("read", () => this.#inner.read(name));
  }
  write(name: string, value: string, lease: Lease, ttlMs: number): Promise<boolean> {
    return this.#run("write", () => this.#inner.write(name, value, lease, ttlMs));
  }
  put(name: string, value: string, ttlMs: number): Promise<void> {
    return this.#run("put", () => this.#inner.put(name, value, ttlMs));
  }
  deleteIf(name: string, expected: string): Promise<boolean> {
    return this.#run("deleteIf", () => this.#inner.deleteIf(name, expected));
  }
  close(): Promise<void> {
    return this.#inner.close().catch(() => {});
  }

  async #run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const now = this.#clock.now();
    if (this.#downSince !== undefined && now < this.#retryAt) throw new StoreUnavailableError(op);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const result = await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new StoreUnavailableError(`${op} timed out`)), this.#timeoutMs);
        }),
      ]);
      if (this.#downSince !== undefined) {
        this.#log.log("info", "store_recovered", { store: this.#inner.kind, downMs: now - this.#downSince });
        this.#downSince = undefined;
      }
      return result;
    } catch (err) {
      if (err instanceof RecordTooLargeError) throw err;
      this.#failures++;
      this.#retryAt = this.#clock.now() + STORE_RETRY_MS;
      if (this.#downSince === undefined) {
        this.#downSince = now;
        // Once per episode; the error's name only (a message could carry the store URL).
        this.#log.log("warn", "store_unavailable", {
          store: this.#inner.kind,
          op,
          error: errorName(err),
          fallback: "per-process",
        });
      }
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(op, err);
    } finally {
      clearTimeout(timer);
    }
  }
}

export interface CoordinatedJob<T> {
  coordinator: GuardedCoordinator;
  /** The lease's name: one job, one lease. */
  lease: string;
  leaseMs: number;
  clock: Clock;
  sleep: (ms: number) => Promise<void>;
  /** A stored result good enough to use instead of doing the work (undefined: none). May throw to fail fast. */
  readShared: () => Promise<T | undefined>;
  /** The work; with a lease it writes its result fenced, without one (store down) it stays per process. */
  work: (lease: Lease | undefined) => Promise<T>;
  /** Longest wait for another replica's result before doing the work anyway (default: 2 leases + 1 s). */
  waitMs?: number;
}

/**
 * Single flight across replicas: a good stored result, else the work under the lease, else (the
 * lease is held elsewhere) poll until the holder's result is stored or its lease lapses, and take
 * over. The store failing at any point: the work runs without a lease (per process), as a single
 * process would. Errors of the work itself (and of `readShared`) reach the caller.
 */
export async function coordinated<T>(job: CoordinatedJob<T>): Promise<T> {
  const { coordinator, clock } = job;
  const deadline = clock.now() + (job.waitMs ?? 2 * job.leaseMs + 1_000);
  for (;;) {
    let lease: Lease | undefined;
    try {
      const shared = await job.readShared();
      if (shared !== undefined) return shared;
      lease = await coordinator.tryAcquire(job.lease, job.leaseMs);
      if (lease !== undefined) {
        // The holder before us may have stored its result between our read and our grant.
        const again = await job.readShared();
        if (again !== undefined) {
          coordinator.release(lease).catch(() => {});
          return again;
        }
      }
    } catch (err) {
      if (lease !== undefined) coordinator.release(lease).catch(() => {});
      if (!(err instanceof StoreUnavailableError)) throw err;
      return job.work(undefined);
    }
    if (lease !== undefined) {
      const held = lease;
      try {
        return await job.work(held);
      } catch (err) {
        // Another replica holds a newer lease: wait for its result like any other waiter.
        if (!(err instanceof LeaseLostError)) throw err;
      } finally {
        coordinator.release(held).catch(() => {});
      }
    }
    if (clock.now() >= deadline) return job.work(undefined);
    await job.sleep(LEASE_POLL_MS);
  }
}

/** One process's coordinator: the semantics of the shared ones, for tests and as their reference. */
export class MemoryCoordinator implements Coordinator {
  readonly kind = "memory" as const;
  readonly #clock: Clock;
  readonly #leases = new Map<string, { fence: number; until: number }>();
  readonly #fences = new Map<string, number>();
  readonly #records = new Map<string, { value: string; until: number }>();

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  async tryAcquire(name: string, ttlMs: number): Promise<Lease | undefined> {
    const now = this.#clock.now();
    const held = this.#leases.get(name);
    if (held && held.until > now) return undefined;
    const fence = (this.#fences.get(name) ?? 0) + 1;
    this.#fences.set(name, fence);
    this.#leases.set(name, { fence, until: now + ttlMs });
    return { name, fence, until: now + ttlMs };
  }

  async renew(lease: Lease, ttlMs: number): Promise<boolean> {
    const held = this.#leases.get(lease.name);
    if (!held || held.fence !== lease.fence) return false;
    held.until = this.#clock.now() + ttlMs;
    return true;
  }

  async release(lease: Lease): Promise<void> {
    if (this.#leases.get(lease.name)?.fence === lease.fence) this.#leases.delete(lease.name);
  }

  async read(name: string): Promise<string | undefined> {
    const r = this.#records.get(name);
    if (!r) return undefined;
    if (r.until <= this.#clock.now()) {
      this.#records.delete(name);
      return undefined;
    }
    return r.value;
  }

  async write(name: string, value: string, lease: Lease, ttlMs: number): Promise<boolean> {
    if ((this.#fences.get(lease.name) ?? 0) !== lease.fence) return false;
    await this.put(name, value, ttlMs);
    return true;
  }

  async put(name: string, value: string, ttlMs: number): Promise<void> {
    this.#records.set(name, { value, until: this.#clock.now() + ttlMs });
  }

  async deleteIf(name: string, expected: string): Promise<boolean> {
    if ((await this.read(name)) !== expected) return false;
    this.#records.delete(name);
    return true;
  }

  async close(): Promise<void> {}
}
