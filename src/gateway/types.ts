/**
 * The gateway's plain data: the token it holds, and what it answers (a snapshot, its status, a
 * warm-up's result). Structured-cloneable: these cross a Durable Object RPC boundary, the feed and
 * the Cache API.
 */
import type { ErrorCode, ErrorInfo } from "../errors.ts";

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

/** The gateway object's counters (its /health status). */
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

/** Which shared store the replicas use (src/gateway/coordination.ts). */
export type StoreKind = "memory" | "kv" | "redis";

/** The shared store, for /health. */
export interface StoreStatus {
  kind: StoreKind;
  state: "ok" | "unavailable";
  /** Epoch ms since when the store has been unreachable (this episode). */
  since: number | undefined;
  /** Operations that failed, since this process started. */
  failures: number;
}
