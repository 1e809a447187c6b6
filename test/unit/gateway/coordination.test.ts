/**
 * The replicas' coordination rules on the in-memory adapter (the shared adapters, Deno KV and
 * Redis, run the same rules in test/runtimes/replicas.test.ts with real binaries and stores):
 * leases with fencing values, single flight across brokers, shared failure windows, and the
 * fallback to per-process behaviour when the store fails.
 */
import { describe, expect, it } from "vitest";
import { type Config, ConfigError, parseConfig } from "../../../src/config.ts";
import { AppError } from "../../../src/errors.ts";
import {
  type Coordinator,
  coordinated,
  GuardedCoordinator,
  MemoryCoordinator,
  STORE_RETRY_MS,
} from "../../../src/gateway/coordination.ts";
import { parse, stringify } from "../../../src/gateway/shared-snapshot.ts";
import { TokenBroker, type TokenBrokerOptions } from "../../../src/oauth/token-broker.ts";
import type { FetchFn, LogLevel } from "../../../src/ports.ts";
import { MemoryStore } from "../../../src/runtimes/standard-ports.ts";

const T0 = 1_700_000_000_000;

function clockAt(t = T0) {
  const clock = { t, now: () => clock.t };
  return clock;
}

function logs() {
  const lines: { level: LogLevel; event: string; fields: Record<string, unknown> | undefined }[] = [];
  return {
    lines,
    log: (level: LogLevel, event: string, fields?: Record<string, unknown>) => lines.push({ level, event, fields }),
  };
}

const CONFIG: Config = parseConfig({
  PARTNER_TOKEN_URL: "https://auth.example/token",
  PARTNER_API_URL: "https://api.example",
  PARTNER_CLIENT_ID: "gateway",
  PARTNER_CLIENT_SECRET: "s3cr+t:%/",
});

/** A TokenBroker of one replica: its own store and log, the coordinator it shares with the others. */
function replicaBroker(
  clock: { now(): number },
  shared: MemoryCoordinator,
  fetch: FetchFn,
  over: Partial<TokenBrokerOptions> = {},
): TokenBroker {
  return new TokenBroker({
    config: CONFIG,
    fetch,
    store: new MemoryStore(),
    clock,
    log: logs(),
    coordinator: new GuardedCoordinator(shared, { clock, log: logs() }),
    ...over,
  });
}

/** A token endpoint: each call answers the next reply (or a fresh token), after a macrotask. */
function tokenEndpoint(replies: (() => Response)[] = []) {
  const state = { calls: 0 };
  const fetch: FetchFn = async () => {
    state.calls++;
    await new Promise((r) => setTimeout(r, 5));
    const next = replies.shift();
    if (next) return next();
    return Response.json({ access_token: `token-${state.calls}`, token_type: "Bearer", expires_in: 300 });
  };
  return { state, fetch };
}

describe("MemoryCoordinator", () => {
  it("grants a lease to one holder at a time, again once it lapses, with a growing fence", async () => {
    const clock = clockAt();
    const c = new MemoryCoordinator(clock);
    const a = await c.tryAcquire("token", 1_000);
    expect(a?.fence).toBe(1);
    expect(await c.tryAcquire("token", 1_000)).toBeUndefined();
    clock.t += 1_000;
    const b = await c.tryAcquire("token", 1_000);
    expect(b?.fence).toBe(2);
    // The first holder lost it: it cannot renew, release or write any more.
    expect(await c.renew(a!, 1_000)).toBe(false);
    await c.release(a!);
    expect(await c.tryAcquire("token", 1_000)).toBeUndefined();
    expect(await c.write("token", "old", a!, 10_000)).toBe(false);
    expect(await c.write("token", "new", b!, 10_000)).toBe(true);
    expect(await c.read("token")).toBe("new");
  });

  it("deletes a record only if it still is the expected one", async () => {
    const c = new MemoryCoordinator(clockAt());
    await c.put("token", "x", 1_000);
    expect(await c.deleteIf("token", "y")).toBe(false);
    expect(await c.deleteIf("token", "x")).toBe(true);
    expect(await c.read("token")).toBeUndefined();
  });
});

