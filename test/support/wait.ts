/**
 * Bounded waits for a state, for every kind of test: inside workerd (project "workers"), in Node
 * (projects "unit" and "runtimes") and the browser tests. No node: or cloudflare: imports.
 *
 * Time is read from performance.now(), which no test mocks (advanceClock in harness.ts moves
 * Date.now), so a bound is always one of real time.
 */

/**
 * Polls `read` (every `everyMs`) until `done` holds of what it returned, and returns that; throws
 * naming `what` and the last value after `timeoutMs`. Wait for states, never guessed sleeps.
 */
export async function until<T, U extends T>(
  what: string,
  read: () => T | Promise<T>,
  done: (v: T) => v is U,
  timeoutMs?: number,
  everyMs?: number,
): Promise<U>;
export async function until<T>(
  what: string,
  read: () => T | Promise<T>,
  done: (v: T) => boolean,
  timeoutMs?: number,
  everyMs?: number,
): Promise<T>;
export async function until<T>(
  what: string,
  read: () => T | Promise<T>,
  done: (v: T) => boolean,
  timeoutMs = 20_000,
  everyMs = 100,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (done(v)) return v;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** For `until`: the value is there (narrows `T | undefined` to `T`). */
export function isDefined<T>(v: T | undefined): v is T {
  return v !== undefined;
}

/** Polls `check` (every `everyMs`, 10 by default) until it returns true; throws naming `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
  everyMs = 10,
): Promise<void> {
  await until(what, check, (ok) => ok, timeoutMs, everyMs);
}
