/// <reference types="node" />
/**
 * Many replicas, one partner load (issue 13): three real `deno` processes sharing one Deno KV
 * file, and three real `bun` processes sharing one redis-server, against the partner sandbox.
 * The sandbox counts what the partner sees; the replicas' /health says what each one did.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, onTestFailed } from "vitest";
import { type Sandbox, startSandbox } from "../../sandbox/index.ts";
import { until } from "../support/wait.ts";
import { type RedisServer, startRedis } from "./redis-server.ts";
import { type Runtime, type RuntimeProcess, sandboxSettings, startRuntime } from "./runtime-process.ts";

const REPLICAS = 3;
const FLEET_SIZE = 200;
/** Three processes, a sandbox and a store per test, on a shared 2-core machine. */
const TEST_TIMEOUT_MS = 120_000;

interface Health {
  gateway: {
    token: { state: string };
    counters: { tokenRequests: number; partnerRequests: number };
    store?: { kind: string; state: string; failures: number };
  };
}

/** One GET; a replica that was killed answers nothing (status 0). */
async function get(base: string, path: string, timeoutMs = 20_000): Promise<number> {
  try {
    const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** One GET with what a failure window shows: status, content type and Retry-After. */
async function answer(base: string, path: string) {
  const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(20_000) });
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    retryAfter: res.headers.get("retry-after"),
    text,
  };
}

/** An answer inside a failure window: a 5xx with a positive Retry-After. */
function expectFailureWindow(a: { status: number; retryAfter: string | null }): void {
  expect(a.status).toBeGreaterThanOrEqual(500);
  expect(Number(a.retryAfter)).toBeGreaterThan(0);
}

async function health(p: RuntimeProcess): Promise<Health> {
  const res = await fetch(`${p.url}/health`, { signal: AbortSignal.timeout(10_000) });
  return (await res.json()) as Health;
}

/** The shared store of one runtime: a Deno KV file in a temp dir, or a private redis-server. */
interface Store {
  settings: Record<string, string>;
  flags: string[];
  redis?: RedisServer;
  close(): Promise<void>;
}

