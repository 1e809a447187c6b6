import { describe, expect, it } from "vitest";
import { AppError } from "../../../src/errors.ts";
import {
  BREAKER_BASE_COOLDOWN_MS,
  BREAKER_FAILURE_THRESHOLD,
  BREAKER_MAX_COOLDOWN_MS,
  BREAKER_STORE_KEY,
  CircuitBreaker,
  type StoredBreaker,
} from "../../../src/partner/circuit-breaker.ts";
import type { KeyValueStore, Logger } from "../../../src/ports.ts";
import { MemoryStore } from "../../../src/runtimes/standard-ports.ts";

function setup(opts: Partial<ConstructorParameters<typeof CircuitBreaker>[0]> = {}) {
  const clock = {
    t: 1_800_000_000_000,
    now() {
      return this.t;
    },
  };
  return { clock, breaker: new CircuitBreaker({ clock, ...opts }) };
}

function refusal(b: CircuitBreaker): AppError {
  try {
    b.acquire();
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }
  throw new Error("expected acquire() to refuse");
}

/** `n` calls let through that fail. */
function fail(b: CircuitBreaker, n: number) {
  for (let i = 0; i < n; i++) {
    b.acquire();
    b.failure();
  }
}

/** `n` calls let through that succeed. */
function succeed(b: CircuitBreaker, n: number) {
  for (let i = 0; i < n; i++) {
    b.acquire();
    b.success();
  }
}

describe("CircuitBreaker", () => {
  it("starts closed and lets calls through", () => {
    const { breaker } = setup();
    expect(breaker.state()).toEqual({ state: "closed", retryAt: undefined });
    expect(() => breaker.acquire()).not.toThrow();
  });

  it(`opens after ${BREAKER_FAILURE_THRESHOLD} consecutive failures, for the base cool-down`, () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD - 1);
    expect(breaker.state().state).toBe("closed");
    fail(breaker, 1);
    expect(breaker.state()).toEqual({ state: "open", retryAt: clock.t + BREAKER_BASE_COOLDOWN_MS });
    expect(refusal(breaker)).toMatchObject({
      code: "partner_circuit_open",
      status: 503,
      retryAfterS: BREAKER_BASE_COOLDOWN_MS / 1000,
    });
    clock.t += BREAKER_BASE_COOLDOWN_MS - 1500;
    expect(refusal(breaker).retryAfterS).toBe(2);
  });

  it("a success in between resets the consecutive count", () => {
    const { breaker } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD - 1);
    succeed(breaker, 1);
    fail(breaker, BREAKER_FAILURE_THRESHOLD - 1);
    expect(breaker.state().state).toBe("closed");
  });

  it("half-open lets exactly one trial through; success closes and resets the cool-down", () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    clock.t += BREAKER_BASE_COOLDOWN_MS;
    expect(breaker.state()).toEqual({ state: "half-open", retryAt: undefined });
    breaker.acquire(); // the trial
    expect(refusal(breaker)).toMatchObject({ code: "partner_circuit_open", retryAfterS: 1 });
    breaker.success();
    expect(breaker.state().state).toBe("closed");
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    expect(refusal(breaker).retryAfterS).toBe(BREAKER_BASE_COOLDOWN_MS / 1000);
  });

  it("a failed trial reopens with a doubled cool-down, capped", () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    let cooldown = BREAKER_BASE_COOLDOWN_MS;
    const seen: number[] = [];
    for (let i = 0; i < 6; i++) {
      clock.t += cooldown;
      fail(breaker, 1);
      cooldown = Math.min(cooldown * 2, BREAKER_MAX_COOLDOWN_MS);
      seen.push(refusal(breaker).retryAfterS!);
    }
    expect(seen).toEqual([60, 120, 240, 300, 300, 300]);
  });

  it("release() frees the trial slot without a verdict", () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    clock.t += BREAKER_BASE_COOLDOWN_MS;
    breaker.acquire();
    breaker.release();
    expect(breaker.state().state).toBe("half-open");
    expect(() => breaker.acquire()).not.toThrow();
  });

  it("a trial that never reports back loses its slot after the lease", () => {
    const { breaker, clock } = setup({ trialLeaseMs: 5_000 });
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    clock.t += BREAKER_BASE_COOLDOWN_MS;
    breaker.acquire();
    clock.t += 4_999;
    refusal(breaker);
    clock.t += 1;
    expect(() => breaker.acquire()).not.toThrow();
  });

  it("holdUntil: refuses with the Retry-After code and the remaining seconds, then lets calls through", () => {
    const { breaker, clock } = setup();
    breaker.holdUntil(clock.t + 10_000, "partner_rate_limited");
    expect(breaker.state()).toEqual({ state: "closed", retryAt: clock.t + 10_000 });
    expect(refusal(breaker)).toMatchObject({ code: "partner_rate_limited", retryAfterS: 10 });
    clock.t += 9_001;
    expect(refusal(breaker).retryAfterS).toBe(1);
    clock.t += 999;
    expect(() => breaker.acquire()).not.toThrow();
    expect(breaker.state().retryAt).toBeUndefined();
  });

  it("holdUntil: a later window wins; an earlier one does not shorten it", () => {
    const { breaker, clock } = setup();
    breaker.holdUntil(clock.t + 20_000, "partner_unavailable");
    breaker.holdUntil(clock.t + 5_000, "partner_rate_limited");
    expect(refusal(breaker)).toMatchObject({ code: "partner_unavailable", retryAfterS: 20 });
  });

  it("reports whichever of the open breaker and the Retry-After window ends later", () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    breaker.holdUntil(clock.t + 90_000, "partner_rate_limited");
    expect(refusal(breaker)).toMatchObject({ code: "partner_rate_limited", retryAfterS: 90 });
    expect(breaker.state()).toEqual({ state: "open", retryAt: clock.t + 90_000 });
  });
});

