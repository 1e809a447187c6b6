/**
 * Isolate memory (L1) of the tiers (tiers.ts): the loaded snapshot, the fill under way, L2's
 * known state and the per-tier counters /health reports. Plain values only: never a promise
 * shared across requests.
 */
import type { ErrorInfo } from "../errors.ts";

/** Hits and misses per tier, as seen by one isolate (reported by /health). */
export interface TierCounters {
  /** Answers from isolate memory (L1), including those that waited for another request's fill. */
  memoryHits: number;
  /** Answers whose snapshot this request read from the Cache API (L2). */
  cacheHits: number;
  /** Answers passed through from the response cache (rendered answers in L2; their bodies never read). */
  responseHits: number;
  /** Rendered answers written to the response cache. */
  responsePuts: number;
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

/**
 * The response cache as this isolate knows it (tiers.ts). Plain values only: the lookup under way
 * is a flag, never its promise.
 */
interface ResponseCacheState {
  /** A lookup is under way while nothing here is known to hit: other cold requests wait for its outcome. */
  probing: boolean;
  /** Epoch ms until which lookups are known to hit (a hit's snapshot is fresh until then): no waiting. */
  hitsUntil: number;
  /** Keys being written, with the epoch ms each write started (a few at most): one write per key at a time. */
  putting: Map<string, number>;
}

/** A fill of L1 under way in this isolate: plain values only (never a promise shared across requests). */
interface FillState {
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
  fill?: FillState | undefined;
  /** Last fill sequence number handed out. */
  fillSeq: number;
  /** How the last finished fill ended: its error, for the requests that waited on it. */
  lastFill?: { seq: number; error?: ErrorInfo };
  /**
   * Whether this data centre's Cache API keeps what we put (checked by reading the entry back after a
   * put; on `*.workers.dev` it stores nothing). Unknown until the first check.
   */
  l2?: { state: "storing" | "not-storing"; checkedAt: number };
  /**
   * The validator of a snapshot found damaged while it was served (an item boundary, checked a
   * block at a time): an L2 entry of it is not read again, so the refill comes from the object.
   */
  damagedEtag?: string;
  responses: ResponseCacheState;
  counters: TierCounters;
}

export function newIsolateMemory(): IsolateMemory {
  return {
    fillSeq: 0,
    responses: { probing: false, hitsUntil: 0, putting: new Map() },
    counters: {
      memoryHits: 0,
      cacheHits: 0,
      responseHits: 0,
      responsePuts: 0,
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
