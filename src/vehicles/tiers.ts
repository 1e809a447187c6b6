/**
 * The tiers a vehicles request falls through (DESIGN.md): L1 isolate memory, L2 the Cache API
 * of this data centre, L3 the gateway object. Freshness comes from the snapshot's own
 * `fetchedAt`, so every tier judges it the same way.
 *
 * One transfer per isolate per snapshot: concurrent cold requests of an isolate join ONE fill (one
 * L2 read or one object call, one load of the prepared snapshot). They are joined through plain
 * state (`memory.fill`, `memory.lastFill`) and each waiter's own timers, never through a shared
 * promise, stream or Response: a Worker cancels I/O that another request started when that
 * request ends (DESIGN.md, "Joining concurrent cold requests"). The fill itself runs under the
 * filler's `waitUntil`, so a client that hangs up does not strand the others; a fill that does not
 * finish within FILL_DEADLINE_MS is taken over by a waiter.
 *
 * In front of the fill, the response cache (DESIGN.md): rendered answers in L2, looked up only
 * when L1 has no fresh snapshot and no fill is running, and passed through unread. One lookup at a
 * time while nothing is known to hit (a cold stampede makes one lookup, then joins one fill).
 */

import {
  type ResponseBody,
  type ResponseMeta,
  responseEntry,
  responseKeyPrefix,
  responseMeta,
} from "../cache/response-entry.ts";
import {
  type EntryMeta,
  entryMeta,
  envelopeToResponse,
  readEnvelope,
  snapshotCacheKey,
} from "../cache/snapshot-entry.ts";
import type { Config } from "../config.ts";
import { AppError, type ErrorInfo, toErrorInfo } from "../errors.ts";
import {
  ageS,
  freshnessWindow,
  isFresh,
  isServable,
  keepMs,
  ttlLeftS,
  warmNotOlderThan,
} from "../gateway/freshness.ts";
import type { SnapshotEnvelope } from "../gateway/types.ts";
import { fnv1aHex } from "../hash.ts";
import type { Deps, ResponseCache } from "../ports.ts";
import {
  cacheForward,
  cacheHit,
  cacheStatus,
  MEMORY_COLLAPSED,
  memoryForward,
  memoryHit,
  memoryPassed,
  OBJECT_FETCHED,
  objectStale,
  responseHit,
} from "./cache-status.ts";
import { loadPrepared, PREPARED_FORMAT, type Prepared } from "./prepared.ts";
import { VEHICLE_FIELDS } from "./schema.ts";

type Tier = "memory" | "cache" | "gateway";

export interface Served {
  /** The loaded snapshot: filters, pages and single vehicles are answered from it. */
  snapshot: Prepared;
  tier: Tier;
  stale: boolean;
  /** RFC 9211 Cache-Status: the first member is nearest the origin, the last nearest the client. */
  cacheStatus: string;
  ageS: number;
  /** Why a stale copy is served although a refresh was tried (stale-if-error). */
  error?: ErrorInfo;
  /** Time this request waited for the gateway object (L3), for the request log. */
  gatewayMs?: number;
  /** The response cache key to store this answer under once rendered (`storeAnswer`): it was looked up, missed, and is fresh. */
  storeAs?: string;
}

/** A rendered answer from the response cache: the stored Response, its body not read (passed through). */
export interface CachedAnswer {
  tier: "response";
  response: Response;
  meta: ResponseMeta;
  /** Only fresh answers are stored and served. */
  stale: false;
  cacheStatus: string;
  ageS: number;
}

/** At most one background revalidation per isolate in this window. */
const REVALIDATE_GUARD_MS = 5_000;
/**
 * A fill not finished after this long is taken over by a waiter. Longer than one object call
 * normally takes (token 5 s + partner 10 s at the very worst are the object's business: the object
 * joins a second caller to its own in-flight fetch, so a takeover never costs the partner a call).
 */
