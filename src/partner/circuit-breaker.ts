/**
 * A small circuit breaker in front of the partner API, plus the partner's own `Retry-After`.
 *
 * closed ──(N consecutive failures)──> open ──(cool-down elapsed)──> half-open
 * half-open lets exactly one trial call through: success closes the breaker (and resets the
 * cool-down), failure opens it again for twice as long, up to a cap.
 *
 * Independently of that state, a 429/503 answer's `Retry-After` (RFC 9110 §10.2.3) sets a
 * window inside which no call goes out at all: the partner asked us to wait, so we wait.
 *
 * Time comes from an injected clock (in Workers `Date.now()` only advances across I/O).
 *
 * With a store (Durable Object storage), what makes it refuse calls survives an object reset: the
 * open state, its cool-down, the failure count and the Retry-After window are written when they
 * change and read once, lazily (`ready()`), by the next instance. A deploy, an eviction or a
 * crash no longer means "fetch again at once". A crash *while a partner body is being parsed*
 * is the one a bad body causes (memory), so that phase leaves a durable mark first
 * (`beforeParse()`): an instance that finds the mark counts it as a failed call that opens the
 * breaker at once (or, if it was already open, as a failed trial), so a body that kills the
 * object is not fetched again before the cool-down ends.
 */

import { AppError, errorName } from "../errors.ts";
import type { Clock, KeyValueStore, Logger } from "../ports.ts";

/** Storage key of the persisted breaker (next to `oauth:token` and `snapshot:last`). */
export const BREAKER_STORE_KEY = "partner:breaker";

/** Consecutive failed partner calls that open the breaker. */
export const BREAKER_FAILURE_THRESHOLD = 5;
/** First cool-down once the breaker opens; doubles after each failed trial. */
export const BREAKER_BASE_COOLDOWN_MS = 30_000;
/** Upper bound of the doubling cool-down (the default stale window, so a last good copy spans it). */
export const BREAKER_MAX_COOLDOWN_MS = 300_000;
/**
 * How long one half-open trial may hold its slot before another caller may try. Only a guard
 * against a trial that never reports back: longer than any trial can take (two partner
 * deadlines, a token refresh and a retry delay).
 */
const BREAKER_TRIAL_LEASE_MS = 60_000;

type BreakerState = "closed" | "open" | "half-open";

/** The breaker as /health shows it. `retryAt`: epoch ms before which no partner call goes out. */
export interface BreakerStatus {
  state: BreakerState;
  retryAt: number | undefined;
}

/** The codes a `Retry-After` window answers with. */
export type RetryAfterCode = "partner_rate_limited" | "partner_unavailable";

/** The persisted breaker: everything that makes it refuse calls, plus the parse mark. */
export interface StoredBreaker {
  v: 1;
  failures: number;
  cooldownMs: number;
  openUntil?: number;
  retryAt?: number;
  retryCode?: RetryAfterCode;
  /** Set while a partner body is being parsed; an instance that finds it died doing that. */
  parsingSince?: number;
}

export interface CircuitBreakerOptions {
  clock: Clock;
  /** Where the open state survives a reset; without one it lives in memory only. */
  store?: KeyValueStore;
  log?: Logger;
  failureThreshold?: number;
  baseCooldownMs?: number;
  maxCooldownMs?: number;
  trialLeaseMs?: number;
}

/**
 * Not safe to share across isolates (it is plain memory): it lives next to the one partner
 * client inside the gateway object, where every call shares it.
 */
export class CircuitBreaker {
  readonly #clock: Clock;
  readonly #threshold: number;
  readonly #baseCooldownMs: number;
  readonly #maxCooldownMs: number;
  readonly #trialLeaseMs: number;
  readonly #store: KeyValueStore | undefined;
  readonly #log: Logger | undefined;
  #loaded: Promise<void> | undefined;
  /** JSON of the last record written (or read): a write only when something changed. */
  #written = "";
  /** Writes run one after another, each writing the state as it is when it runs. */
  #writes: Promise<void> = Promise.resolve();
  #parsingSince: number | undefined;

  #failures = 0;
  #cooldownMs: number;
  /** Set while open or half-open; the moment the current cool-down ends. */
  #openUntil: number | undefined;
  /** Set while a half-open trial is out; the moment its lease ends. */
  #trialUntil: number | undefined;
  /** From the partner's Retry-After. */
  #retryAt: number | undefined;
  #retryCode: RetryAfterCode = "partner_rate_limited";