describe("coordinated", () => {
  it("runs the work once for concurrent callers; the others take the stored result", async () => {
    const clock = clockAt();
    const inner = new MemoryCoordinator(clock);
    const coordinator = new GuardedCoordinator(inner, { clock, log: logs() });
    let works = 0;
    const job = () =>
      coordinated({
        coordinator,
        lease: "job",
        leaseMs: 5_000,
        clock,
        sleep: (ms) => new Promise((r) => setTimeout(r, ms / 10)),
        readShared: () => coordinator.read("result"),
        work: async (lease) => {
          works++;
          await new Promise((r) => setTimeout(r, 20));
          if (lease) await coordinator.write("result", "done", lease, 60_000);
          return "done";
        },
      });
    expect(await Promise.all([job(), job(), job()])).toEqual(["done", "done", "done"]);
    expect(works).toBe(1);
  });

  it("falls back to the work without a lease when the store fails, logging once per episode", async () => {
    const clock = clockAt();
    let down = true;
    const inner = new MemoryCoordinator(clock);
    const flaky: Coordinator = new Proxy(inner, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== "function") return v;
        return (...args: unknown[]) => (down ? Promise.reject(new Error("ECONNREFUSED")) : v.apply(target, args));
      },
    });
    const l = logs();
    const coordinator = new GuardedCoordinator(flaky, { clock, log: l });
    const leases: unknown[] = [];
    const run = () =>
      coordinated({
        coordinator,
        lease: "job",
        leaseMs: 1_000,
        clock,
        sleep: async () => {},
        readShared: async () => undefined,
        work: async (lease) => {
          leases.push(lease);
          return 1;
        },
      });
    expect(await run()).toBe(1);
    expect(await run()).toBe(1);
    expect(leases).toEqual([undefined, undefined]);
    expect(coordinator.status()).toMatchObject({ state: "unavailable", since: T0 });
    expect(l.lines.filter((x) => x.event === "store_unavailable")).toHaveLength(1);
    down = false;
    clock.t += STORE_RETRY_MS;
    expect(await run()).toBe(1);
    expect(leases[2]).toMatchObject({ name: "job" });
    expect(coordinator.status().state).toBe("ok");
    expect(l.lines.filter((x) => x.event === "store_recovered")).toHaveLength(1);
  });
});

describe("TokenBroker replicas sharing a coordinator", () => {
  function replicas(n: number, replies: (() => Response)[] = []) {
    const clock = clockAt();
    const shared = new MemoryCoordinator(clock);
    const endpoint = tokenEndpoint(replies);
    const brokers = Array.from({ length: n }, () =>
      replicaBroker(clock, shared, endpoint.fetch, {
        random: () => 0.5,
        sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 20))),
      }),
    );
    return { clock, shared, endpoint, brokers };
  }

  it("makes one token request for concurrent cold callers on every replica", async () => {
    const { endpoint, brokers } = replicas(3);
    const tokens = await Promise.all(brokers.flatMap((b) => [b.getToken(), b.getToken()]));
    expect(new Set(tokens.map((t) => t.value))).toEqual(new Set(["token-1"]));
    expect(endpoint.state.calls).toBe(1);
  });

  it("refreshes a rejected token once across replicas (compare-and-swap), never taking it back", async () => {
    const { endpoint, brokers } = replicas(3);
    const first = await Promise.all(brokers.map((b) => b.getToken()));
    const id = first[0]?.id as string;
    await Promise.all(brokers.map((b) => b.invalidate(id)));
    const after = await Promise.all(brokers.map((b) => b.getToken()));
    expect(new Set(after.map((t) => t.value))).toEqual(new Set(["token-2"]));
    expect(endpoint.state.calls).toBe(2);
  });

  it("shares the negative cache of rejected credentials: the other replicas send nothing", async () => {
    const rejected = () => Response.json({ error: "invalid_client" }, { status: 401 });
    const { endpoint, brokers } = replicas(3, [rejected]);
    const results = await Promise.allSettled(brokers.map((b) => b.getToken()));
    for (const r of results) {
      expect(r.status).toBe("rejected");
      const err = (r as PromiseRejectedResult).reason as AppError;
      expect(err).toBeInstanceOf(AppError);
      expect(err.code).toBe("token_client_rejected");
      expect(err.retryAfterS).toBeGreaterThan(0);
    }
    expect(endpoint.state.calls).toBe(1);
  });
});

