/**
 * The ports' implementations that every runtime shares, on web-standard APIs only: the system
 * clock, the JSON-lines console logger and an in-memory key-value store (Deno, Bun, tests; the
 * Durable Object brings its storage instead).
 */
import type { Clock, KeyValueStore, Logger } from "../ports.ts";

export const systemClock: Clock = { now: () => Date.now() };

/** One JSON object per line: errors to console.error, warnings to console.warn, the rest to console.log. */
export const consoleLogger: Logger = {
  log(level, event, fields) {
    const line = JSON.stringify({ level, event, ...fields });
    if (level === "error") console.error(line);
    else if (level === "warn") console.warn(line);
    else console.log(line);
  },
};

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
