/**
 * Ports: everything the core needs from the platform comes in through these interfaces, so the
 * same core runs in a Worker, a Durable Object, Deno and Bun. Nothing here imports a runtime; the
 * shared implementations are in src/runtimes/standard-ports.ts, the data they carry in
 * src/gateway/types.ts and src/vehicles/isolate-memory.ts.
 */
import type { Config, ConfigError } from "./config.ts";
import type { AccessToken, GatewayStatus, SnapshotResult, TokenStatus, WarmResult } from "./gateway/types.ts";
import type { IsolateMemory } from "./vehicles/isolate-memory.ts";

/** Milliseconds since the epoch. Injected: in Workers `Date.now()` only advances across I/O. */
export interface Clock {
  now(): number;
}

export type LogLevel = "debug" | "info" | "warn" | "error";
/** Structured logs: one JSON object per line. Fields must never hold a token or secret. */
export interface Logger {
  log(level: LogLevel, event: string, fields?: Record<string, unknown>): void;
}

/** A small durable key-value store: Durable Object storage, or memory. Values are structured-cloneable. */
export interface KeyValueStore {
  get<T>(key: string): Promise<T | undefined>;
  put<T>(key: string, value: T): Promise<void>;
  delete(key: string): Promise<void>;
  /** Resolves once every write so far is durable (Durable Object storage's `sync()`); absent: already so. */
  sync?(): Promise<void>;
}

/** The fetch function; injected so tests and runtimes can supply their own. */
export type FetchFn = (input: Request | string | URL, init?: RequestInit) => Promise<Response>;

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
type RateLimiter = (key: string) => Promise<boolean>;

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