export const FILL_DEADLINE_MS = 10_000;
/** Waiters poll isolate memory at these intervals (ms): quick at first, then every 25 ms. */
const POLL_MS = [1, 2, 4, 8, 16, 25] as const;
/**
 * A response cache lookup not finished after this long no longer holds the others back (its
 * request may have been cancelled): each then looks up for itself. A lookup takes milliseconds.
 */
export const PROBE_DEADLINE_MS = 1_000;
/** The most rendered answers an isolate writes at once. */
const MAX_PUTS_IN_FLIGHT = 4;
/** A write older than this no longer counts as in flight (`waitUntil` may have been cut short). */
const PUT_FORGET_MS = 30_000;

/** Tiers a request skips (benchmarks and tests only): `cache` both kinds of L2 entry, `responses` rendered answers only. */
export interface Bypass {
  memory?: boolean;
  cache?: boolean;
  responses?: boolean;
}

export interface TierContext {
  deps: Deps;
  config: Config;
  waitUntil: (p: Promise<unknown>) => void;
  /** Skip tiers (benchmarks and tests of the lower tiers). */
  bypass?: Bypass;
  /** What the request renders (route and canonical query, or the VIN): its response cache key. Absent: none. */
  view?: string;
  /** Sleeps on this request's own timers (injected: tests may count or shorten waits). */
  sleep?: (ms: number) => Promise<void>;
}

/** A short tag of the allow-list (field names in served order) and the prepared format. */
export function allowListVersion(fields: readonly string[] = VEHICLE_FIELDS, format = PREPARED_FORMAT): string {
  return fnv1aHex(`${format}:${fields.join(",")}`);
}

const ALLOW_LIST_VERSION = allowListVersion();

/**
 * The L2 key for this configuration: the normalized upstream request, never the client's query.
 * It carries the allow-list version and the prepared format: an entry written by a deploy with
 * another allow-list (one that still had `fuelCardPin`, say) or another layout is never read.
 * What is read is then checked by `loadPrepared` (layout, checksum, every item boundary).
 */
export function tierCacheKey(config: Config, version: string = ALLOW_LIST_VERSION): string {
  return snapshotCacheKey(config.apiUrl, fnv1aHex(config.clientId), version);
}

/** The response key prefix per configuration (this deploy's version): built once, not per lookup. */
const responsePrefixes = new WeakMap<Config, string>();

/**
 * The response cache key of a view: the snapshot key's versioned prefix (an entry of another
 * allow-list, format or partner is never read) under another path, and the view.
 */
export function responseCacheKey(config: Config, view: string, version: string = ALLOW_LIST_VERSION): string {
  const mine = version === ALLOW_LIST_VERSION;
  let prefix = mine ? responsePrefixes.get(config) : undefined;
  if (prefix === undefined) {
    prefix = responseKeyPrefix(tierCacheKey(config, version));
    if (mine) responsePrefixes.set(config, prefix);
  }
  return prefix + encodeURIComponent(view);
}

/** What L1 holds: the loaded snapshot (plain typed arrays; no promise). */
interface MemoryEntry {
  snapshot: Prepared;
}

function current(deps: Deps): MemoryEntry | undefined {
  return deps.memory.snapshot as MemoryEntry | undefined;
}

/** Keeps the newer of L1 and `p`. */
function remember(deps: Deps, p: Prepared): void {
  const cur = current(deps);
  if (!cur || cur.snapshot.fetchedAt <= p.fetchedAt) deps.memory.snapshot = { snapshot: p } satisfies MemoryEntry;
}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The newest answer the tiers can give: a rendered one from the response cache, or a snapshot to
 * render it from; an AppError when there is nothing to serve.
 */