  constructor(opts: CircuitBreakerOptions) {
    this.#clock = opts.clock;
    this.#threshold = Math.max(1, opts.failureThreshold ?? BREAKER_FAILURE_THRESHOLD);
    this.#baseCooldownMs = opts.baseCooldownMs ?? BREAKER_BASE_COOLDOWN_MS;
    this.#maxCooldownMs = Math.max(this.#baseCooldownMs, opts.maxCooldownMs ?? BREAKER_MAX_COOLDOWN_MS);
    this.#trialLeaseMs = opts.trialLeaseMs ?? BREAKER_TRIAL_LEASE_MS;
    this.#cooldownMs = this.#baseCooldownMs;
    this.#store = opts.store;
    this.#log = opts.log;
    if (!this.#store) this.#loaded = Promise.resolve();
  }

  /**
   * Loads the persisted state, once per instance (later calls share the first load: this lives
   * in one object, where that is allowed). Call before `acquire()` and `state()`. Never rejects:
   * an unreadable record is logged and the breaker starts closed.
   */
  ready(): Promise<void> {
    this.#loaded ??= this.#load();
    return this.#loaded;
  }

  async #load(): Promise<void> {
    const store = this.#store;
    if (!store) return;
    let rec: StoredBreaker | undefined;
    try {
      rec = await store.get<StoredBreaker>(BREAKER_STORE_KEY);
    } catch (err) {
      this.#log?.log("warn", "breaker_store_failed", { op: "get", error: errorName(err) });
      return;
    }
    if (!isStoredBreaker(rec)) {
      // Nothing stored (or nothing usable): the closed state needs no write until it changes.
      this.#written = JSON.stringify(this.#record());
      return;
    }
    this.#written = JSON.stringify(rec);
    this.#failures = rec.failures;
    this.#cooldownMs = Math.min(Math.max(rec.cooldownMs, this.#baseCooldownMs), this.#maxCooldownMs);
    this.#openUntil = rec.openUntil;
    this.#retryAt = rec.retryAt;
    if (rec.retryCode) this.#retryCode = rec.retryCode;
    if (rec.parsingSince !== undefined) {
      // The last instance died parsing a partner body: most likely that body killed it.
      const wasOpen = this.#openUntil !== undefined;
      this.#log?.log("warn", "partner_parse_interrupted", { parsingSince: rec.parsingSince, wasOpen });
      if (wasOpen) this.#cooldownMs = Math.min(this.#cooldownMs * 2, this.#maxCooldownMs);
      else {
        this.#failures = 0;
        this.#cooldownMs = this.#baseCooldownMs;
      }
      this.#openUntil = this.#clock.now() + this.#cooldownMs;
      void this.#persist();
    }
  }

