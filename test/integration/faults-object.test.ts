/**
 * Faults of the gateway Durable Object: eviction, a reset in the middle of a refresh, and the
 * platform's error flags (no retry of ours: the runtime retries `.retryable` calls itself; `.overloaded` backs off longer).
 * Against the sandbox in workerd; every case asserts the answer, the sandbox's request counts,
 * and (afterAll) that nothing leaked.
 */
import { abortAllDurableObjects, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it, vi } from "vitest";
import type { GatewayStatus, SnapshotResult, WarmResult } from "../../src/gateway/types.ts";
import { BREAKER_STORE_KEY, type StoredBreaker } from "../../src/partner/circuit-breaker.ts";
import type { PartnerGateway } from "../../src/runtimes/cloudflare/gateway-object.ts";
import { GATEWAY_NAME, gatewayStub as wrapNamespace } from "../../src/runtimes/cloudflare/gateway-stub.ts";
import { prepareSnapshot } from "../../src/vehicles/prepared.ts";
import { advanceClock, appDeps, gatewayStub, NOTHING, sandbox, sandboxCounts } from "../support/harness.ts";
import { PLANTED_MARKER, type Seen, scanSuite } from "../support/leak-scan.ts";
import { expectProblem } from "../support/problem.ts";
import { waitFor } from "../support/wait.ts";

const scan = scanSuite({ logLines: false });

const BYPASS = { headers: { "x-gateway-bypass": "memory,cache" } };

// Issue 12, item 7.
describe("a storage error while setting the alarm", () => {
  it("getSnapshot and warm still return what the object holds; the error is logged, by name only", async () => {
    const stub = gatewayStub();
    await runInDurableObject(stub, (_instance, state) => {
      vi.spyOn(state.storage, "setAlarm").mockRejectedValue(new Error("storage unavailable: disk on fire"));
    });
    const warned = vi.spyOn(console, "warn");

    const answer = await scan.fetch("/v1/vehicles?limit=1", BYPASS);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("cache-status")).toMatch(/^gateway-object/);
    const warm = (await stub.warm({ tokenValidForS: 60 })) as unknown as WarmResult;
    expect(warm.error).toBeUndefined();
    expect(warm.snapshotFetchedAt).toEqual(expect.any(Number));
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });

    const lines = warned.mock.calls.map((args) => args.map(String).join(" "));
    expect(lines.filter((l) => l.includes("alarm_set_failed")).length).toBeGreaterThanOrEqual(2);
    expect(lines.join("\n")).not.toContain("disk on fire");
  });
});

describe("eviction and reset", () => {
  it("eviction: memory is lost, storage is not; the stored token and snapshot cost no request", async () => {
    expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });

    await evictDurableObject(gatewayStub());
    const fromObject = await scan.fetch("/v1/vehicles?limit=1", BYPASS);
    expect(fromObject.status).toBe(200);
    expect(fromObject.headers.get("cache-status")).toMatch(/^gateway-object/);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });

    // Past the stale window the object fetches again, with the token it restored from storage.
    await evictDurableObject(gatewayStub());
    advanceClock(160_000);
    expect((await scan.fetch("/v1/vehicles?limit=1", BYPASS)).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 2 });
  });

  it("reset while a token request hangs: the caller gets 503 gateway_unavailable, the next request recovers with one token request", async () => {
    await sandbox.faults({ token: { kind: "hang", times: 1 } });
    const pending = scan.fetch("/v1/vehicles?limit=1");
    await waitFor("the hung token request", async () => (await sandboxCounts()).token >= 1);

    await abortAllDurableObjects();
    expectProblem(await pending, { status: 503, code: "gateway_unavailable", retryAfter: 1 });

    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => scan.fetch(`/v1/vehicles?limit=${i + 1}`)));
    for (const a of answers) expect(a.status).toBe(200);
    // The hung request, and one more from the new instance: bounded, whatever the traffic.
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 2, vehicles: 1 });
    await sandbox.clearFaults();
  });

  it("reset while the partner call hangs: the next request reuses the stored token (no token request)", async () => {
    await sandbox.faults({ vehicles: { kind: "hang", times: 1 } });
    const pending = scan.fetch("/v1/vehicles?limit=1");
    await waitFor("the hung partner request", async () => (await sandboxCounts()).vehicles >= 1);

    await abortAllDurableObjects();
    expectProblem(await pending, { status: 503, code: "gateway_unavailable", retryAfter: 1 });

    const answers = await Promise.all(Array.from({ length: 20 }, () => scan.fetch("/v1/vehicles?limit=1")));
    for (const a of answers) expect(a.status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 2 });
    await sandbox.clearFaults();
  });
});