export async function loadTiers(t: TierContext): Promise<Served | CachedAnswer> {
  const { deps } = t;
  const sleep = t.sleep ?? defaultSleep;

  if (t.bypass?.memory) {
    // Untracked like its fill: it neither waits for another lookup nor makes others wait.
    const answers = responseTier(t);
    const hit = answers && (await fromResponses(t, answers, "bypass"));
    return hit ?? toStore(await fill(t, undefined), answers);
  }
  // The hot path first: a fresh L1 answers before the response cache key is even built.
  const fresh = fromMemory(t, false, false);
  if (fresh) return fresh;

  const answers = responseTier(t);
  // Fills numbered above this one started after this request began: ones it waits for, even while
  // it waits for another request's lookup and never sees them running.
  const began = deps.memory.fillSeq;
  // Whether this request has looked up its answer (or has none to look up), and missed it.
  let looked = answers === undefined;
  let missed = false;
  let waitedMs = 0;
  let probeWaitedMs = 0;
  let waitedOn: number | undefined;
  let poll = 0;
  for (;;) {
    const state = deps.memory;
    const running = state.fill;
    const ended = state.lastFill;
    // The last fill to end is one this request waited for: it saw it running, or it started while
    // this request waited for another request's lookup.
    const endedOurs = ended !== undefined && (ended.seq === waitedOn || ended.seq > began);
    // Looked up before a stale L1 is served, never while a fill runs (its waiters are served from L1).
    const lookUp = answers !== undefined && !looked && !running;
    const hit = fromMemory(t, waitedOn !== undefined || endedOurs, !lookUp);
    if (hit) return missed ? toStore(hit, answers) : hit;
    // It ended without a servable snapshot: its answer is ours too (one object call for the
    // burst, even when it fails).
    if (endedOurs && ended.error) throw AppError.fromInfo(ended.error);
    if (lookUp) {
      const step = nextLookup(t, probeWaitedMs);
      if (step === "wait") {
        const ms = POLL_MS[Math.min(poll++, POLL_MS.length - 1)] as number;
        await sleep(ms);
        probeWaitedMs += ms;
        continue;
      }
      looked = true;
      if (step === "look") {
        const found = await probe(t, answers);
        if (found) return found;
        missed = true;
      }
      continue;
    }
    if (running && running.seq !== waitedOn) {
      // A fill we have not waited for yet (the first, or one that took over): its own deadline.
      waitedMs = 0;
      poll = 0;
    }
    if (!running || waitedMs >= FILL_DEADLINE_MS) {
      if (running) state.counters.takeovers++;
      return missed ? toStore(await fill(t, undefined), answers) : fill(t, undefined);
    }
    // Another request of this isolate is filling: wait for it on our own timers.
    waitedOn = running.seq;
    const ms = POLL_MS[Math.min(poll++, POLL_MS.length - 1)] as number;
    await sleep(ms);
    waitedMs += ms;
  }
}

/**
 * L1: this isolate's loaded snapshot when fresh, or (with `staleToo`) when stale within the window
 * (served at once while one refresh runs behind it); undefined when there is none worth serving.
 * `joined`: this request waited for another request's fill.
 */
function fromMemory(t: TierContext, joined: boolean, staleToo: boolean): Served | undefined {
  const { deps } = t;
  const window = freshnessWindow(t.config);
  const mem = current(deps);
  if (mem && isFresh(mem.snapshot.fetchedAt, deps.clock.now(), window)) {
    if (joined) {
      deps.memory.counters.joined++;
      return served(t, mem.snapshot, "memory", false, MEMORY_COLLAPSED);
    }
    return served(t, mem.snapshot, "memory", false, memoryHit(ttlLeft(t, mem.snapshot.fetchedAt)));
  }
  if (staleToo && mem && isServable(mem.snapshot.fetchedAt, deps.clock.now(), window)) {
    // Stale-while-revalidate: serve the stale copy now and refresh behind it, once per isolate.
    revalidate(t, mem.snapshot);
    return served(t, mem.snapshot, "memory", true, memoryHit(ttlLeft(t, mem.snapshot.fetchedAt)));
  }
  return undefined;
}

function ttlLeft(t: TierContext, fetchedAt: number): number {
  return Math.round(ttlLeftS(fetchedAt, t.deps.clock.now(), freshnessWindow(t.config)));
}