async function openStore(runtime: Runtime): Promise<Store> {
  if (runtime === "deno") {
    const dir = mkdtempSync(join(tmpdir(), "gateway-kv-"));
    return {
      settings: { GATEWAY_STORE: `kv:${join(dir, "gateway.sqlite")}` },
      flags: ["--unstable-kv", `--allow-read=${dir}`, `--allow-write=${dir}`],
      close: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  const redis = await startRedis();
  return { settings: { GATEWAY_STORE: redis.url }, flags: [], redis, close: () => redis.stop() };
}

describe.each(["deno", "bun"] as const)("%s replicas sharing one store", (runtime) => {
  let sandbox: Sandbox | undefined;
  let store: Store | undefined;
  let procs: RuntimeProcess[] = [];
  /** The settings the replicas of this test run with (one more may join). */
  let replicaSettings: Record<string, string> = {};

  /** The sandbox, a store and the replicas on it; returns the sandbox. */
  async function start(settings: Record<string, string> = {}): Promise<Sandbox> {
    const sb = await startSandbox({ port: 0, fleetSize: FLEET_SIZE, seed: 13, tickMs: 0 });
    sandbox = sb;
    store = await openStore(runtime);
    const all = { ...sandboxSettings(sb), ...store.settings, ...settings };
    replicaSettings = all;
    procs = await Promise.all(
      Array.from({ length: REPLICAS }, () => startRuntime(runtime, all, 30_000, store?.flags ?? [])),
    );
    const started = procs;
    // What each replica did about tokens, snapshots and the store: the story of a failure.
    onTestFailed(() => {
      started.forEach((p, i) => {
        const lines = p.output().split("\n");
        console.log(`replica ${i}:\n${lines.filter((l) => /token|snapshot|store|fenced|partner/.test(l)).join("\n")}`);
      });
    });
    return sb;
  }

  /** `n` concurrent requests to every replica; their statuses, by replica. */
  async function burst(n: number, targets = procs): Promise<number[][]> {
    return Promise.all(
      targets.map((p) => Promise.all(Array.from({ length: n }, (_, i) => get(p.url, `/v1/vehicles?limit=${1 + i}`)))),
    );
  }

  /** `burst(n)`, every answer a 200. */
  async function burstOk(n: number): Promise<void> {
    expect((await burst(n)).flat().every((st) => st === 200)).toBe(true);
  }

  /** Traffic (2 requests to each replica, every answer a 200) until the partner has served `n` fetches. */
  function untilServed(s: Sandbox, n: number, what: string) {
    return until(
      what,
      async () => {
        await burstOk(2);
        return s.counters();
      },
      (c) => c.vehicles.served >= n,
      60_000,
    );
  }

  afterEach(async () => {
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    procs = [];
    await store?.close();
    store = undefined;
    await sandbox?.close();
    sandbox = undefined;
  });

  it(
    "answers concurrent cold traffic to every replica with 1 token and 1 partner request in total",
    async () => {
      const s = await start({ VEHICLES_TTL_S: "300" });
      await burstOk(20);
      expect(s.counters()).toMatchObject({ token: { total: 1 }, vehicles: { total: 1 }, unexpected: 0 });
      const healths = await Promise.all(procs.map(health));
      for (const h of healths) {
        expect(h.gateway.store).toMatchObject({ kind: runtime === "deno" ? "kv" : "redis", state: "ok", failures: 0 });
      }
      // One replica did the work, the others took its results from the store.
      expect(healths.reduce((n, h) => n + h.gateway.counters.tokenRequests, 0)).toBe(1);
      expect(healths.reduce((n, h) => n + h.gateway.counters.partnerRequests, 0)).toBe(1);
      // The shared token never shows in a log line.
      const { accessTokens, clientSecrets } = s.secrets();
      const logs = procs.map((p) => p.output()).join("\n");
      expect(logs).toContain('"event":"snapshot_shared"');
      for (const secret of [...accessTokens, ...clientSecrets]) expect(logs).not.toContain(secret);
      // A graceful stop closes the store's connection too: exit code 0, no hang.
      const { code, signal } = await (procs[0] as RuntimeProcess).stop("SIGTERM");
      expect({ code, signal }).toEqual({ code: 0, signal: null });
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "renews short-lived tokens once per lifetime for all replicas together",
    async () => {
      const lifetimeS = 4;
      // A 1 s TTL and steady traffic to every replica: the partner fetch (and with it the need for
      // a token) moves from replica to replica, and every replica's alarm keeps what it holds.
      const s = await start({ VEHICLES_TTL_S: "1" });
      s.setTokenTtl(lifetimeS);
      await burstOk(2);
      expect(s.counters().token.total).toBe(1);
      const t0 = Date.now();
      const c = await until(
        "three renewals",
        async () => {
          await burstOk(1);
          return s.counters();
        },
        (c) => c.token.total >= 4,
        60_000,
      );
      const elapsedMs = Date.now() - t0;
      expect(c.token.total).toBe(c.token.issued);
      expect(c.vehicles.rejected.expired).toBe(0); // never an expired token sent
      // A token is renewed no sooner than half its lifetime after it was obtained (refresh-timing.ts),
      // by whichever replica comes first; three replicas renewing each their own would reach three
      // renewals within about one lifetime.
      expect(elapsedMs).toBeGreaterThanOrEqual(3 * (lifetimeS / 2) * 1000 - 500);
      const healths = await Promise.all(procs.map(health));
      expect(healths.reduce((n, h) => n + h.gateway.counters.tokenRequests, 0)).toBe(c.token.total);
      // More than one replica fetched, so more than one used the token: it was shared.
      expect(healths.filter((h) => h.gateway.counters.partnerRequests > 0).length).toBeGreaterThan(1);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "refreshes a revoked token once in total, whichever replicas meet the 401",
    async () => {
      const s = await start({ VEHICLES_TTL_S: "1" });
      await burstOk(2);
      expect(s.counters().token.total).toBe(1);
      expect(s.revokeAll()).toBe(1);
      s.resetCounters();
      // Traffic to every replica for a few TTLs: each revalidation is one partner fetch for all.
      await untilServed(s, 3, "three partner fetches after the revocation");
      const c = s.counters();
      expect(c.vehicles.rejected.revoked).toBeGreaterThanOrEqual(1);
      expect(c.token.total).toBe(1);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "takes over from a replica killed mid-refresh once its lease lapses, with no duplicate burst",
    async () => {
      const s = await start({ VEHICLES_TTL_S: "300", PARTNER_TOKEN_TIMEOUT_MS: "5000" });
      // The first token request hangs for 3 s: long enough to find who sent it and kill it.
      s.setFaults({ token: { kind: "latency", ms: 3000, times: 1 } });
      const traffic = burst(5);
      await until(
        "the first token request",
        () => s.counters().token.total,
        (n) => n === 1,
      );
      const healths = await Promise.all(procs.map(health));
      const holder = healths.findIndex((h) => h.gateway.counters.tokenRequests === 1);
      expect(holder).toBeGreaterThanOrEqual(0);
      await procs[holder]?.stop("SIGKILL");
      const statuses = await traffic;
      statuses.forEach((list, i) => {
        if (i !== holder) expect(list).toEqual(list.map(() => 200));
      });
      // The dead replica's request and the one of the replica that took over: nobody else's.
      expect(s.counters()).toMatchObject({ token: { total: 2 }, vehicles: { total: 1 } });
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "honours rejected credentials for all replicas together: one token request, no storm",
    async () => {
      const s = await start({ VEHICLES_TTL_S: "300" });
      s.setFaults({ token: { kind: "invalidClient" } });
      // One replica first, so its failure window is in the store before the others ask.
      const first = await answer((procs[0] as RuntimeProcess).url, "/v1/vehicles?limit=1");
      expect(first.status).toBeGreaterThanOrEqual(500);
      const rest = await Promise.all(
        procs.flatMap((p) => Array.from({ length: 5 }, () => answer(p.url, "/v1/vehicles?limit=1"))),
      );
      for (const a of [first, ...rest]) {
        expectFailureWindow(a);
        expect(a.type).toMatch(/^application\/problem\+json/);
      }
      expect(s.counters()).toMatchObject({ token: { total: 1 }, vehicles: { total: 0 } });
      const { clientSecrets } = s.secrets();
      for (const a of rest) for (const secret of clientSecrets) expect(a.text).not.toContain(secret);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "waits out the token endpoint's Retry-After on every replica, then one replica retries",
    async () => {
      const s = await start({ VEHICLES_TTL_S: "300" });
      s.setFaults({ token: { kind: "tooManyRequests", retryAfter: 2, times: 1 } });
      const first = await answer((procs[0] as RuntimeProcess).url, "/v1/vehicles?limit=1");
      expect(first.status).toBeGreaterThanOrEqual(500);
      const during = await Promise.all(procs.map((p) => answer(p.url, "/v1/vehicles?limit=1")));
      for (const a of during) expectFailureWindow(a);
      expect(s.counters().token.total).toBe(1);
      await until(
        "every replica to answer after the window",
        () => Promise.all(procs.map((p) => get(p.url, "/v1/vehicles?limit=1"))),
        (statuses) => statuses.every((st) => st === 200),
        30_000,
      );
      expect(s.counters()).toMatchObject({ token: { total: 2 }, vehicles: { total: 1 } });
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "serves a replica that starts cold during a partner outage from the others' stored copy (stale-if-error)",
    async () => {
      const s = await start({ VEHICLES_TTL_S: "1" });
      await burstOk(2);
      s.setFaults({ vehicles: { kind: "status", status: 503 } });
      // The stored copy goes stale: a warm replica says so once its own revalidation failed.
      const warm = procs[0] as RuntimeProcess;
      await until(
        "a stale answer from a warm replica",
        async () => JSON.parse((await answer(warm.url, "/v1/vehicles?limit=1")).text) as { stale?: boolean },
        (body) => body.stale === true,
      );
      const late = await startRuntime(runtime, replicaSettings, 30_000, store?.flags ?? []);
      procs.push(late);
      const a = await answer(late.url, "/v1/vehicles?limit=1");
      expect(a.status).toBe(200);
      const body = JSON.parse(a.text) as { stale: boolean; count: number };
      expect(body.stale).toBe(true);
      expect(body.count).toBe(1);
      // It asked the partner no more than the one fetch of a single process (or none: the stored window).
      const late503 = (await health(late)).gateway.counters.partnerRequests;
      expect(late503).toBeLessThanOrEqual(1);
    },
    TEST_TIMEOUT_MS,
  );

  it.runIf(runtime === "bun")(
    "keeps answering per process while redis-server is down, then recovers to one shared token",
    async () => {
      const s = await start({ VEHICLES_TTL_S: "1" });
      const redis = store?.redis as RedisServer;
      await burstOk(2);
      expect(s.counters().token.total).toBe(1);

      await redis.stop();
      // Revoked while the store is down: each replica refreshes on its own, as one process would.
      s.revokeAll();
      await until(
        "every replica to notice the store is down",
        async () => {
          await burstOk(2);
          return Promise.all(procs.map(health));
        },
        (hs) => hs.every((h) => h.gateway.store?.state === "unavailable"),
        30_000,
      );
      const down = procs.map((p) => p.output().match(/"event":"store_unavailable"/g)?.length ?? 0);
      expect(down).toEqual(procs.map(() => 1)); // logged once per episode

      const back = await startRedis(redis.port);
      if (store) store.close = () => back.stop();
      await until(
        "every replica to find the store again",
        async () => {
          await burst(1);
          return Promise.all(procs.map(health));
        },
        (hs) => hs.every((h) => h.gateway.store?.state === "ok"),
        30_000,
      );
      // Back to one token for all: a revocation now costs one token request in total.
      s.revokeAll();
      s.resetCounters();
      await untilServed(s, 3, "three partner fetches after the revocation");
      expect(s.counters().token.total).toBe(1);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("a store the runtime cannot open", () => {
  it("stops a deno replica at start, naming GATEWAY_STORE and never its value", async () => {
    const sandbox = await startSandbox({ port: 0, fleetSize: 10, seed: 1, tickMs: 0 });
    try {
      const url = "redis://:hunter2-redis-password@127.0.0.1:1";
      const err = await startRuntime("deno", { ...sandboxSettings(sandbox), GATEWAY_STORE: url }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err?.message).toMatch(/GATEWAY_STORE: redis is not available on deno/);
      expect(err?.message).not.toContain("hunter2");
    } finally {
      await sandbox.close();
    }
  });
});

describe("the shared store's adapters, on the real stores", () => {
  /** Runs the rules fixture with the real binary; its one JSON line. */
  function rules(command: string, args: string[], store: string): Record<string, unknown> {
    const bin = join(process.cwd(), "node_modules", ".bin", command);
    const r = spawnSync(bin, [...args, "test/runtimes/fixtures/coordinator-rules.ts"], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? tmpdir(), NO_COLOR: "1", STORE: store },
      encoding: "utf8",
      timeout: 60_000,
    });
    const line = r.stdout.trim().split("\n").at(-1) ?? "";
    if (r.status !== 0 || !line.startsWith("{"))
      throw new Error(`${command} exited ${r.status}\n${r.stdout}\n${r.stderr}`);
    return JSON.parse(line) as Record<string, unknown>;
  }
  const EXPECTED = {
    firstFence: 1,
    secondWhileHeld: true,
    bigWritten: true,
    bigRead: true,
    takenOver: true,
    staleRenew: false,
    staleWrite: false,
    keptAfterStaleWrite: true,
    newWrite: true,
    deleteWrong: false,
    deleteRight: true,
    afterDelete: null,
  };

  it(
    "Deno KV: one lease holder, fenced writes, 2 MB records, compare-and-delete",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "gateway-kv-rules-"));
      try {
        const out = rules(
          "deno",
          ["run", "--unstable-kv", `--allow-read=${dir}`, `--allow-write=${dir}`, "--allow-env"],
          `kv:${join(dir, "kv.sqlite")}`,
        );
        expect(out).toEqual(EXPECTED);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "Redis: one lease holder, fenced writes, 2 MB records, compare-and-delete",
    async () => {
      const redis = await startRedis();
      try {
        expect(rules("bun", [], redis.url)).toEqual(EXPECTED);
      } finally {
        await redis.stop();
      }
    },
    TEST_TIMEOUT_MS,
  );
});
