/**
 * Ports: everything the core needs from the platform comes in through these, so the same
 * core runs in a Worker, a Durable Object, Deno and Bun. Nothing here imports a runtime.
 */
import type { Config, ConfigError } from "./config.ts";
import type { ErrorCode, ErrorInfo } from "./errors.ts";
import type { StoreStatus } from "./gateway/coordination.ts";

/** Milliseconds since the epoch. Injected: in Workers `Date.now()` only advances across I/O. */
export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };

export type LogLevel = "debug" | "info" | "warn" | "error";
/** Structured logs: one JSON object per line. Fields must never hold a token or secret. */
export interface Logger {
  log(level: LogLevel, event: string, fields?: Record<string, unknown>): void;
}
export const consoleLogger: Logger = {
  log(level, event, fields) {
    const line = JSON.stringify({ level, event, ...fields });
    if (level === "error") console.error(line);
    else if (level === "warn") console.warn(line);
    else console.log(line);
  },
};

/** A small durable key-value store: Durable Object storage, or memory. Values are structured-cloneable. */
export interface KeyValueStore {
  get<T>(key: string): Promise<T | undefined>;
  put<T>(key: string, value: T): Promise<void>;
  delete(key: string): Promise<void>;
  /** Resolves once every write so far is durable (Durable Object storage's `sync()`); absent: already so. */
  sync?(): Promise<void>;
}

