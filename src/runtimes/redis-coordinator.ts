/**
 * The replicas' coordinator on Redis, through Bun's built-in client (`Bun.RedisClient`). One
 * script per operation, so each check-and-write is atomic on the server (Redis runs a script
 * alone: https://redis.io/docs/latest/develop/interact/programmability/eval-intro/):
 *
 * - lease: `SET <p>:lease:<name> <fence> NX PX <ttl>`, the fence from `INCR <p>:fence:<name>`;
 * - fenced write: the record is set only while `<p>:fence:<name>` still equals the writer's fence;
 * - compare-and-delete: `DEL` only while the record is exactly the expected string.
 *
 * Expiry is Redis's own (PX), on the server's clock. The client is built with no offline queue
 * and no automatic reconnection: a command while Redis is down fails at once (the guard then runs
 * the gateway per process), and the next operation dials again, so a restarted Redis is found.
 */
import type { Coordinator, Lease } from "../gateway/coordination.ts";

/** The part of Bun's RedisClient used here (typed locally: the core type check knows no runtime). */
interface RedisClientLike {
  readonly connected: boolean;
  connect(): Promise<void>;
  send(command: string, args: string[]): Promise<unknown>;
  close(): void;
  onclose: ((error: Error) => void) | null;
}
type RedisClientCtor = new (
  url: string,
  options: { autoReconnect: boolean; enableOfflineQueue: boolean; connectionTimeout: number },
) => RedisClientLike;

/** Key prefix: one Redis may serve other applications. */
const REDIS_KEY_PREFIX = "sharenow-gateway";
const CONNECT_TIMEOUT_MS = 1_000;

const ACQUIRE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence, 'PX', ARGV[1])
return fence`;
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;
const FENCED_WRITE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1`;
const DELETE_IF = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export class RedisCoordinator implements Coordinator {
  readonly kind = "redis" as const;
  readonly #url: string;
  readonly #Client: RedisClientCtor;
  #conn: Connection | undefined;
  #closed = false;

  constructor(url: string, Client: RedisClientCtor) {
    this.#url = url;
    this.#Client = Client;
  }

  /** Bun's RedisClient, from the `Bun` global (undefined elsewhere). */
  static fromBun(url: string): RedisCoordinator | undefined {
    const Client = (globalThis as { Bun?: { RedisClient?: RedisClientCtor } }).Bun?.RedisClient;
    return Client ? new RedisCoordinator(url, Client) : undefined;
  }

  async tryAcquire(name: string, ttlMs: number): Promise<Lease | undefined> {
    const fence = Number(await this.#eval(ACQUIRE, [this.#key("lease", name), this.#key("fence", name)], [ttl(ttlMs)]));
    return fence > 0 ? { name, fence, until: Date.now() + ttlMs } : undefined;
  }

  async renew(lease: Lease, ttlMs: number): Promise<boolean> {
    return Number(await this.#eval(RENEW, [this.#key("lease", lease.name)], [String(lease.fence), ttl(ttlMs)])) === 1;
  }

  async release(lease: Lease): Promise<void> {
    await this.#eval(RELEASE, [this.#key("lease", lease.name)], [String(lease.fence)]);
  }

  async read(name: string): Promise<string | undefined> {
    const v = await this.#send("GET", [this.#key("record", name)]);
    return typeof v === "string" ? v : undefined;
  }

  async write(name: string, value: string, lease: Lease, ttlMs: number): Promise<boolean> {
    const keys = [this.#key("fence", lease.name), this.#key("record", name)];
    return Number(await this.#eval(FENCED_WRITE, keys, [String(lease.fence), value, ttl(ttlMs)])) === 1;
  }

  async put(name: string, value: string, ttlMs: number): Promise<void> {
    await this.#send("SET", [this.#key("record", name), value, "PX", ttl(ttlMs)]);
  }

  async deleteIf(name: string, expected: string): Promise<boolean> {
    return Number(await this.#eval(DELETE_IF, [this.#key("record", name)], [expected])) === 1;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const conn = this.#conn;
    this.#conn = undefined;
    conn?.client.close();
  }

  #key(kind: "lease" | "fence" | "record", name: string): string {
    return `${REDIS_KEY_PREFIX}:${kind}:${name}`;
  }

  #eval(script: string, keys: string[], args: string[]): Promise<unknown> {
    return this.#send("EVAL", [script, String(keys.length), ...keys, ...args]);
  }

  async #send(command: string, args: string[]): Promise<unknown> {
    const conn = await this.#connected();
    try {
      return await conn.client.send(command, args);
    } catch (err) {
      // A dead connection is dropped; the next operation dials again.
      if (!conn.client.connected) this.#drop(conn);
      throw err;
    }
  }

  async #connected(): Promise<Connection> {
    if (this.#closed) throw new Error("coordinator closed");
    let conn = this.#conn;
    if (conn === undefined) {
      const client = new this.#Client(this.#url, {
        autoReconnect: false,
        enableOfflineQueue: false,
        connectionTimeout: CONNECT_TIMEOUT_MS,
      });
      const fresh: Connection = { client, ready: client.connect() };
      conn = fresh;
      this.#conn = fresh;
      client.onclose = () => this.#drop(fresh);
      fresh.ready.catch(() => this.#drop(fresh));
    }
    await conn.ready;
    return conn;
  }

  #drop(conn: Connection): void {
    if (conn.dropped) return;
    conn.dropped = true;
    if (this.#conn === conn) this.#conn = undefined;
    try {
      conn.client.close();
    } catch {
      // Already closed.
    }
  }
}

interface Connection {
  client: RedisClientLike;
  ready: Promise<void>;
  dropped?: boolean;
}

/** Redis takes whole milliseconds, at least 1. */
function ttl(ms: number): string {
  return String(Math.max(1, Math.ceil(ms)));
}
