/**
 * The one holder of the partner access token: single-flight refresh, persistence across resets
 * (its record: token-store.ts), compare-and-swap invalidation with a storm guard, bounded retries,
 * Retry-After and a negative cache for rejected credentials. Runtime-agnostic: it lives in the gateway Durable Object on
 * Workers and in-process on Deno and Bun; everything platform-shaped is injected.
 *
 * The access token leaves this class only through getToken(). It is never logged, never in an
 * error, never in status().
 */
import type { Config } from "../config.ts";
import { AppError, type ErrorCode, type ErrorInfo } from "../errors.ts";
import { coordinated, type GuardedCoordinator, type Lease, LeaseLostError } from "../gateway/coordination.ts";
import type { AccessToken, TokenStatus } from "../gateway/types.ts";
import { backoffMs } from "../http/upstream.ts";
import type { Clock, FetchFn, GatewayTokenBroker, KeyValueStore, Logger } from "../ports.ts";
import { isUsable, minRefreshIntervalMs, scheduleRefresh, usableUntil } from "./refresh-timing.ts";
import { oauthErrorText, requestToken, type TokenGrant } from "./token-endpoint.ts";
import {
  isStoredToken,
  parseSharedRecord,
  type StoredToken,
  storedAccessToken,
  TokenStore,
  tokenId,
} from "./token-store.ts";

/** Shared-store names (replicas on Deno/Bun): the lease and record of the token, and its failure window. */
const SHARED_TOKEN = "token";
const SHARED_TOKEN_GATE = "token-gate";
/** A token lease lasts one attempt (the token timeout) plus this; the holder renews it before each retry. */
const TOKEN_LEASE_MARGIN_MS = 1_000;

/** Token requests per getToken() at most: enough to ride out a blip, too few to hammer. */
const MAX_ATTEMPTS = 3;
/** Backoff between attempts: full jitter in [0, min(cap, base * 2^attempt)). */
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 2_000;
/**
 * No new attempt starts unless it can finish (backoff + token timeout) within this budget of the
 * first one, so one getToken() stays well below the 30 s a caller may wait on a Durable Object.
 * With the default 5 s token timeout: 3 fast failures take under a second of backoff; an endpoint
 * that times out every time gets 2 attempts (about 10.3 s), as a third could not end by 15 s.
 */
export const RETRY_BUDGET_MS = 15_000;
/** How long `token_client_rejected` is remembered: wrong credentials never cause a request storm. */
export const REJECTED_CACHE_MS = 60_000;
/**
 * After a refresh fails for a transient reason (all attempts spent), new requests wait this long,
 * doubling per consecutive failure up to FAILURE_COOLDOWN_MAX_MS; callers meanwhile get the last
 * error at once. Single-flight already bounds the rate; this keeps a dead endpoint from seeing a
 * fresh burst of attempts the instant each one ends.
 */
const FAILURE_COOLDOWN_BASE_MS = 1_000;
const FAILURE_COOLDOWN_MAX_MS = 30_000;
/** invalidate() forces at most one refresh per this interval... */
export const FORCED_REFRESH_MIN_INTERVAL_MS = 10_000;
/**
 * ...and at most this many per minute: a partner that rejects every fresh token (clock skew, a
 * wrong audience) costs 3 token requests a minute, not one per partner call.
 */
export const FORCED_REFRESH_MAX_PER_MINUTE = 3;

/** Everything the broker needs. `random` and `sleep` are injectable for tests. */
export interface TokenBrokerOptions {
  config: Config;
  fetch: FetchFn;
  store: KeyValueStore;
  clock: Clock;
  log: Logger;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /**
   * Replicas sharing one store (Deno KV, Redis): refreshes run under its lease, the token and the
   * failure windows are shared. Absent: this process alone (the Durable Object needs none).
   */
  coordinator?: GuardedCoordinator;
}

/** A failure window as the replicas share it. */
interface SharedGate {
  until: number;
  error: ErrorInfo;
  fingerprint: string;
}

interface Current {
  token: AccessToken;
  refreshAt: number;
}

/** An error window: until `until`, no token request; callers get `error` at once. */
interface Gate {
  until: number;
  error: ErrorInfo;
}