/** In-memory KeyValueStore (Deno, Bun, unit tests). */
export class MemoryStore implements KeyValueStore {
  readonly #m = new Map<string, unknown>();
  async get<T>(key: string): Promise<T | undefined> {
    return structuredClone(this.#m.get(key)) as T | undefined;
  }
  async put<T>(key: string, value: T): Promise<void> {
    this.#m.set(key, structuredClone(value));
  }
  async delete(key: string): Promise<void> {
    this.#m.delete(key);
  }
}

/** The fetch function; injected so tests and runtimes can supply their own. */
export type FetchFn = (input: Request | string | URL, init?: RequestInit) => Promise<Response>;

/** An access token. Lives only inside the gateway (the Durable Object, or the in-process source). */
export interface AccessToken {
  /** The bearer value. Never logged, never returned to a client, never cached outside the broker. */
  value: string;
  /** A non-secret identity for compare-and-swap invalidation (a hash prefix of the value). */
  id: string;
  /** Epoch ms at which the token endpoint said it expires. */
  expiresAt: number;
  /** Epoch ms at which we obtained it. */
  obtainedAt: number;
}

/** The token broker (src/oauth/token-broker.ts) as the gateway uses it: the one holder of the token. */
export interface GatewayTokenBroker {
  /** A token valid for a while yet; refreshes (single-flight) first when needed. */
  getToken(): Promise<AccessToken>;
  /** Compare-and-swap: retire the token with this id if it is still the current one. */
  invalidate(id: string): Promise<void>;
  status(): TokenStatus;
  /** Epoch ms at which the current token should be refreshed; undefined: no token yet. */
  nextRefreshAt(): number | undefined;
  /** Makes sure a token valid for at least `seconds` more is held; throws AppError otherwise. */
  ensureValidFor(seconds: number): Promise<void>;
}

/** What the partner call needs of the broker: a token, and a way to report a rejected one. */
export type TokenSource = Pick<GatewayTokenBroker, "getToken" | "invalidate">;

/** Token state for /health: never the token. */
export interface TokenStatus {
  state: "none" | "valid" | "expired" | "failing";
  ageS: number | undefined;
  secondsLeft: number | undefined;
  refreshAt: number | undefined;
  lastRefreshAt: number | undefined;
  lastError: ErrorCode | undefined;
  /** Token requests sent since this instance started. */
  tokenRequests: number;
  /** Refreshes forced by invalidate() since this instance started. */
  forcedRefreshes: number;
}

/**
 * A redacted vehicle snapshot as it travels from the gateway object to the Worker and into the
 * Cache API: the prepared form (src/vehicles/prepared.ts), built once by the object, loaded by
 * every isolate without parsing the fleet.
 */
export interface SnapshotEnvelope {
  /** The prepared snapshot: JSON text of the redacted vehicles plus typed-array columns and index. */
  data: Uint8Array;
  /** Epoch ms at which the partner answered. */
  fetchedAt: number;
  /** Strong validator of `body` (quoted, RFC 9110 §8.8.3). */
  etag: string;
  count: number;
  /** Partner items dropped as malformed. */
  dropped: number;
}

export type SnapshotResult =
  | { ok: true; snapshot: SnapshotEnvelope; stale: boolean; error?: ErrorInfo }
  | { ok: false; error: ErrorInfo };

export interface GatewayCounters {
  tokenRequests: number;
  partnerRequests: number;
  partnerFailures: number;
  snapshotServed: number;
  snapshotFetches: number;
  droppedVehicles: number;
  /** Snapshot answers the Durable Object gave through its fetch() feed (Workers only). */
  feedRequests?: number;
}

export interface GatewayStatus {
  token: TokenStatus;
  snapshot: { fetchedAt: number | undefined; ageS: number | undefined; count: number | undefined };
  breaker: { state: "closed" | "open" | "half-open"; retryAt: number | undefined };
  counters: GatewayCounters;
  /** Deno/Bun replicas with GATEWAY_STORE: the shared store's state. */
  store?: StoreStatus;
}

export interface WarmResult {
  tokenSecondsLeft: number | undefined;
  snapshotFetchedAt: number | undefined;
  error?: ErrorInfo;
}

/** L3: the world's one gateway (a Durable Object in Workers; in-process on Deno and Bun). */
export interface SnapshotSource {
  /** A snapshot fresher than `notOlderThan` (epoch ms) if given, else within the TTL; stale-if-error inside. */
  getSnapshot(opts?: { notOlderThan?: number }): Promise<SnapshotResult>;
  status(): Promise<GatewayStatus>;
  /** Cron warm-up: token valid for at least `tokenValidForS`, snapshot fresh. */
  warm(opts: { tokenValidForS: number }): Promise<WarmResult>;
}

/** L2: a per-location response cache (the Cache API, or a bounded memory cache). */
export interface ResponseCache {
  match(key: string): Promise<Response | undefined>;
  put(key: string, response: Response): Promise<void>;
}

/** Optional per-caller rate limit (the Workers Rate Limiting binding). true: allowed. */
export type RateLimiter = (key: string) => Promise<boolean>;

/** Everything the app needs, per isolate. Request-scoped things (waitUntil) come from the request context. */
export interface Deps {
  config: Config | ConfigError;
  gateway: SnapshotSource;
  cache: ResponseCache | undefined;
  clock: Clock;
  log: Logger;
  rateLimit: RateLimiter | undefined;
  /** Honour `x-gateway-bypass: memory,cache` (benchmarks of the lower tiers only; off in production). */
  allowTierBypass: boolean;
  /** Isolate-level plain-value memory (L1). Never holds a promise shared across requests. */
  memory: IsolateMemory;
}

/** Hits and misses per tier, as seen by one isolate (reported by /health). */
export interface TierCounters {
  /** Answers from isolate memory (L1), including those that waited for another request's fill. */
  memoryHits: number;
  /** Answers whose snapshot this request read from the Cache API (L2). */
  cacheHits: number;
  /** Calls to the gateway object (L3) for a snapshot. */
  gatewayCalls: number;
  /** Cache API reads of a snapshot body (one per fill that found an entry). */
  cacheReads: number;
  /** L1 loads: a snapshot version made ready in this isolate. */
  fills: number;
  /** Requests that waited for a fill started by another request (one transfer for all of them). */
  joined: number;
  /** Fills taken over from a request that did not finish within the deadline. */
  takeovers: number;
  staleServed: number;
  notModified: number;
}

/** A fill of L1 under way in this isolate: plain values only (never a promise shared across requests). */
export interface FillState {
  /** Sequence number of this fill. */
  seq: number;
  /** Epoch ms at which it started. */
  startedAt: number;
}

export interface IsolateMemory {
  /** The loaded snapshot (L1): immutable typed arrays over one buffer. */
  snapshot?: unknown;
  /** Epoch ms until which a background revalidation is already under way in this isolate. */
  revalidatingUntil?: number;
  /** The fill under way, if any: concurrent cold requests wait for it on their own timers. */
  fill?: FillState;
  /** Last fill sequence number handed out. */
  fillSeq: number;
  /** How the last finished fill ended: its error, for the requests that waited on it. */
  lastFill?: { seq: number; error?: ErrorInfo };
  /**
   * Whether this data centre's Cache API keeps what we put (checked by reading the entry back after a
   * put; on `*.workers.dev` it stores nothing). Unknown until the first check.
   */
  l2?: { state: "storing" | "not-storing"; checkedAt: number };
  counters: TierCounters;
}

export function newIsolateMemory(): IsolateMemory {
  return {
    fillSeq: 0,
    counters: {
      memoryHits: 0,
      cacheHits: 0,
      gatewayCalls: 0,
      cacheReads: 0,
      fills: 0,
      joined: 0,
      takeovers: 0,
      staleServed: 0,
      notModified: 0,
    },
  };
}
