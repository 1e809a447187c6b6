/**
 * When the token alarm fires, for every runtime: the Durable Object's alarm on Workers, a timer in
 * a Deno or Bun process (src/runtimes/server.ts). One alarm is kept, at the token's refresh time
 * (earlier wins); it is re-armed after every snapshot call and warm-up and after each firing, and
 * firing is idempotent (`Gateway.refreshTokenIfDue` refreshes only a token that is due).
 *
 * Pure arithmetic: callers pass `now` and set their own alarm or timer.
 */

/** An alarm never fires sooner than this after being set: no hot loop, whatever the token says. */
const MIN_ALARM_DELAY_MS = 1_000;
/**
 * With no token to keep, a process looks again after this. A Durable Object sets no alarm then:
 * nobody needs one, an idle object should stay asleep, and its next call re-arms it.
 */
export const IDLE_ALARM_MS = 30_000;

/**
 * When the alarm should fire: at `due` (the token's refresh time; undefined: no token), else
 * `idleMs` from now if given (else no alarm, undefined), never sooner than MIN_ALARM_DELAY_MS from now.
 */
export function alarmTime(due: number | undefined, now: number, idleMs: number): number;
export function alarmTime(due: number | undefined, now: number): number | undefined;
export function alarmTime(due: number | undefined, now: number, idleMs?: number): number | undefined {
  const at = due ?? (idleMs === undefined ? undefined : now + idleMs);
  return at === undefined ? undefined : Math.max(at, now + MIN_ALARM_DELAY_MS);
}

/**
 * Whether an alarm set for `current` (undefined: none) gives way to one at `at`: always after a
 * firing (`force`), else when none is set or the new one is earlier.
 */
export function shouldSetAlarm(current: number | undefined, at: number, force: boolean): boolean {
  return force || current === undefined || current > at;
}