/** A MemoryStore that counts reads, writes and syncs. */
class CountingStore extends MemoryStore {
  gets = 0;
  puts = 0;
  syncs = 0;
  override async get<T>(key: string): Promise<T | undefined> {
    this.gets += 1;
    return super.get<T>(key);
  }
  override async put<T>(key: string, value: T): Promise<void> {
    this.puts += 1;
    return super.put(key, value);
  }
  async sync(): Promise<void> {
    this.syncs += 1;
  }
}

function recordingLog() {
  const events: string[] = [];
  const log: Logger = { log: (_level, event) => events.push(event) };
  return { log, events };
}

describe("CircuitBreaker with a store (survives an object reset)", () => {
  function persisted() {
    const store = new CountingStore();
    const clock = {
      t: 1_800_000_000_000,
      now() {
        return this.t;
      },
    };
    const { log, events } = recordingLog();
    /** A new instance on the same store and clock: what a reset leaves behind. */
    const instance = (s: KeyValueStore = store) => new CircuitBreaker({ clock, store: s, log });
    /** A new instance that has read its record (`ready()`). */
    const restarted = async () => {
      const b = instance();
      await b.ready();
      return b;
    };
    return { store, clock, instance, restarted, events };
  }

  it("an open breaker stays open across a reset until its cool-down ends; read once, lazily", async () => {
    const { store, clock, instance, restarted } = persisted();
    const first = await restarted();
    fail(first, BREAKER_FAILURE_THRESHOLD);
    await first.flush();
    expect(await store.get<StoredBreaker>(BREAKER_STORE_KEY)).toEqual({
      v: 1,
      failures: 0,
      cooldownMs: BREAKER_BASE_COOLDOWN_MS,
      openUntil: clock.t + BREAKER_BASE_COOLDOWN_MS,
    });

    clock.t += 10_000;
    const second = instance();
    expect(store.gets).toBe(2); // first.ready() and the check above; the new instance has read nothing yet
    await Promise.all([second.ready(), second.ready()]);
    await second.ready();
    expect(store.gets).toBe(3);
    expect(refusal(second)).toMatchObject({ code: "partner_circuit_open", retryAfterS: 20 });
    expect(second.state()).toEqual({ state: "open", retryAt: clock.t + 20_000 });

    // After the cool-down, one trial; it fails: open again for twice as long, also persisted.
    clock.t += 20_000;
    fail(second, 1);
    await second.flush();
    const third = await restarted();
    expect(refusal(third)).toMatchObject({ code: "partner_circuit_open", retryAfterS: 60 });
  });

  it("the failure count survives too: 3 failures, a reset, 2 more open it", async () => {
    const { restarted } = persisted();
    const a = await restarted();
    fail(a, 3);
    await a.flush();
    const b = await restarted();
    fail(b, BREAKER_FAILURE_THRESHOLD - 3);
    expect(b.state().state).toBe("open");
  });

  it("a Retry-After window survives a reset, with its code", async () => {
    const { clock, restarted } = persisted();
    const a = await restarted();
    a.holdUntil(clock.t + 600_000, "partner_unavailable");
    await a.flush();
    clock.t += 100_000;
    const b = await restarted();
    expect(refusal(b)).toMatchObject({ code: "partner_unavailable", retryAfterS: 500 });
  });

  it("writes only on change: a success on a closed breaker costs no write", async () => {
    const { store, restarted } = persisted();
    const a = await restarted();
    succeed(a, 5);
    await a.flush();
    expect(store.puts).toBe(0);
    fail(a, 1);
    await a.flush();
    succeed(a, 1);
    await a.flush();
    expect(store.puts).toBe(2);
    // Changes that cancel out before the write runs are coalesced: nothing to write.
    fail(a, 1);
    succeed(a, 1);
    await a.flush();
    expect(store.puts).toBe(2);
  });

  it("died while parsing a body (the mark is found): open at once, no call before the cool-down", async () => {
    const { store, clock, events, restarted } = persisted();
    const a = await restarted();
    a.acquire();
    await a.beforeParse();
    expect(store.syncs).toBe(1); // made durable before the parse starts
    expect(await store.get<StoredBreaker>(BREAKER_STORE_KEY)).toMatchObject({ parsingSince: clock.t });
    // ...the object dies here: no success(), no failure().

    clock.t += 1_000;
    const b = await restarted();
    expect(events).toContain("partner_parse_interrupted");
    expect(refusal(b)).toMatchObject({ code: "partner_circuit_open", retryAfterS: 30 });
    await b.flush();
    const rec = await store.get<StoredBreaker>(BREAKER_STORE_KEY);
    expect(rec).toEqual({ v: 1, failures: 0, cooldownMs: 30_000, openUntil: clock.t + 30_000 });

    // The trial after the cool-down dies the same way: open again for twice as long.
    clock.t += 30_000;
    b.acquire();
    await b.beforeParse();
    const c = await restarted();
    expect(refusal(c)).toMatchObject({ code: "partner_circuit_open", retryAfterS: 60 });
  });

  it("a parse that ends (either way) clears the mark", async () => {
    const { store, restarted } = persisted();
    const a = await restarted();
    a.acquire();
    await a.beforeParse();
    a.success();
    await a.flush();
    expect(await store.get(BREAKER_STORE_KEY)).toEqual({ v: 1, failures: 0, cooldownMs: 30_000 });
    a.acquire();
    await a.beforeParse();
    a.failure();
    await a.flush();
    expect(await store.get(BREAKER_STORE_KEY)).toEqual({ v: 1, failures: 1, cooldownMs: 30_000 });
  });

  it("an unreadable store or a malformed record: logged, starts closed", async () => {
    const { clock } = persisted();
    const { log, events } = recordingLog();
    const broken: KeyValueStore = {
      get: () => Promise.reject(new Error("storage exploded with secret detail")),
      put: () => Promise.reject(new Error("nope")),
      delete: async () => {},
    };
    const a = new CircuitBreaker({ clock, store: broken, log });
    await a.ready();
    expect(a.state().state).toBe("closed");
    fail(a, 1);
    await a.flush();
    expect(events).toEqual(["breaker_store_failed", "breaker_store_failed"]);

    const odd = new MemoryStore();
    await odd.put(BREAKER_STORE_KEY, { v: 2, failures: "many" });
    const b = new CircuitBreaker({ clock, store: odd });
    await b.ready();
    expect(b.state()).toEqual({ state: "closed", retryAt: undefined });
  });
});