const TRANSIENT: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "token_endpoint_error",
  "token_endpoint_unavailable",
  "token_endpoint_timeout",
]);

function toAppError(err: unknown): AppError {
  return err instanceof AppError ? err : new AppError("internal", { cause: err });
}

/**
 * OAuth 2.0 client-credentials token source (RFC 6749 §4.4) for the partner API.
 *
 * - getToken(): the current token while usable; past its refresh time it is still handed out and
 *   renewed in the background; when none is usable, callers wait for the (single) refresh.
 * - invalidate(id): compare-and-swap on the token id; at most one forced refresh per 10 s and 3 a minute.
 */
export class TokenBroker implements GatewayTokenBroker {
  readonly #config: Config;
  readonly #fetch: FetchFn;
  readonly #persisted: TokenStore;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #random: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #coordinator: GuardedCoordinator | undefined;

  #current: Current | undefined;
  /** The id of the token last reported rejected here: never taken back from the shared store. */
  #rejectedId: string | undefined;
  /** The replicas' lease of the refresh in flight (undefined: none, or no shared store). */
  #flightLease: Lease | undefined;
  #loaded: Promise<void> | undefined;
  /** The refresh in flight: every caller joins it. Cleared in `finally` only if still current. */
  #flight: Promise<Current> | undefined;
  #gate: Gate | undefined;
  #consecutiveFailures = 0;
  #lastError: ErrorCode | undefined;
  #lastRefreshAt: number | undefined;
  #lastForcedAt: number | undefined;
  #forcedTimes: number[] = [];
  #tokenRequests = 0;
  #forcedRefreshes = 0;

  constructor(opts: TokenBrokerOptions) {
    this.#config = opts.config;
    this.#fetch = opts.fetch;
    this.#persisted = new TokenStore({ store: opts.store, log: opts.log, config: opts.config });
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#random = opts.random ?? Math.random;
    this.#sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.#coordinator = opts.coordinator;
  }

  /** Token requests sent since this instance started (each attempt counts). */
  get tokenRequests(): number {
    return this.#tokenRequests;
  }

  /** Refreshes forced by invalidate() since this instance started. */
  get forcedRefreshes(): number {
    return this.#forcedRefreshes;
  }

  /** A usable token; refreshes first (single-flight) only when none is usable. */
  async getToken(): Promise<AccessToken> {
    await this.#load();
    const now = this.#clock.now();
    const cur = this.#current;
    if (cur && isUsable(cur.token, now)) {
      // Past its refresh time: hand it out anyway and renew behind it (see shouldRefresh).
      if (now >= cur.refreshAt) this.#refreshInBackground(now);
      return { ...cur.token };
    }
    const next = await this.#refresh();
    return { ...next.token };
  }

