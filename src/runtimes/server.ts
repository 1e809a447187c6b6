/**
 * A long-lived server process (Deno, Bun; Node in tests): the same app and the same gateway rules
 * as the Worker, wired in-process. Runtime-agnostic: web-standard APIs only, no runtime globals;
 * `deno.ts` and `bun.ts` read the environment and call `Deno.serve` / `Bun.serve`.
 *
 * Where the Worker has a Durable Object, a process has one `Gateway` (createGateway) in memory:
 * the same token broker, breaker and single-flight snapshot service. A process is one context,
 * so sharing in-flight promises between requests is safe here (it is not in a stateless Worker).
 * The Durable Object alarm becomes a timer, the cron a warm-up interval.
 */
import type { ExecutionContext } from "hono";
import { createApp } from "../app.ts";
import { MemoryResponseCache } from "../cache/memory-cache.ts";
import { CACHE_NAME } from "../cache/snapshot-entry.ts";
import { configFor } from "../config.ts";
import { type Coordinator, GuardedCoordinator } from "../gateway/coordination.ts";
import { createGateway } from "../gateway/create-gateway.ts";
import type { Gateway } from "../gateway/gateway.ts";
import { SharedSnapshots } from "../gateway/shared-snapshot.ts";
import { unconfiguredGateway } from "../gateway/unconfigured.ts";
import { type ReadAsset, serveAsset } from "../map/static-files.ts";
import { alarmTime, IDLE_ALARM_MS, shouldSetAlarm } from "../oauth/alarm-policy.ts";
import type { Clock, Deps, FetchFn, Logger, ResponseCache, SnapshotSource } from "../ports.ts";
import { newIsolateMemory } from "../vehicles/isolate-memory.ts";
import { warmUp } from "../warmup.ts";
import { processCache } from "./process-cache.ts";
import { consoleLogger, MemoryStore, systemClock } from "./standard-ports.ts";

/** The settings: the Worker's variable names (PARTNER_*, VEHICLES_*, CORS_ORIGINS, API_KEYS...), as strings. */
export type Settings = Readonly<Record<string, string | undefined>>;

/** Port when PORT is not set (wrangler dev's). */
const DEFAULT_PORT = 8787;
/** Warm-up interval when WARMUP_INTERVAL_S is not set: the Worker's cron runs once a minute. */
const DEFAULT_WARMUP_INTERVAL_S = 60;
/** setTimeout's largest delay (2^31 - 1 ms); a later alarm is re-armed on the way. */
const MAX_TIMER_MS = 2_147_483_647;
/** How long close() waits for background work (a refresh, a cache put) to settle. */
const CLOSE_WAIT_MS = 5_000;
/** The most snapshot copies the memory cache keeps (one per configuration; a few suffice). */
const MEMORY_CACHE_ENTRIES = 8;

export interface ServerOptions {
  /** Default: the global fetch, looked up per call. */
  fetch?: FetchFn;
  clock?: Clock;
  log?: Logger;
  /** L2. Default: the runtime's Cache API (Deno); without one, or if it fails to open, a bounded memory cache. */
  cache?: ResponseCache;
  /** The map's static files (`public/`), answered before the app as Workers Static Assets are. */
  assets?: ReadAsset;
  /** The replicas' shared store (openCoordinator); absent: this process alone. Closed by close(). */
  coordinator?: Coordinator;
}

/** How a runtime opens the stores it has: Deno KV on Deno, Redis on Bun. */
export interface StoreOpeners {
  kv?: (path: string | undefined) => Promise<Coordinator>;
  redis?: (url: string) => Coordinator | undefined;
}

/**
 * The shared store GATEWAY_STORE names (undefined for `memory`, or when the settings are invalid:
 * the app reports those). A store this runtime cannot open is a startup error naming the setting,
 * never its value (a Redis URL may hold a password).
 */
export async function openCoordinator(
  settings: Settings,
  runtime: string,
  openers: StoreOpeners,
): Promise<Coordinator | undefined> {
  const config = configFor(settings as Record<string, unknown>);
  if (config instanceof Error) return undefined;
  const store = config.gatewayStore ?? { kind: "memory" };
  if (store.kind === "kv" && openers.kv) return openers.kv(store.path);
  if (store.kind === "redis") {
    const c = openers.redis?.(store.url);
    if (c) return c;
  }
  if (store.kind === "memory") return undefined;
  throw new Error(`GATEWAY_STORE: ${store.kind} is not available on ${runtime}`);
}

