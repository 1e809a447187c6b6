/**
 * The replicas' coordinator on Deno KV (`Deno.openKv`): a SQLite file when self-hosted, the
 * globally replicated database on Deno Deploy. Every check-and-write is one atomic operation with
 * `check`s on versionstamps (https://docs.deno.com/api/deno/~/Deno.AtomicOperation), so two
 * replicas never both win a lease and a stale holder's write fails its fence check.
 *
 * - Deno KV deletes an entry some time after its `expireIn`, not at it: a lease stores its own
 *   deadline, and one past it counts as free (taken over with a check on its versionstamp).
 * - Several processes on one SQLite file meet "database is locked" when their transactions
 *   collide: such an operation is retried (a few times, with jitter) before it counts as a failure.
 * - A value holds at most 64 KiB and one atomic operation at most 800 KiB: a record is a header
 *   (`{ gen, parts }`) and its text in parts under a new generation. A small record is one atomic
 *   operation; a larger one (a fleet of 20,000 vehicles is ~1.7 MB) writes its parts first, in
 *   operations of ten, and then the header (with the fence check) in the last one. Parts nobody
 *   points to (a write that lost its fence) are never read and expire with their `expireIn`.
 *   The previous generation's parts are deleted with the header.
 */
import { type Coordinator, type Lease, RecordTooLargeError } from "../gateway/coordination.ts";

/** The part of Deno KV used here (typed locally: the core type check knows no runtime). */
interface KvEntry<T> {
  key: unknown[];
  value: T | null;
  versionstamp: string | null;
}
interface KvAtomic {
  check(...checks: { key: unknown[]; versionstamp: string | null }[]): KvAtomic;
  set(key: unknown[], value: unknown, options?: { expireIn?: number }): KvAtomic;
  delete(key: unknown[]): KvAtomic;
  commit(): Promise<{ ok: boolean }>;
}
export interface KvLike {
  get<T>(key: unknown[]): Promise<KvEntry<T>>;
  getMany<T extends unknown[]>(keys: unknown[][]): Promise<{ [K in keyof T]: KvEntry<T[K]> }>;
  list<T>(selector: { prefix: unknown[] }): AsyncIterable<KvEntry<T>>;
  atomic(): KvAtomic;
  close(): void;
}

/** Key prefix: one database may serve other applications. */
const KV_KEY_PREFIX = "sharenow-gateway";
/** Characters per part: base64 and JSON text is ASCII, one byte a character, under the 64 KiB value limit. */
const PART_CHARS = 60_000;
/** Tries of one operation that meets a locked database (another process's transaction). */
const LOCKED_TRIES = 20;
/** Wait between them: up to this, with jitter. */
const LOCKED_WAIT_MS = 15;

/** Retries `fn` while SQLite says the file is locked by another process's transaction. */
async function unlocked<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= LOCKED_TRIES || !(err instanceof Error) || !/database is locked/i.test(err.message)) throw err;
      await new Promise((r) => setTimeout(r, 1 + Math.random() * LOCKED_WAIT_MS));
    }
  }
}

/** Parts per atomic operation (800 KiB per operation, with room for keys and the header). */
const PARTS_PER_OP = 10;
/** Parts of one record at most: 60 MB, far beyond any fleet; a larger record is not shared. */
const MAX_PARTS = 1_000;

interface LeaseValue {
  fence: number;
  until: number;
}
interface Header {
  gen: string;
  parts: number;
  until: number;
}

export class DenoKvCoordinator implements Coordinator {
  readonly kind = "kv" as const;
  readonly #kv: KvLike;
  #seq = 0;

  constructor(kv: KvLike) {
    this.#kv = kv;
  }

  /** Opens the database at `path` (undefined: the default one, Deno Deploy's); needs `--unstable-kv` when self-hosted. */
  static async open(path: string | undefined): Promise<DenoKvCoordinator> {
    const deno = (globalThis as { Deno?: { openKv?: (path?: string) => Promise<KvLike> } }).Deno;
    if (typeof deno?.openKv !== "function")
      throw new Error("Deno.openKv is not available (run deno with --unstable-kv)");
    return new DenoKvCoordinator(await deno.openKv(path));
  }

  tryAcquire(name: string, ttlMs: number): Promise<Lease | undefined> {
    return unlocked(() => this.#tryAcquire(name, ttlMs));
  }

  async #tryAcquire(name: string, ttlMs: number): Promise<Lease | undefined> {
    const leaseKey = [KV_KEY_PREFIX, "lease", name];
    const fenceKey = [KV_KEY_PREFIX, "fence", name];
    const [lease, fence] = await this.#kv.getMany<[LeaseValue, number]>([leaseKey, fenceKey]);
    const now = Date.now();
    if (lease.value !== null && lease.value.until > now) return undefined;
    const next = (typeof fence.value === "number" ? fence.value : 0) + 1;
    const until = now + ttlMs;
    const res = await this.#kv
      .atomic()
      .check({ key: leaseKey, versionstamp: lease.versionstamp }, { key: fenceKey, versionstamp: fence.versionstamp })
      .set(fenceKey, next)
      .set(leaseKey, { fence: next, until } satisfies LeaseValue, { expireIn: ttlMs })
      .commit();
    return res.ok ? { name, fence: next, until } : undefined;
  }