  /**
   * Retires the token with this id if it is still the current one, and starts one refresh.
   * A report about an older token (the id no longer matches) does nothing, so 50 concurrent
   * reports of one rejected token cost one refresh. Beyond the storm guard it does nothing but warn.
   * Never throws: a failing refresh surfaces through the next getToken().
   */
  async invalidate(id: string): Promise<void> {
    await this.#load();
    const cur = this.#current;
    if (cur === undefined || cur.token.id !== id) {
      this.#log.log("debug", "token_invalidate_stale", { tokenId: id });
      return;
    }
    const now = this.#clock.now();
    this.#forcedTimes = this.#forcedTimes.filter((t) => now - t < 60_000);
    if (
      (this.#lastForcedAt !== undefined && now - this.#lastForcedAt < FORCED_REFRESH_MIN_INTERVAL_MS) ||
      this.#forcedTimes.length >= FORCED_REFRESH_MAX_PER_MINUTE
    ) {
      this.#log.log("warn", "token_invalidate_suppressed", { tokenId: id, forcedLastMinute: this.#forcedTimes.length });
      return;
    }
    this.#lastForcedAt = now;
    this.#forcedTimes.push(now);
    this.#forcedRefreshes++;
    // Synchronously (no await since the id check) retire it, so concurrent reports see no match.
    this.#current = undefined;
    this.#rejectedId = id;
    this.#log.log("info", "token_invalidated", { tokenId: id });
    void this.#persisted.delete();
    // Across replicas, compare-and-swap too: only the record that still holds this token goes.
    await this.#retireShared(id);
    // A refresh already in flight yields a new token: join it rather than start another.
    try {
      await this.#refresh();
    } catch {
      // Logged by the flight; getToken() reports it to callers.
    }
  }

  /** Token state for /health: never the token. */
  status(): TokenStatus {
    const now = this.#clock.now();
    const cur = this.#current;
    const usable = cur !== undefined && isUsable(cur.token, now);
    let state: TokenStatus["state"];
    if (usable) state = "valid";
    else if (this.#lastError !== undefined) state = "failing";
    else if (cur !== undefined) state = "expired";
    else state = "none";
    return {
      state,
      ageS: cur ? Math.max(0, Math.floor((now - cur.token.obtainedAt) / 1000)) : undefined,
      secondsLeft: cur ? Math.max(0, Math.floor((cur.token.expiresAt - now) / 1000)) : undefined,
      refreshAt: cur?.refreshAt,
      lastRefreshAt: this.#lastRefreshAt,
      lastError: this.#lastError,
      tokenRequests: this.#tokenRequests,
      forcedRefreshes: this.#forcedRefreshes,
    };
  }

  /**
   * When the current token should be renewed (epoch ms; may be in the past), pushed back to the end
   * of a Retry-After or negative-cache window; undefined with no token. For a Durable Object alarm.
   */
  nextRefreshAt(): number | undefined {
    const cur = this.#current;
    if (cur === undefined) return undefined;
    return Math.max(cur.refreshAt, this.#gate?.until ?? 0);
  }

  /**
   * Cron warm-up: makes sure a token stays usable for `seconds` more, refreshing now if not.
   * A token younger than its minimum refresh interval is kept even if it cannot last that long
   * (a new one would not last longer). Throws the refresh's error (the old token, if still
   * usable, keeps being served by getToken()).
   */
  async ensureValidFor(seconds: number): Promise<void> {
    await this.#load();
    const now = this.#clock.now();
    const cur = this.#current;
    if (cur && isUsable(cur.token, now)) {
      if (usableUntil(cur.token) - now >= seconds * 1000) return;
      const life = cur.token.expiresAt - cur.token.obtainedAt;
      if (now - cur.token.obtainedAt < minRefreshIntervalMs(life)) return;
    }
    await this.#refresh();
  }

  /** Resolves once no refresh is in flight (tests; a graceful shutdown). Never rejects. */
  async whenIdle(): Promise<void> {
    while (this.#flight) await this.#flight.catch(() => {});
  }

  // --- internals -------------------------------------------------------------------------

  /** Loads the persisted token once per instance (a reset keeps storage, loses memory). */
  #load(): Promise<void> {
    this.#loaded ??= this.#loadStored();
    return this.#loaded;
  }

  async #loadStored(): Promise<void> {
    const token = await this.#persisted.load();
    if (token === undefined) return;
    if (!isUsable(token, this.#clock.now())) return;
    // Nothing else can have set a token yet (every entry point awaits the load first); be safe anyway.
    if (this.#current !== undefined) return;
    this.#current = { token, refreshAt: scheduleRefresh(token, this.#random) };
    this.#log.log("info", "token_restored", {
      tokenId: token.id,
      secondsLeft: Math.floor((token.expiresAt - this.#clock.now()) / 1000),
    });
  }

  #refreshInBackground(now: number): void {
    if (this.#flight !== undefined || this.#gated(now) !== undefined) return;
    // The error is logged by the flight; the old token keeps being served while usable.
    this.#refresh().catch(() => {});
  }

  #gated(now: number): Gate | undefined {
    const g = this.#gate;
    if (g === undefined) return undefined;
    if (now >= g.until) {
      this.#gate = undefined;
      return undefined;
    }
    return g;
  }

  /** Joins the refresh in flight, or starts one; fails fast inside an error window. */
  #refresh(): Promise<Current> {
    if (this.#flight) return this.#flight;
    const now = this.#clock.now();
    const gate = this.#gated(now);
    if (gate) {
      const info: ErrorInfo = { ...gate.error, retryAfterS: Math.max(1, Math.ceil((gate.until - now) / 1000)) };
      return Promise.reject(AppError.fromInfo(info));
    }
    const flight: Promise<Current> = this.#obtain().finally(() => {
      if (this.#flight === flight) this.#flight = undefined;
    });
    this.#flight = flight;
    return flight;
  }

  /** One refresh: with replicas, under their lease (or another's result); else this process's own. */
  #obtain(): Promise<Current> {
    const coordinator = this.#coordinator;
    if (coordinator === undefined) return this.#obtainOwn(undefined);
    return coordinated({
      coordinator,
      lease: SHARED_TOKEN,
      leaseMs: this.#config.tokenTimeoutMs + TOKEN_LEASE_MARGIN_MS,
      clock: this.#clock,
      sleep: this.#sleep,
      readShared: () => this.#readShared(coordinator),
      work: (lease) => this.#obtainOwn(lease),
    });
  }

  /**
   * The shared token, taken over when it is ours to use (same settings, usable, not the one
   * reported rejected here) and better than the one held. Else, inside a shared failure window,
   * fails fast with it (and opens the same window here): replicas honour Retry-After and the
   * negative cache together.
   */
  async #readShared(coordinator: GuardedCoordinator): Promise<Current | undefined> {
    const now = this.#clock.now();
    const fingerprint = await this.#persisted.fingerprint();
    const stored = parseSharedRecord<StoredToken>(await coordinator.read(SHARED_TOKEN));
    // A usable token first: a failed refresh elsewhere leaves the old one good, as in one process.
    if (isStoredToken(stored) && stored.fingerprint === fingerprint) {
      const token = await storedAccessToken(stored);
      const cur = this.#current;
      const better = cur === undefined || token.expiresAt > cur.token.expiresAt;
      if (token.id !== this.#rejectedId && isUsable(token, now) && better) {
        const current: Current = { token, refreshAt: scheduleRefresh(token, this.#random) };
        this.#current = current;
        this.#gate = undefined;
        this.#consecutiveFailures = 0;
        this.#lastError = undefined;
        this.#log.log("info", "token_shared", {
          tokenId: token.id,
          secondsLeft: Math.floor((token.expiresAt - now) / 1000),
        });
        return current;
      }
    }
    const gate = parseSharedRecord<SharedGate>(await coordinator.read(SHARED_TOKEN_GATE));
    if (gate && gate.fingerprint === fingerprint && typeof gate.until === "number" && gate.until > now) {
      this.#gate = { until: gate.until, error: gate.error };
      this.#lastError = gate.error.code;
      const retryAfterS = Math.max(1, Math.ceil((gate.until - now) / 1000));
      throw AppError.fromInfo({ ...gate.error, retryAfterS });
    }
    return undefined;
  }

  /** Removes the shared token if it is still the one with this id (compare-and-delete). */
  async #retireShared(id: string): Promise<void> {
    const coordinator = this.#coordinator;
    if (coordinator === undefined) return;
    try {
      const raw = await coordinator.read(SHARED_TOKEN);
      const stored = parseSharedRecord<StoredToken>(raw);
      if (raw !== undefined && isStoredToken(stored) && (await tokenId(stored.value)) === id) {
        await coordinator.deleteIf(SHARED_TOKEN, raw);
      }
    } catch {
      // Store down: logged by the guard; the id check in #readShared still keeps the token out.
    }
  }