/** A wired server: hand `fetch` to the runtime's HTTP server, call `close` on shutdown. */
export interface GatewayServer {
  fetch(request: Request): Promise<Response>;
  readonly deps: Deps;
  /** Stops the timers and waits (bounded) for background work. Idempotent. */
  close(): Promise<void>;
}

/** Where to listen: PORT (default 8787; 0 picks a free port) and HOST (default: the runtime's, all interfaces). */
export function listenOptions(settings: Settings): { port: number; hostname: string | undefined } {
  const raw = settings.PORT?.trim() || String(DEFAULT_PORT);
  const port = Number(raw);
  if (!/^\d{1,5}$/.test(raw) || port > 65_535) throw new Error("PORT must be a whole number from 0 to 65535");
  return { port, hostname: settings.HOST?.trim() || undefined };
}

/** Logs where the server listens (one line; scripts and tests read it). */
export function logListening(server: GatewayServer, runtime: string, hostname: string, port: number): void {
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  server.deps.log.log("info", "listening", { runtime, url: `http://${host}:${port}` });
}

/**
 * A signal handler for a graceful stop: stop accepting and let requests finish (`stopHttp`),
 * stop the timers and let background work settle, then exit. A second signal changes nothing.
 */
export function stopper(
  server: GatewayServer,
  stopHttp: () => Promise<unknown>,
  exit: (code: number) => void,
): () => void {
  let stopping = false;
  return () => {
    if (stopping) return;
    stopping = true;
    server.deps.log.log("info", "stopping", {});
    stopHttp()
      .then(() => server.close())
      .then(
        () => exit(0),
        () => exit(1),
      );
  };
}

/**
 * A timer handle of the server's own. Runtimes type theirs differently (a number on Deno and in
 * Workers, a `Timeout` on Node, a `Timer` on Bun; `clearTimeout` takes `number | undefined` on one
 * and `Timeout` on another), so the server never holds the runtime's handle, only this.
 */
interface TimerHandle {
  clear(): void;
}

/**
 * setTimeout (or setInterval with `repeat`), unreferenced where the runtime allows it: the HTTP
 * server, not a background timer, keeps a process alive. Feature detection, no runtime import:
 * Node, Bun and Deno 2.9 (the pinned one) return a handle with `unref()`; a Deno whose timers are
 * numeric ids has `Deno.unrefTimer(id)` instead.
 */
function startTimer(callback: () => void, ms: number, repeat = false): TimerHandle {
  const id = repeat ? setInterval(callback, ms) : setTimeout(callback, ms);
  const handle: unknown = id;
  if (typeof (handle as { unref?: unknown }).unref === "function") (handle as { unref(): void }).unref();
  else if (typeof handle === "number")
    (globalThis as { Deno?: { unrefTimer?(id: number): void } }).Deno?.unrefTimer?.(handle);
  return { clear: () => (repeat ? clearInterval(id) : clearTimeout(id)) };
}

/** The token alarm (src/oauth/alarm-policy.ts) as a timer: one pending wake-up, as the Durable Object keeps one alarm. */
class TokenAlarm {
  readonly #gateway: Gateway;
  readonly #clock: Clock;
  #timer: TimerHandle | undefined;
  #at: number | undefined;
  #stopped = false;

  constructor(gateway: Gateway, clock: Clock) {
    this.#gateway = gateway;
    this.#clock = clock;
  }

