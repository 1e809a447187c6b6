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
 */
import type { Clock } from "../deps.ts";
import { AppError } from "../errors.ts";

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
export const BREAKER_TRIAL_LEASE_MS = 60_000;

export type BreakerState = "closed" | "open" | "half-open";

/** The breaker as /health shows it. `retryAt`: epoch ms before which no partner call goes out. */
export interface BreakerStatus {
  state: BreakerState;
  retryAt: number | undefined;
}

/** The codes a `Retry-After` window answers with. */
export type RetryAfterCode = "partner_rate_limited" | "partner_unavailable";

export interface CircuitBreakerOptions {
  clock: Clock;
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
  }

  /** The partner call failed. A failed trial reopens with a doubled cool-down. */
  failure(): void {
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