function served(t: TierContext, p: Prepared, tier: Tier, stale: boolean, cacheStatus: string): Served {
  return {
    snapshot: p,
    tier,
    stale,
    cacheStatus,
    ageS: ageS(p.fetchedAt, t.deps.clock.now()),
  };
}

/** Starts one background refresh per isolate per guard window (stale-while-revalidate). */
function revalidate(t: TierContext, stale: Prepared): void {
  const { deps } = t;
  const now = deps.clock.now();
  if ((deps.memory.revalidatingUntil ?? 0) > now || deps.memory.fill) return;
  deps.memory.revalidatingUntil = now + REVALIDATE_GUARD_MS;
  t.waitUntil(
    fill(t, stale.fetchedAt + 1).then(
      (r) => {
        // Only a fresh snapshot ends the window early. A failed refresh (an error, or the
        // object's own stale copy) keeps it: a failing partner then costs one refresh per
        // isolate per window, not one per request.
        if (!r.stale) deps.memory.revalidatingUntil = 0;
      },
      (err: unknown) => deps.log.log("warn", "revalidate_failed", { code: toErrorInfo(err).code }),
    ),
  );
}

/** The response cache as a request looks it up. */
interface ResponseTier {
  cache: ResponseCache;
  key: string;
}

/** Undefined: nothing to look up (no view, no Cache API, skipped, or L2 known to store nothing). */
function responseTier(t: TierContext): ResponseTier | undefined {
  const { deps } = t;
  if (t.view === undefined || !deps.cache || t.bypass?.cache || t.bypass?.responses || l2Dead(deps)) return undefined;
  return { cache: deps.cache, key: responseCacheKey(t.config, t.view) };
}

/**
 * Before a fill: look up this request's answer; or, while another request's lookup is under way
 * and nothing here is known to hit, wait for its outcome (a hit: then look up too; a miss: it
 * starts the fill, which this request joins), or skip the lookup when a stale L1 can answer at
 * once. A lookup that has not ended within PROBE_DEADLINE_MS holds nobody back.
 */
function nextLookup(t: TierContext, probeWaitedMs: number): "look" | "wait" | "skip" {
  const rc = t.deps.memory.responses;
  if (!rc.probing || rc.hitsUntil > t.deps.clock.now()) return "look";
  if (current(t.deps)) return "skip";
  return probeWaitedMs < PROBE_DEADLINE_MS ? "wait" : "look";
}

/**
 * One lookup from the fill's side of the loop. While nothing here is known to hit it is a probe:
 * other cold requests wait for its outcome instead of each looking up. The flag is cleared in the
 * same turn in which, on a miss, the caller starts the fill, so a waiter sees one or the other.
 */
async function probe(t: TierContext, r: ResponseTier): Promise<CachedAnswer | undefined> {
  const rc = t.deps.memory.responses;
  const probing = rc.hitsUntil <= t.deps.clock.now();
  if (probing) rc.probing = true;
  try {
    // A snapshot still in L1 here is stale (a fresh one would have answered).
    return await fromResponses(t, r, current(t.deps) ? "stale" : "miss");
  } finally {
    if (probing) rc.probing = false;
  }
}

/**
 * The response cache: this request's rendered answer, if a request of this data centre stored it,
 * it is fresh, and it is not older than L1's snapshot (skipped or not: this isolate never answers
 * older than what it holds). Its body is not read here; the route passes it through. Undefined:
 * render the answer from a snapshot.
 */
