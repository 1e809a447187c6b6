/**
 * Helpers for integration tests that run inside workerd: the sandbox's control API, a cold
 * start (no token, no snapshot, empty caches, a fresh isolate), the gateway object's stub, and
 * a clock the tests can move (Workers' Date.now() only advances across I/O).
 */
import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { vi } from "vitest";
import type { FaultsSpec } from "../../sandbox/index.ts";
import { configFor } from "../../src/config.ts";
import { GATEWAY_NAME } from "../../src/runtimes/cloudflare/gateway-stub.ts";
import { CACHE_NAME, resetIsolate } from "../../src/runtimes/cloudflare/isolate.ts";
import { tierCacheKey } from "../../src/vehicles/tiers.ts";

/** Counters of the sandbox (see sandbox/index.ts `Counters`). */
export interface SandboxCounters {
  token: { total: number; issued: number; rejected: number; byStatus: Record<string, number> };
  vehicles: { total: number; served: number; byStatus: Record<string, number>; rejected: Record<string, number> };
  steal: { total: number; withAuthorization: number };
  unexpected: number;
  unexpectedRequests: string[];
}

async function control<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "content-type": "application/json" };
  }
  const res = await fetch(`${env.SANDBOX_URL}/__sandbox${path}`, init);
  if (!res.ok) throw new Error(`sandbox control ${method} ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

export const sandbox = {
  counters: () => control<SandboxCounters>("GET", "/counters"),
  /** Clears faults and counters, and sets the fleet back to tick 0. */
  reset: () => control<unknown>("POST", "/reset"),
  faults: (spec: FaultsSpec) => control<unknown>("POST", "/faults", spec),
  clearFaults: () => control<unknown>("POST", "/faults/clear"),
  revokeAll: () => control<{ revoked: number }>("POST", "/revoke", {}),
  secrets: () =>
    control<{ accessTokens: string[]; fuelCardPins: string[]; clientSecrets: string[] }>("GET", "/secrets"),
  fleet: () => control<Record<string, unknown>[]>("GET", "/fleet"),
  tokenTtl: (seconds: number) => control<unknown>("POST", "/token-ttl", { seconds }),
  tick: (advance: number) => control<unknown>("POST", "/tick", { advance }),
};

/** The gateway object's stub, as the Worker addresses it. */
export function gatewayStub() {
  return env.GATEWAY.getByName(GATEWAY_NAME);
}

/** A request to the Worker under test. */
export function get(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(new Request(`https://gateway.test${path}`, init));
}

/** Everything as on a first deploy: no token, no snapshot, empty caches, fresh isolate, a calm sandbox. */
export async function coldStart(): Promise<void> {
  vi.restoreAllMocks();
  resetClock();
  await runInDurableObject(gatewayStub(), async (_instance, state) => {
    await state.storage.deleteAlarm();
    await state.storage.deleteAll();
  });
  await abortAllDurableObjects();
  resetIsolate();
  const config = configFor(env as unknown as Record<string, unknown>);
  if (!(config instanceof Error)) await (await caches.open(CACHE_NAME)).delete(tierCacheKey(config));
  await sandbox.tokenTtl(300);
  await sandbox.reset();
}

const realNow = Date.now.bind(Date);
let offsetMs = 0;

/**
 * Moves the clock of the Worker and of the gateway object by `ms` (in tests both run in the
 * test's isolate, and the core reads time through Date.now()). coldStart() puts it back.
 */
export function advanceClock(ms: number): void {
  offsetMs += ms;
  vi.spyOn(Date, "now").mockImplementation(() => realNow() + offsetMs);
}

function resetClock(): void {
  offsetMs = 0;
}