  /** Up to MAX_ATTEMPTS token requests with backoff, within RETRY_BUDGET_MS; the lease renewed before each retry. */
  async #obtainOwn(lease: Lease | undefined): Promise<Current> {
    // Flights never overlap (single flight), so the lease can wait in a field for #accept.
    this.#flightLease = lease;
    const start = this.#clock.now();
    let err: AppError | undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) {
        const delay = backoffMs(attempt - 1, BACKOFF_BASE_MS, BACKOFF_CAP_MS, this.#random);
        // Start another attempt only if it can finish within the budget.
        if (this.#clock.now() + delay + this.#config.tokenTimeoutMs - start > RETRY_BUDGET_MS) break;
        if (lease !== undefined) await this.#renew(lease, delay + this.#config.tokenTimeoutMs + TOKEN_LEASE_MARGIN_MS);
        await this.#sleep(delay);
      }
      this.#tokenRequests++;
      try {
        const grant = await requestToken(this.#fetch, this.#config, this.#clock);
        return await this.#accept(grant);
      } catch (e) {
        err = toAppError(e);
        const fields: Record<string, unknown> = { code: err.code, attempt: attempt + 1 };
        if (err.detail !== undefined) fields.detail = err.detail;
        const oauthError = oauthErrorText(err);
        if (oauthError !== undefined) fields.oauthError = oauthError;
        if (err.retryAfterS !== undefined) fields.retryAfterS = err.retryAfterS;
        this.#log.log("warn", "token_request_failed", fields);
        if (!TRANSIENT.has(err.code)) break;
        // RFC 9110 §10.2.3: the endpoint said when to come back; no request before that.
        if (err.retryAfterS !== undefined && err.retryAfterS > 0) break;
      }
    }
    throw await this.#fail(err ?? new AppError("internal"), lease);
  }

  /** Keeps the lease for the next attempt; another replica holding it now means stop and wait for its token. */
  async #renew(lease: Lease, ttlMs: number): Promise<void> {
    let held: boolean;
    try {
      held = (await this.#coordinator?.renew(lease, ttlMs)) ?? true;
    } catch {
      return; // Store down: carry on as a single process would.
    }
    if (!held) throw new LeaseLostError();
  }

  /** Publishes a record to the other replicas, fenced by the lease; best effort. */
  async #share(name: string, record: unknown, lease: Lease | undefined, ttlMs: number): Promise<void> {
    if (lease === undefined || this.#coordinator === undefined || ttlMs <= 0) return;
    try {
      const written = await this.#coordinator.write(name, JSON.stringify(record), lease, ttlMs);
      if (!written) this.#log.log("warn", "shared_write_fenced", { record: name, fence: lease.fence });
    } catch {
      // Store down: logged once by the guard; the other replicas fall back to their own.
    }
  }

  async #accept(grant: TokenGrant): Promise<Current> {
    const lease = this.#flightLease;
    const token: AccessToken = {
      value: grant.value,
      id: await tokenId(grant.value),
      expiresAt: grant.expiresAt,
      obtainedAt: grant.obtainedAt,
    };
    const current: Current = { token, refreshAt: scheduleRefresh(token, this.#random) };
    this.#current = current;
    this.#gate = undefined;
    this.#consecutiveFailures = 0;
    this.#lastError = undefined;
    this.#lastRefreshAt = grant.obtainedAt;
    this.#log.log("info", "token_refreshed", { lifetimeS: grant.lifetimeS, tokenId: token.id });
    const stored = await this.#persisted.save(token);
    await this.#share(SHARED_TOKEN, stored, lease, token.expiresAt - this.#clock.now());
    return current;
  }

  /** Records a failed refresh and opens the matching error window (for every replica, with a lease). */
  async #fail(err: AppError, lease?: Lease): Promise<AppError> {
    const now = this.#clock.now();
    this.#lastError = err.code;
    this.#consecutiveFailures++;
    let windowMs: number;
    if (err.code === "token_client_rejected") windowMs = REJECTED_CACHE_MS;
    else if (err.retryAfterS !== undefined && err.retryAfterS > 0) windowMs = err.retryAfterS * 1000;
    else windowMs = Math.min(FAILURE_COOLDOWN_MAX_MS, FAILURE_COOLDOWN_BASE_MS * 2 ** (this.#consecutiveFailures - 1));
    const info = err.toInfo();
    delete info.retryAfterS; // recomputed for each caller from the window's end
    this.#gate = { until: now + windowMs, error: info };
    const fields: Record<string, unknown> = { code: err.code, retryInS: Math.ceil(windowMs / 1000) };
    if (err.detail !== undefined) fields.detail = err.detail;
    const usable = this.#current !== undefined && isUsable(this.#current.token, now);
    fields.servingOldToken = usable;
    this.#log.log(err.code === "token_client_rejected" || !usable ? "error" : "warn", "token_refresh_failed", fields);
    const gate: SharedGate = { until: now + windowMs, error: info, fingerprint: await this.#persisted.fingerprint() };
    await this.#share(SHARED_TOKEN_GATE, gate, lease, windowMs);
    // Every caller, this flight's and those failing fast inside the window, learns when to retry.
    return AppError.fromInfo({ ...info, retryAfterS: Math.max(1, Math.ceil(windowMs / 1000)) });
  }
}