async function fromResponses(
  t: TierContext,
  r: ResponseTier,
  l1: "bypass" | "miss" | "stale",
): Promise<CachedAnswer | undefined> {
  const { deps } = t;
  const hit = await r.cache.match(r.key).catch((err: unknown) => {
    deps.log.log("warn", "cache_match_failed", { error: String(err) });
    return undefined;
  });
  if (!hit) return undefined;
  const meta = responseMeta(hit);
  const now = deps.clock.now();
  const window = freshnessWindow(t.config);
  const floor = current(deps)?.snapshot;
  if (!meta || !isFresh(meta.fetchedAt, now, window) || (floor && olderThan(meta, floor))) {
    await hit.body?.cancel();
    return undefined;
  }
  const rc = deps.memory.responses;
  rc.hitsUntil = Math.max(rc.hitsUntil, meta.fetchedAt + window.ttlMs);
  deps.memory.counters.responseHits++;
  return {
    tier: "response",
    response: hit,
    meta,
    stale: false,
    cacheStatus: cacheStatus(responseHit(ttlLeft(t, meta.fetchedAt)), memoryPassed(l1)),
    ageS: ageS(meta.fetchedAt, now),
  };
}

/** Rendered from an older snapshot than `p`, or from another one fetched at the same instant. */
function olderThan(meta: ResponseMeta, p: Prepared): boolean {
  return meta.fetchedAt < p.fetchedAt || (meta.fetchedAt === p.fetchedAt && meta.snapshotEtag !== p.etag);
}

/** After a response cache miss: a fresh answer is to be stored once rendered (never a stale one). */
function toStore(s: Served, r: ResponseTier | undefined): Served {
  if (r && !s.stale) s.storeAs = r.key;
  return s;
}

/**
 * Writes a rendered answer to the response cache behind the response (`waitUntil`): one write per
 * key at a time, MAX_PUTS_IN_FLIGHT at most, none where L2 is known to store nothing. `body` is
 * called again, only if the write goes ahead: a kept page's Blob is the same one, anything else is
 * rendered anew (a body stream cannot be both sent and stored). Never rejects.
 */
export function storeAnswer(t: TierContext, key: string, meta: ResponseMeta, body: () => ResponseBody): void {
  const { deps } = t;
  const cache = deps.cache;
  const now = deps.clock.now();
  const keepS = ttlLeftS(meta.fetchedAt, now, freshnessWindow(t.config));
  const { putting } = deps.memory.responses;
  for (const [k, at] of putting) if (now - at > PUT_FORGET_MS) putting.delete(k);
  if (!cache || keepS <= 0 || l2Dead(deps) || putting.has(key) || putting.size >= MAX_PUTS_IN_FLIGHT) return;
  putting.set(key, now);
  t.waitUntil(
    cache
      .put(key, responseEntry(body(), meta, keepS))
      .then(
        () => {
          deps.memory.counters.responsePuts++;
        },
        (err: unknown) => deps.log.log("warn", "cache_put_failed", { error: String(err) }),
      )
      .finally(() => {
        if (putting.get(key) === now) putting.delete(key);
      }),
  );
}

/**
 * One fill of L1: L2 if it holds a fresh copy (or, with nothing better, a servable stale one),
 * else the gateway object (then L2 is written behind the response). Marks `memory.fill` so that
 * concurrent requests wait for it, and records how it ended in `memory.lastFill`. Runs under
 * `waitUntil`: a client hanging up does not cancel the fill the others wait for.
 */
function fill(t: TierContext, notOlderThan: number | undefined): Promise<Served> {
  const { deps } = t;
  const state = deps.memory;
  const track = !t.bypass?.memory;
  const seq = ++state.fillSeq;
  if (track) state.fill = { seq, startedAt: deps.clock.now() };
  const work = fillOnce(t, notOlderThan).then(
    (r) => {
      if (track) {
        if (state.fill?.seq === seq) state.fill = undefined;
        state.lastFill = { seq };
      }
      // A stale copy from L2 (nothing better there): refresh behind it (stale-while-revalidate).
      if (r.stale && r.tier === "cache") revalidate(t, r.snapshot);
      return r;
    },
    (err: unknown) => {
      if (track) {
        if (state.fill?.seq === seq) state.fill = undefined;
        state.lastFill = { seq, error: toErrorInfo(err) };
      }
      throw err;
    },
  );
  // Keeps the fill alive past this request's response (the waiters need it), never shared as a promise.
  t.waitUntil(work.catch(() => {}));
  return work;
}