  /**
   * A partner body is about to be parsed: leave a durable mark first (see the module comment).
   * `success()` or `failure()` clears it.
   */
  async beforeParse(): Promise<void> {
    if (!this.#store) return;
    this.#parsingSince = this.#clock.now();
    await this.#persist();
    // Durable before the risky step, not merely queued (Durable Object storage coalesces writes).
    await this.#store.sync?.().catch((err: unknown) => {
      this.#log?.log("warn", "breaker_store_failed", { op: "sync", error: errorName(err) });
    });
  }

  #record(): StoredBreaker {
    const rec: StoredBreaker = { v: 1, failures: this.#failures, cooldownMs: this.#cooldownMs };
    if (this.#openUntil !== undefined) rec.openUntil = this.#openUntil;
    if (this.#retryAt !== undefined) {
      rec.retryAt = this.#retryAt;
      rec.retryCode = this.#retryCode;
    }
    if (this.#parsingSince !== undefined) rec.parsingSince = this.#parsingSince;
    return rec;
  }

  /** Queues a write of the current state if it differs from the last one written. Never rejects. */
  #persist(): Promise<void> {
    const store = this.#store;
    if (!store) return Promise.resolve();
    this.#writes = this.#writes.then(async () => {
      const rec = this.#record();
      const json = JSON.stringify(rec);
      if (json === this.#written) return;
      try {
        await store.put(BREAKER_STORE_KEY, rec);
        this.#written = json;
      } catch (err) {
        this.#log?.log("warn", "breaker_store_failed", { op: "put", error: errorName(err) });
      }
    });
    return this.#writes;
  }

  /** Resolves when every state change so far is written (tests; graceful shutdown). */
  flush(): Promise<void> {
    return this.#writes;
  }

  /**
   * Asks leave to call the partner. Throws AppError (`partner_rate_limited` / `partner_unavailable`
   * inside a Retry-After window, else `partner_circuit_open`) with `retryAfterS` when no call may
   * go out now. In half-open state the caller that gets through holds the one trial slot and
   * must report back with `success()`, `failure()` or `release()`.
   */
  acquire(): void {
    const now = this.#clock.now();
    const retryAt = this.#retryAt !== undefined && now < this.#retryAt ? this.#retryAt : undefined;
    const openUntil = this.#openUntil !== undefined && now < this.#openUntil ? this.#openUntil : undefined;
    if (retryAt !== undefined && (openUntil === undefined || retryAt >= openUntil)) {
      throw new AppError(this.#retryCode, { retryAfterS: secondsUntil(retryAt, now) });
    }
    if (openUntil !== undefined) {
      throw new AppError("partner_circuit_open", { retryAfterS: secondsUntil(openUntil, now) });
    }
    if (this.#openUntil === undefined) return; // closed
    // Half-open: one trial at a time.
    if (this.#trialUntil !== undefined && now < this.#trialUntil) {
      throw new AppError("partner_circuit_open", { retryAfterS: 1 });
    }
    this.#trialUntil = now + this.#trialLeaseMs;
  }

  /** The partner answered well: close, and forget past failures. */
  success(): void {
    this.#failures = 0;
    this.#openUntil = undefined;
    this.#trialUntil = undefined;
    this.#cooldownMs = this.#baseCooldownMs;
    this.#parsingSince = undefined;
    void this.#persist();
  }

  /** The partner call failed. A failed trial reopens with a doubled cool-down. */
  failure(): void {
    this.#failure();
    this.#parsingSince = undefined;
    void this.#persist();
  }

  #failure(): void {
    const now = this.#clock.now();
    if (this.#openUntil !== undefined) {
      // A failed half-open trial (or a straggler from before the breaker opened).
      if (this.#trialUntil !== undefined || now >= this.#openUntil) {
        this.#cooldownMs = Math.min(this.#cooldownMs * 2, this.#maxCooldownMs);
        this.#openUntil = now + this.#cooldownMs;
      }
      this.#trialUntil = undefined;
      return;
    }
    this.#failures += 1;
    if (this.#failures >= this.#threshold) {
      this.#failures = 0;
      this.#cooldownMs = this.#baseCooldownMs;
      this.#openUntil = now + this.#cooldownMs;
    }
  }

  /** The call ended without a verdict on the partner (e.g. the token source failed first). */
  release(): void {
    this.#trialUntil = undefined;
    if (this.#parsingSince !== undefined) {
      this.#parsingSince = undefined;
      void this.#persist();
    }
  }

  /**
   * The partner said when to come back (RFC 9110 §10.2.3): no call before `untilMs`; callers in
   * the window get `code`. A later window wins over an earlier one.
   */
  holdUntil(untilMs: number, code: RetryAfterCode): void {
    const now = this.#clock.now();
    if (this.#retryAt === undefined || this.#retryAt <= now || untilMs >= this.#retryAt) {
      this.#retryAt = untilMs;
      this.#retryCode = code;
      void this.#persist();
    }
  }

  /** For /health: the state, and when partner calls may go out again (undefined: now). */
  state(): BreakerStatus {
    const now = this.#clock.now();
    let state: BreakerState = "closed";
    if (this.#openUntil !== undefined) state = now < this.#openUntil ? "open" : "half-open";
    const waits = [this.#retryAt, state === "open" ? this.#openUntil : undefined].filter(
      (t): t is number => t !== undefined && t > now,
    );
    return { state, retryAt: waits.length > 0 ? Math.max(...waits) : undefined };
  }
}

/** Whole seconds until `t`, at least 1 (a Retry-After of 0 would invite an immediate retry). */
function secondsUntil(t: number, now: number): number {
  return Math.max(1, Math.ceil((t - now) / 1000));
}

function isStoredBreaker(v: unknown): v is StoredBreaker {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  const optNum = (x: unknown) => x === undefined || (typeof x === "number" && Number.isFinite(x));
  return (
    r.v === 1 &&
    typeof r.failures === "number" &&
    Number.isInteger(r.failures) &&
    r.failures >= 0 &&
    typeof r.cooldownMs === "number" &&
    Number.isFinite(r.cooldownMs) &&
    optNum(r.openUntil) &&
    optNum(r.retryAt) &&
    optNum(r.parsingSince) &&
    (r.retryCode === undefined || r.retryCode === "partner_rate_limited" || r.retryCode === "partner_unavailable")
  );
}