  renew(lease: Lease, ttlMs: number): Promise<boolean> {
    return unlocked(() => this.#renew(lease, ttlMs));
  }

  async #renew(lease: Lease, ttlMs: number): Promise<boolean> {
    const key = [KV_KEY_PREFIX, "lease", lease.name];
    const held = await this.#kv.get<LeaseValue>(key);
    if (held.value === null || held.value.fence !== lease.fence) return false;
    const value: LeaseValue = { fence: lease.fence, until: Date.now() + ttlMs };
    const res = await this.#kv.atomic().check(held).set(key, value, { expireIn: ttlMs }).commit();
    return res.ok;
  }

  release(lease: Lease): Promise<void> {
    return unlocked(() => this.#release(lease));
  }

  async #release(lease: Lease): Promise<void> {
    const key = [KV_KEY_PREFIX, "lease", lease.name];
    const held = await this.#kv.get<LeaseValue>(key);
    if (held.value === null || held.value.fence !== lease.fence) return;
    await this.#kv.atomic().check(held).delete(key).commit();
  }

  read(name: string): Promise<string | undefined> {
    return unlocked(() => this.#read(name));
  }

  async #read(name: string): Promise<string | undefined> {
    const header = await this.#kv.get<Header>([KV_KEY_PREFIX, "record", name]);
    const h = header.value;
    if (h === null || h.until <= Date.now()) return undefined;
    const parts: string[] = [];
    for await (const e of this.#kv.list<string>({ prefix: [KV_KEY_PREFIX, "part", name, h.gen] })) {
      if (typeof e.value !== "string") return undefined;
      parts.push(e.value);
    }
    // A newer generation replaced this one between the two reads: no record rather than a torn one.
    return parts.length === h.parts ? parts.join("") : undefined;
  }

  write(name: string, value: string, lease: Lease, ttlMs: number): Promise<boolean> {
    return unlocked(() => this.#write(name, value, lease, ttlMs));
  }

  async #write(name: string, value: string, lease: Lease, ttlMs: number): Promise<boolean> {
    const fenceKey = [KV_KEY_PREFIX, "fence", lease.name];
    const fence = await this.#kv.get<number>(fenceKey);
    if (fence.value !== lease.fence) return false;
    return this.#commitRecord(name, value, ttlMs, { key: fenceKey, versionstamp: fence.versionstamp });
  }

  put(name: string, value: string, ttlMs: number): Promise<void> {
    return unlocked(() => this.#put(name, value, ttlMs));
  }

  async #put(name: string, value: string, ttlMs: number): Promise<void> {
    await this.#commitRecord(name, value, ttlMs, undefined);
  }

  deleteIf(name: string, expected: string): Promise<boolean> {
    return unlocked(() => this.#deleteIf(name, expected));
  }

  async #deleteIf(name: string, expected: string): Promise<boolean> {
    const headerKey = [KV_KEY_PREFIX, "record", name];
    const header = await this.#kv.get<Header>(headerKey);
    if (header.value === null || (await this.#read(name)) !== expected) return false;
    const op = this.#kv.atomic().check(header).delete(headerKey);
    for (let i = 0; i < header.value.parts; i++) op.delete([KV_KEY_PREFIX, "part", name, header.value.gen, i]);
    return (await op.commit()).ok;
  }

  async close(): Promise<void> {
    this.#kv.close();
  }

  /** Header and parts in one atomic operation, guarded by `check` (the fence) and the old header's versionstamp. */
  async #commitRecord(
    name: string,
    value: string,
    ttlMs: number,
    check: { key: unknown[]; versionstamp: string | null } | undefined,
  ): Promise<boolean> {
    const parts = Math.max(1, Math.ceil(value.length / PART_CHARS));
    if (parts > MAX_PARTS) throw new RecordTooLargeError(value.length);
    const headerKey = [KV_KEY_PREFIX, "record", name];
    const old = await this.#kv.get<Header>(headerKey);
    const gen = `${Date.now().toString(36)}-${(this.#seq++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const expireIn = Math.max(1, Math.ceil(ttlMs));
    const part = (i: number) => value.slice(i * PART_CHARS, (i + 1) * PART_CHARS);
    // All parts but the last operation's, ahead of the header: unreachable until it commits.
    const inline = parts <= PARTS_PER_OP ? 0 : parts - PARTS_PER_OP;
    for (let from = 0; from < inline; from += PARTS_PER_OP) {
      const batch = this.#kv.atomic();
      for (let i = from; i < Math.min(inline, from + PARTS_PER_OP); i++) {
        batch.set([KV_KEY_PREFIX, "part", name, gen, i], part(i), { expireIn });
      }
      await batch.commit();
    }
    const op = this.#kv.atomic().check({ key: headerKey, versionstamp: old.versionstamp });
    if (check) op.check(check);
    for (let i = inline; i < parts; i++) op.set([KV_KEY_PREFIX, "part", name, gen, i], part(i), { expireIn });
    op.set(headerKey, { gen, parts, until: Date.now() + ttlMs } satisfies Header, { expireIn });
    if (old.value !== null) {
      for (let i = 0; i < old.value.parts; i++) op.delete([KV_KEY_PREFIX, "part", name, old.value.gen, i]);
    }
    const res = await op.commit();
    // Another write of this record won the race: with a fence, ours is the older one anyway.
    return res.ok;
  }
}