describe("TokenBroker replicas: a failed refresh elsewhere", () => {
  it("leaves a cold replica the usable shared token, and the failure window for its refresh", async () => {
    const clock = clockAt();
    const shared = new MemoryCoordinator(clock);
    const busy = () => new Response("slow down", { status: 429, headers: { "retry-after": "30" } });
    const endpoint = tokenEndpoint();
    const broker = (fetch = endpoint.fetch) => replicaBroker(clock, shared, fetch, { sleep: async () => {} });
    const a = broker();
    expect((await a.getToken()).value).toBe("token-1");
    // A refresh that the endpoint refuses with Retry-After: the window goes to the store.
    const replies: (() => Response)[] = [busy];
    const refusing: FetchFn = async (i, init) =>
      replies.length > 0 ? (replies.shift() as () => Response)() : endpoint.fetch(i, init);
    const a2 = broker(refusing);
    await a2.getToken(); // adopts token-1
    clock.t += 200_000; // past half its 300 s life: a renewal may be asked for
    await expect(a2.ensureValidFor(400)).rejects.toMatchObject({ retryAfterS: 30 });
    const b = broker();
    expect((await b.getToken()).value).toBe("token-1");
    await expect(b.ensureValidFor(400)).rejects.toMatchObject({ retryAfterS: 30 });
    expect(endpoint.state.calls).toBe(1);
  });
});

describe("the shared snapshot's record format", () => {
  it("round-trips typed arrays through a string", () => {
    const value = { a: "x", n: 1, bytes: new Uint8Array([0, 1, 255]), cols: new Float64Array([1.5, -2]) };
    const back = parse(stringify(value)) as typeof value;
    expect(back.a).toBe("x");
    expect([...back.bytes]).toEqual([0, 1, 255]);
    expect(back.cols).toBeInstanceOf(Float64Array);
    expect([...back.cols]).toEqual([1.5, -2]);
    expect(parse("{not json")).toBeUndefined();
  });
});

describe("GATEWAY_STORE", () => {
  const base = { PARTNER_CLIENT_ID: "id", PARTNER_CLIENT_SECRET: "secret" };
  it("is memory by default; kv:<path>, kv: and redis:// name the shared store", () => {
    expect(parseConfig(base).gatewayStore).toEqual({ kind: "memory" });
    expect(parseConfig({ ...base, GATEWAY_STORE: "kv:/var/lib/gw.sqlite" }).gatewayStore).toEqual({
      kind: "kv",
      path: "/var/lib/gw.sqlite",
    });
    expect(parseConfig({ ...base, GATEWAY_STORE: "kv:" }).gatewayStore).toEqual({ kind: "kv", path: undefined });
    expect(parseConfig({ ...base, GATEWAY_STORE: "redis://:pw@10.0.0.5:6379" }).gatewayStore).toEqual({
      kind: "redis",
      url: "redis://:pw@10.0.0.5:6379",
    });
  });

  it("rejects anything else with a ConfigError naming the setting, never its value", () => {
    for (const bad of ["postgres://db.internal", "redis:///x", "kvx", "memcached:x"]) {
      let err: unknown;
      try {
        parseConfig({ ...base, GATEWAY_STORE: bad });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).settings).toEqual(["GATEWAY_STORE"]);
      expect((err as ConfigError).message).not.toContain(bad);
    }
  });
});