async function fillOnce(t: TierContext, notOlderThan: number | undefined): Promise<Served> {
  const mem = t.bypass?.memory ? undefined : current(t.deps);
  const l2 = cacheTier(t);
  return (await fromCache(t, l2, notOlderThan, mem)) ?? fromGateway(t, l2, notOlderThan, mem);
}

/** L2 as a fill finds it. */
interface CacheTier {
  /** Undefined: none, or skipped (`x-gateway-bypass`). */
  cache: ResponseCache | undefined;
  key: string;
  /** What the last check of this isolate found (undefined: not checked yet). */
  state: "storing" | "not-storing" | undefined;
  /** Known to store nothing (checked within L2_RECHECK_MS): neither read nor written. */
  dead: boolean;
}

function cacheTier(t: TierContext): CacheTier {
  const { deps } = t;
  const cache = t.bypass?.cache ? undefined : deps.cache;
  return { cache, key: tierCacheKey(t.config), state: deps.memory.l2?.state, dead: l2Dead(deps) };
}

/** L2 is known to store nothing (checked within L2_RECHECK_MS): neither read nor written. */
function l2Dead(deps: Deps): boolean {
  const l2 = deps.memory.l2;
  return l2?.state === "not-storing" && deps.clock.now() - l2.checkedAt < L2_RECHECK_MS;
}

/**
 * L2: this data centre's Cache API (another isolate may have filled it). Its copy, if newer than
 * L1's and recent enough: served when fresh; when stale within the window, served too (nothing
 * better here) while a refresh runs behind it. Undefined: go on to the gateway object.
 */
async function fromCache(
  t: TierContext,
  l2: CacheTier,
  notOlderThan: number | undefined,
  mem: MemoryEntry | undefined,
): Promise<Served | undefined> {
  const { deps } = t;
  const window = freshnessWindow(t.config);
  // Not read where it is known to store nothing (a workers.dev deployment): that read could only miss.
  if (!l2.cache || l2.dead) return undefined;
  const hit = await l2.cache.match(l2.key).catch((err: unknown) => {
    deps.log.log("warn", "cache_match_failed", { error: String(err) });
    return undefined;
  });
  const meta = hit ? entryMeta(hit) : undefined;
  const now = deps.clock.now();
  if (meta !== undefined && meta.etag === deps.memory.damagedEtag) {
    deps.log.log("warn", "cache_entry_invalid", { code: "internal", detail: "found damaged while served" });
  }
  const useful =
    meta !== undefined &&
    meta.etag !== deps.memory.damagedEtag &&
    isServable(meta.fetchedAt, now, window) &&
    (notOlderThan === undefined || meta.fetchedAt >= notOlderThan) &&
    (!mem || meta.fetchedAt > mem.snapshot.fetchedAt);
  if (!hit || !meta || !useful) {
    await hit?.body?.cancel();
    return undefined;
  }
  deps.memory.counters.cacheReads++;
  const p = await readEntry(t, hit, meta);
  if (!p) return undefined;
  deps.memory.counters.fills++;
  if (!t.bypass?.memory) remember(deps, p);
  const status = cacheHit(ttlLeft(t, p.fetchedAt));
  if (isFresh(p.fetchedAt, deps.clock.now(), window)) {
    deps.memory.counters.cacheHits++;
    return served(t, p, "cache", false, cacheStatus(status, memoryForward(!!t.bypass?.memory)));
  }
  // Servable but stale, and nothing better here: serve it; `fill` refreshes behind it once this
  // fill is over (a refresh started here would find this fill running and not start).
  deps.memory.counters.cacheHits++;
  return served(t, p, "cache", true, status);
}

