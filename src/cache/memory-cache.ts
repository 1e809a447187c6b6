import type { ResponseCache } from "../ports.ts";

interface Entry {
  body: ArrayBuffer;
  status: number;
  headers: [string, string][];
}

/**
 * A bounded in-memory ResponseCache (least recently used out first), for runtimes without the
 * Cache API. Freshness is not its business: the gateway stamps its own on every entry.
 */
export class MemoryResponseCache implements ResponseCache {
  readonly #entries = new Map<string, Entry>();
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(opts: { maxEntries?: number; maxBytes?: number } = {}) {
    this.#maxEntries = opts.maxEntries ?? 64;
    this.#maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
  }

  async match(key: string): Promise<Response | undefined> {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    // Re-insert: Map keeps insertion order, so the first key is the least recently used.
    this.#entries.delete(key);
    this.#entries.set(key, e);
    return new Response(e.body.slice(0), { status: e.status, headers: e.headers });
  }

  async put(key: string, response: Response): Promise<void> {
    const body = await response.arrayBuffer();
    if (body.byteLength > this.#maxBytes) return;
    this.#delete(key);
    this.#entries.set(key, { body, status: response.status, headers: [...response.headers] });
    this.#bytes += body.byteLength;
    while (this.#entries.size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#delete(oldest);
    }
  }

  #delete(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    this.#bytes -= e.body.byteLength;
    this.#entries.delete(key);
  }
}