describe("the circuit breaker survives a reset", () => {
  /** Five failed fetches (a 500 and its retry each): 10 partner requests, then the breaker is open. */
  async function openTheBreaker(): Promise<void> {
    await sandbox.faults({ vehicles: { kind: "status", status: 500 } });
    for (let i = 0; i < 5; i++) {
      expectProblem(await scan.fetch("/v1/vehicles", BYPASS), {
        status: 502,
        code: "partner_error",
        retryAfter: "absent",
      });
    }
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 10 });
  }

  it("open, then reset and evicted: no partner request until retryAt, one trial after it", async () => {
    await openTheBreaker();
    const before = await gatewayStub().status();
    scan.see("gateway status", before);
    expect(before.breaker.state).toBe("open");
    const retryAt = before.breaker.retryAt as number;
    expect(retryAt - Date.now()).toBeGreaterThan(29_000);

    // A reset (as by a deploy or a crash) forgets memory; the breaker is read back from storage.
    await abortAllDurableObjects();
    const afterReset = await Promise.all(Array.from({ length: 10 }, () => scan.fetch("/v1/vehicles", BYPASS)));
    for (const a of afterReset) expectProblem(a, { status: 503, code: "partner_circuit_open", retryAfter: [29, 30] });
    const status = await gatewayStub().status();
    scan.see("gateway status", status);
    expect(status.breaker).toEqual({ state: "open", retryAt });
    expect(status.counters.partnerRequests).toBe(0); // a new instance: it sent nothing

    advanceClock(20_000);
    await evictDurableObject(gatewayStub());
    expectProblem(await scan.fetch("/v1/vehicles", BYPASS), {
      status: 503,
      code: "partner_circuit_open",
      retryAfter: [9, 10],
    });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 10 });

    // Past retryAt: half-open, one trial, with the token restored from storage. It succeeds: closed.
    await sandbox.clearFaults();
    advanceClock(10_500);
    expect(Date.now()).toBeGreaterThan(retryAt);
    expect((await scan.fetch("/v1/vehicles?limit=1", BYPASS)).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 11 });
    const closed = await gatewayStub().status();
    scan.see("gateway status", closed);
    expect(closed.breaker).toEqual({ state: "closed" });
    const stored = await runInDurableObject(gatewayStub(), (_i, state) => state.storage.get(BREAKER_STORE_KEY));
    scan.see("stored breaker", stored);
    expect(stored).toEqual({ v: 1, failures: 0, cooldownMs: 30_000 });
  });

  it("an instance that died while parsing a partner body: the next one opens the breaker at once, no request", async () => {
    // What a crash in the middle of JSON.parse leaves behind: the mark written (and synced) before it.
    const mark: StoredBreaker = { v: 1, failures: 0, cooldownMs: 30_000, parsingSince: Date.now() };
    await runInDurableObject(gatewayStub(), (_i, state) => state.storage.put(BREAKER_STORE_KEY, mark));
    await abortAllDurableObjects();

    const answers = await Promise.all(Array.from({ length: 5 }, () => scan.fetch("/v1/vehicles", BYPASS)));
    for (const a of answers) expectProblem(a, { status: 503, code: "partner_circuit_open", retryAfter: [29, 30] });
    expect(await sandboxCounts()).toEqual(NOTHING); // not even a token request

    advanceClock(30_500);
    expect((await scan.fetch("/v1/vehicles?limit=1", BYPASS)).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("a Retry-After window (429, 120 s) survives a reset too", async () => {
    await sandbox.faults({ vehicles: { kind: "tooManyRequests", retryAfter: 120 } });
    expectProblem(await scan.fetch("/v1/vehicles", BYPASS), {
      status: 503,
      code: "partner_rate_limited",
      retryAfter: 120,
    });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
    await abortAllDurableObjects();
    advanceClock(60_000);
    expectProblem(await scan.fetch("/v1/vehicles", BYPASS), {
      status: 503,
      code: "partner_rate_limited",
      retryAfter: [59, 60],
    });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
    await sandbox.clearFaults();
  });
});

// ---------------------------------------------------------------------------------------------
// The Worker's stub wrapper, with a fake namespace whose stubs fail with the platform's flags.

type Behaviour = "ok" | { retryable?: boolean; overloaded?: boolean };

const okSnapshot = async (): Promise<SnapshotResult> => ({
  ok: true,
  stale: false,
  snapshot: await prepareSnapshot([], { fetchedAt: Date.now(), dropped: 0 }),
});
const FAKE_STATUS = { token: { state: "valid" } } as unknown as GatewayStatus;

/** A namespace whose n-th stub behaves as `plan[n]` (then "ok"); counts the stubs made. */
function fakeNamespace(plan: Behaviour[]) {
  const made: { name: string; locationHint: string | undefined }[] = [];
  const ns = {
    getByName(name: string, opts?: { locationHint?: string }) {
      const behaviour = plan[made.length] ?? "ok";
      made.push({ name, locationHint: opts?.locationHint });
      const act = async <T>(value: T): Promise<T> => {
        if (behaviour === "ok") return value;
        // The platform's message may say anything; it must reach neither a client nor a log.
        throw Object.assign(new Error(`${PLANTED_MARKER}durable-object-internal`), behaviour);
      };
      return {
        getSnapshot: async () => act(await okSnapshot()),
        status: () => act(FAKE_STATUS),
        warm: () => act({ tokenSecondsLeft: 100, snapshotFetchedAt: 1 }),
      };
    },
  };
  return { ns: ns as unknown as DurableObjectNamespace<PartnerGateway>, made };
}

/** The app with the real Worker's settings and a gateway behind the given namespace. */
function viaApp(ns: DurableObjectNamespace<PartnerGateway>, path: string): Promise<Seen> {
  return scan.app(appDeps({ gateway: wrapNamespace(ns, "weur") }))(path);
}

describe("Durable Object errors: the stub wrapper's retry rules", () => {
  const cases: { name: string; plan: Behaviour[]; stubs: number; ok: boolean; retryAfterS?: number }[] = [
    {
      name: "overloaded (and retryable): never retried",
      plan: [{ overloaded: true, retryable: true }],
      stubs: 1,
      ok: false,
      retryAfterS: 5,
    },
    { name: "overloaded only: never retried", plan: [{ overloaded: true }], stubs: 1, ok: false, retryAfterS: 5 },
    // The runtime has already retried a `.retryable` call (up to five attempts) before we see it.
    {
      name: "retryable: not retried again (the runtime did)",
      plan: [{ retryable: true }],
      stubs: 1,
      ok: false,
      retryAfterS: 1,
    },
    { name: "neither flag: not retried", plan: [{}], stubs: 1, ok: false, retryAfterS: 1 },
  ];

  it.each(cases)("getSnapshot, $name ($stubs stubs)", async ({ plan, stubs, ok, retryAfterS }) => {
    const { ns, made } = fakeNamespace(plan);
    const result = await wrapNamespace(ns, "weur").getSnapshot();
    scan.see("getSnapshot result", result);
    expect(made).toHaveLength(stubs);
    for (const m of made) expect(m).toEqual({ name: GATEWAY_NAME, locationHint: "weur" });
    expect(result.ok).toBe(ok);
    if (!result.ok) expect(result.error).toEqual({ code: "gateway_unavailable", status: 503, retryAfterS });
  });

  it.each(cases)("through the Worker's app, $name: $stubs stubs", async ({ plan, stubs, ok, retryAfterS }) => {
    const { ns, made } = fakeNamespace(plan);
    const a = await viaApp(ns, "/v1/vehicles");
    expect(made).toHaveLength(stubs);
    if (ok) expect(a.status).toBe(200);
    else expectProblem(a, { status: 503, code: "gateway_unavailable", retryAfter: retryAfterS ?? "absent" });
  });

  it("status() and warm() follow the same rules; /health reports the object as unavailable, by code only", async () => {
    const overloaded = fakeNamespace([{ overloaded: true, retryable: true }]);
    await expect(wrapNamespace(overloaded.ns).status()).rejects.toMatchObject({ code: "gateway_unavailable" });
    expect(overloaded.made).toHaveLength(1);

    const retryable = fakeNamespace([{ retryable: true }]);
    await expect(wrapNamespace(retryable.ns).warm({ tokenValidForS: 90 })).rejects.toMatchObject({
      code: "gateway_unavailable",
      retryAfterS: 1,
    });
    expect(retryable.made).toHaveLength(1);
    const ok = fakeNamespace([]);
    const warm = await wrapNamespace(ok.ns).warm({ tokenValidForS: 90 });
    scan.see("warm result", warm);
    expect(warm).toEqual({ tokenSecondsLeft: 100, snapshotFetchedAt: 1 });

    const health = await viaApp(fakeNamespace([{ overloaded: true }]).ns, "/health");
    expect(health.status).toBe(503);
    expect(health.headers.get("cache-control")).toBe("no-store");
    expect(health.headers.get("x-content-type-options")).toBe("nosniff");
    expect(health.json()).toMatchObject({ status: "degraded", gateway: { error: "gateway_unavailable" } });
  });
});
