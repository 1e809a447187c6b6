/**
 * How old a snapshot may be, in one place for every tier and every runtime: fresh within the TTL,
 * then stale (still served: stale-while-revalidate, stale-if-error; RFC 5861) for the stale window,
 * then expired. Ages come from the snapshot's own `fetchedAt` (epoch ms, when the partner answered),
 * so isolate memory, the Cache API, the feed and the gateway object judge a copy the same way.
 *
 * Pure arithmetic: no clock of its own (callers pass `now`), no runtime import.
 */
import type { Config } from "../config.ts";

/** A snapshot's TTL and the stale window past it, in ms. */
export interface FreshnessWindow {
  /** Fresh for this long after the partner answered. */
  ttlMs: number;
  /** Past the TTL, served for this long more. */
  staleMs: number;
}

type Freshness = "fresh" | "stale" | "expired";

/** The window the configuration sets (VEHICLES_TTL_S, VEHICLES_STALE_S). */
export function freshnessWindow(config: Pick<Config, "vehiclesTtlS" | "vehiclesStaleS">): FreshnessWindow {
  return { ttlMs: config.vehiclesTtlS * 1000, staleMs: config.vehiclesStaleS * 1000 };
}

/** Fresh, stale (still servable) or expired, `now`. */
function freshness(fetchedAt: number, now: number, w: FreshnessWindow): Freshness {
  const age = now - fetchedAt;
  if (age < w.ttlMs) return "fresh";
  return age < w.ttlMs + w.staleMs ? "stale" : "expired";
}

/** Within the TTL. */
export function isFresh(fetchedAt: number, now: number, w: FreshnessWindow): boolean {
  return freshness(fetchedAt, now, w) === "fresh";
}

/** Within the TTL or the stale window after it: may be served. */
export function isServable(fetchedAt: number, now: number, w: FreshnessWindow): boolean {
  return freshness(fetchedAt, now, w) !== "expired";
}

/** How long a copy is worth keeping at all: the TTL plus the stale window (ms). */
export function keepMs(w: FreshnessWindow): number {
  return w.ttlMs + w.staleMs;
}

/** Age in whole seconds, never negative (the Age header, /health). */
export function ageS(fetchedAt: number, now: number): number {
  return Math.max(0, Math.floor((now - fetchedAt) / 1000));
}

/** Seconds of the TTL left (negative once past it); callers round (Cache-Status) or floor (max-age). */
export function ttlLeftS(fetchedAt: number, now: number, w: Pick<FreshnessWindow, "ttlMs">): number {
  return (fetchedAt + w.ttlMs - now) / 1000;
}

/** The oldest `fetchedAt` still fresh at `now` (a caller that wants fresh data or waits for the refresh). */
export function freshNotOlderThan(now: number, w: Pick<FreshnessWindow, "ttlMs">): number {
  return now - w.ttlMs + 1;
}

/** The oldest `fetchedAt` a warm-up accepts: half a TTL ago, so the next tick's readers still find it fresh. */
export function warmNotOlderThan(now: number, w: Pick<FreshnessWindow, "ttlMs">): number {
  return now - w.ttlMs / 2;
}
