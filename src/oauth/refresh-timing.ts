/**
 * When to renew an access token and when to stop handing it out. Pure functions of the token's
 * lifetime and the clock, so every rule here is unit-tested without a network.
 *
 * For the partner's 300 s token: renewed 60-90 s before it ends (so about every 3.5-4 minutes),
 * handed out until 5 s before it ends. For a 5 s token: renewed ~1-1.5 s before its end, handed
 * out until 1 s before it. No lifetime leads to a refresh loop: a background refresh never comes
 * sooner than half a lifetime (and 1 s) after the token was obtained.
 */

/** The times that matter about a token, epoch ms. */
export interface TokenTimes {
  obtainedAt: number;
  expiresAt: number;
}

/** A token together with its scheduled refresh time (computed once, since it carries jitter). */
export interface ScheduledToken extends TokenTimes {
  refreshAt: number;
}

/** Base refresh margin, as a fraction of the lifetime: long tokens get long margins. */
const REFRESH_MARGIN_FRACTION = 0.2;
/** The margin never drops below this: the refresh itself takes time (the token timeout is 5 s by default). */
const REFRESH_MARGIN_MIN_MS = 1_000;
/**
 * ...nor rises above this: a minute covers a full retry budget against a struggling endpoint
 * (see token-broker RETRY_BUDGET_MS) and is a fifth of the partner's 300 s lifetime.
 */
const REFRESH_MARGIN_MAX_MS = 60_000;
/**
 * Extra random margin, up to this fraction of the lifetime: two gateway instances (a deploy lets
 * two coexist briefly) or many restarts do not renew in lockstep.
 */
const REFRESH_JITTER_FRACTION = 0.1;
/** Cap of the random extra. */
const REFRESH_JITTER_MAX_MS = 30_000;
/**
 * A token is handed out only while this much of it remains (capped at a fifth of its lifetime,
 * so a short token is not unusable at birth): enough for one partner request (10 s timeout by
 * default, but typically well under a second) to arrive before the token dies.
 */
const SAFETY_REMAINDER_MAX_MS = 5_000;
const SAFETY_REMAINDER_FRACTION = 0.2;
/** A background refresh comes no sooner than max(this, lifetime / 2) after the token was obtained. */
const MIN_REFRESH_INTERVAL_MS = 1_000;

function lifetimeMs(t: TokenTimes): number {
  return t.expiresAt - t.obtainedAt;
}

function clamp(v: number, min: number, max: number): number {
  return Math.min(Math.max(v, min), max);
}

/**
 * How long before expiry to renew: clamp(lifetime * 0.2, 1 s, 60 s) plus a uniform extra in
 * [0, min(lifetime * 0.1, 30 s)).
 * @param random a value in [0, 1), as Math.random returns.
 */
export function refreshMarginMs(lifetime: number, random: () => number = Math.random): number {
  const base = clamp(lifetime * REFRESH_MARGIN_FRACTION, REFRESH_MARGIN_MIN_MS, REFRESH_MARGIN_MAX_MS);
  const jitterSpan = Math.max(0, Math.min(lifetime * REFRESH_JITTER_FRACTION, REFRESH_JITTER_MAX_MS));
  return base + random() * jitterSpan;
}

/** How much of a token must remain for it to be handed out: min(5 s, lifetime / 5). */
export function safetyRemainderMs(lifetime: number): number {
  return Math.min(SAFETY_REMAINDER_MAX_MS, Math.max(0, lifetime) * SAFETY_REMAINDER_FRACTION);
}

/** Shortest time between obtaining a token and renewing it in the background: max(1 s, lifetime / 2). */
export function minRefreshIntervalMs(lifetime: number): number {
  return Math.max(MIN_REFRESH_INTERVAL_MS, lifetime / 2);
}

/** The last instant (exclusive, epoch ms) at which the token may be handed out or sent. */
export function usableUntil(t: TokenTimes): number {
  return t.expiresAt - safetyRemainderMs(lifetimeMs(t));
}

/**
 * A token is handed out only while its safety remainder is left; past that it is never handed
 * out or sent, even though the endpoint would still accept it for a moment.
 */
export function isUsable(t: TokenTimes, now: number): boolean {
  return lifetimeMs(t) > 0 && now < usableUntil(t);
}

/**
 * When to renew the token (epoch ms): `expiresAt - refreshMarginMs`, but not before the minimum
 * interval since it was obtained, and never after it stops being usable (for a 1 s token the
 * minimum interval would come after that; the token being unusable then forces the refresh).
 */
export function scheduleRefresh(t: TokenTimes, random: () => number = Math.random): number {
  const life = lifetimeMs(t);
  const byMargin = t.expiresAt - refreshMarginMs(life, random);
  return Math.min(usableUntil(t), Math.max(t.obtainedAt + minRefreshIntervalMs(life), byMargin));
}

/**
 * Past its refresh time but still usable. The broker then hands out this token at once and renews
 * it in the background (no caller waits for the endpoint while a good token exists); only a token
 * that is no longer usable makes callers wait for the refresh.
 */
export function shouldRefresh(t: ScheduledToken, now: number): boolean {
  return now >= t.refreshAt && isUsable(t, now);
}