/** L3: the gateway object, one partner fetch at a time for the world; L2 is written behind the answer. */
async function fromGateway(
  t: TierContext,
  l2: CacheTier,
  notOlderThan: number | undefined,
  mem: MemoryEntry | undefined,
): Promise<Served> {
  const { deps } = t;
  const started = deps.clock.now();
  deps.memory.counters.gatewayCalls++;
  const res = await deps.gateway.getSnapshot(notOlderThan === undefined ? {} : { notOlderThan });
  const gatewayMs = deps.clock.now() - started;
  if (!res.ok) throw AppError.fromInfo(res.error);
  const known = mem?.snapshot.etag === res.snapshot.etag && mem.snapshot.fetchedAt === res.snapshot.fetchedAt;
  const p = known && mem ? mem.snapshot : loadPrepared(res.snapshot);
  if (!known) deps.memory.counters.fills++;
  if (!t.bypass?.memory) remember(deps, p);
  if (l2.cache && !known && !l2.dead) {
    t.waitUntil(putAndCheck(t, l2.cache, l2.key, res.snapshot, keepMs(freshnessWindow(t.config)) / 1000));
  }
  const status = cacheStatus(
    res.stale ? objectStale(ttlLeft(t, p.fetchedAt), !!res.error) : OBJECT_FETCHED,
    cacheForward({ present: l2.cache !== undefined, notStoring: l2.dead, storing: l2.state === "storing" }),
    memoryForward(!!t.bypass?.memory),
  );
  const out = served(t, p, "gateway", res.stale, status);
  out.gatewayMs = gatewayMs;
  if (res.error) out.error = res.error;
  return out;
}

/** Where L2 stores nothing, look again after this long (a route may be added, the platform may change). */
const L2_RECHECK_MS = 10 * 60_000;

/**
 * Puts the snapshot into L2, then reads the entry's headers back: a Cache API that resolves the put
 * but keeps nothing (every `*.workers.dev` deployment, Cloudflare's Cache API docs) is found out
 * here, logged once per episode, reported by /health, and no longer read or written until
 * L2_RECHECK_MS has passed. Never rejects.
 */
async function putAndCheck(
  t: TierContext,
  cache: NonNullable<Deps["cache"]>,
  key: string,
  env: SnapshotEnvelope,
  keepS: number,
): Promise<void> {
  const { deps } = t;
  try {
    await cache.put(key, envelopeToResponse(env, keepS));
    const before = deps.memory.l2?.state;
    if (before === "storing") return;
    const back = await cache.match(key);
    const stored = back !== undefined && entryMeta(back)?.etag === env.etag;
    await back?.body?.cancel();
    deps.memory.l2 = { state: stored ? "storing" : "not-storing", checkedAt: deps.clock.now() };
    if (!stored && before !== "not-storing") {
      deps.log.log("warn", "cache_not_storing", { detail: "the Cache API kept nothing we put (workers.dev?)" });
    }
  } catch (err) {
    deps.log.log("warn", "cache_put_failed", { error: String(err) });
  }
}

/** An L2 entry, loaded and checked; a damaged one is a miss (logged), never a 500. */
async function readEntry(t: TierContext, hit: Response, meta: EntryMeta): Promise<Prepared | undefined> {
  try {
    return loadPrepared(await readEnvelope(hit, meta));
  } catch (err) {
    t.deps.log.log("warn", "cache_entry_invalid", { code: toErrorInfo(err).code });
    return undefined;
  }
}

/**
 * A snapshot found damaged while it was served (prepared.ts checks items a block at a time, before
 * they are first served): it leaves L1, and an L2 entry of it is no longer read, so the next fill
 * comes from the object (whose answer then replaces the entry in L2). Logged once per snapshot.
 */
export function discardDamaged(deps: Deps, p: Prepared): void {
  if (deps.memory.damagedEtag !== p.etag) deps.log.log("warn", "snapshot_damaged", { detail: "an item boundary" });
  deps.memory.damagedEtag = p.etag;
  if (current(deps)?.snapshot === p) deps.memory.snapshot = undefined;
}

/** Warm-up of a long-lived server: fill its memory (and cache) with a snapshot younger than half a TTL. */
export async function warmTiers(t: TierContext): Promise<void> {
  await fill(t, warmNotOlderThan(t.deps.clock.now(), freshnessWindow(t.config)));
}