  arm(force = false): void {
    if (this.#stopped) return;
    const now = this.#clock.now();
    const at = alarmTime(this.#gateway.nextAlarmAt(), now, IDLE_ALARM_MS);
    if (!shouldSetAlarm(this.#at, at, force)) return;
    this.#timer?.clear();
    this.#at = at;
    this.#timer = startTimer(() => this.#fire(at), Math.min(at - now, MAX_TIMER_MS));
  }

  /** Resolves once the refresh (if any) is done and the next wake-up is set. */
  async #fire(at: number): Promise<void> {
    this.#at = undefined;
    this.#timer = undefined;
    // Woken early (a delay past setTimeout's limit): wait on.
    if (this.#clock.now() < at) return this.arm(true);
    // Never throws: failures are logged by the broker, whose backoff keeps this from storming.
    await this.#gateway.refreshTokenIfDue();
    this.arm(true);
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.clear();
    this.#timer = undefined;
    this.#at = undefined;
  }
}

/**
 * Builds the Deps of one server process from plain settings, and the fetch handler. Starts the
 * warm-up interval at once (its first tick after one interval, like a cron after a deploy); the
 * token alarm is armed by the first snapshot call.
 */
export function createGatewayServer(settings: Settings, opts: ServerOptions = {}): GatewayServer {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? consoleLogger;
  const fetchFn: FetchFn = opts.fetch ?? ((input, init) => fetch(input, init));

  // Background work of requests and of the gateway: kept so close() can let it finish, never
  // allowed to reject unobserved (waitUntil in a Worker swallows too, but logs nothing).
  const pending = new Set<Promise<unknown>>();
  const track = (p: Promise<unknown>): void => {
    const settled: Promise<unknown> = p
      .catch((err: unknown) => {
        log.log("error", "background_failed", { error: err instanceof Error ? err.name : "unknown" });
      })
      .finally(() => pending.delete(settled));
    pending.add(settled);
  };

  const config = configFor(settings as Record<string, unknown>);
  const shared = opts.coordinator ? new GuardedCoordinator(opts.coordinator, { clock, log }) : undefined;
  let gateway: SnapshotSource = unconfiguredGateway;
  let alarm: TokenAlarm | undefined;
  if (config instanceof Error) {
    log.log("error", "config_invalid", { settings: config.settings });
  } else {
    const inner = createGateway(config, {
      fetch: fetchFn,
      store: new MemoryStore(),
      clock,
      log,
      schedule: track,
      ...(shared ? { coordinator: shared, shareSnapshots: (o) => new SharedSnapshots(o) } : {}),
    });
    const tokenAlarm = new TokenAlarm(inner, clock);
    alarm = tokenAlarm;
    // As the Durable Object's RPC methods: every snapshot call and warm-up re-arms the alarm.
    gateway = {
      async getSnapshot(o) {
        const result = await inner.getSnapshot(o);
        tokenAlarm.arm();
        return result;
      },
      status: async () => (shared ? { ...(await inner.status()), store: shared.status() } : inner.status()),
      async warm(o) {
        const result = await inner.warm(o);
        tokenAlarm.arm();
        return result;
      },
    };
  }

  const deps: Deps = {
    config,
    gateway,
    cache:
      opts.cache ?? processCache(CACHE_NAME, log, () => new MemoryResponseCache({ maxEntries: MEMORY_CACHE_ENTRIES })),
    clock,
    log,
    rateLimit: undefined,
    allowTierBypass: settings.ALLOW_TIER_BYPASS === "true",
    memory: newIsolateMemory(),
  };

  // The cron, as an interval. A tick still running when the next is due is not doubled.
  const intervalS = Math.max(1, Number(settings.WARMUP_INTERVAL_S ?? DEFAULT_WARMUP_INTERVAL_S) || 60);
  let warming = false;
  const warmTick = (): void => {
    if (warming) return;
    warming = true;
    track(
      warmUp(deps, { waitUntil: track, intervalS, scheduledTime: clock.now(), fillTiers: true }).finally(() => {
        warming = false;
      }),
    );
  };
  let interval: TimerHandle | undefined =
    config instanceof Error ? undefined : startTimer(warmTick, intervalS * 1000, true);

  const app = createApp();
  const executionCtx: ExecutionContext = { waitUntil: track, passThroughOnException() {}, props: {} };

  let closing: Promise<void> | undefined;
  return {
    deps,
    fetch: async (request) =>
      (opts.assets && (await serveAsset(request, opts.assets))) || app.fetch(request, { deps }, executionCtx),
    close() {
      closing ??= (async () => {
        interval?.clear();
        interval = undefined;
        alarm?.stop();
        let timer: TimerHandle | undefined;
        const deadline = new Promise<void>((resolve) => {
          timer = startTimer(resolve, CLOSE_WAIT_MS);
        });
        // Background work may start more background work: wait until none is left (or time is up).
        const drain = async () => {
          while (pending.size > 0) await Promise.allSettled([...pending]);
        };
        await Promise.race([drain(), deadline]);
        timer?.clear();
        await shared?.close();
      })();
      return closing;
    },
  };
}
