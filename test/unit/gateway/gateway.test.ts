import { describe, expect, it } from "vitest";
import { type Config, parseConfig } from "../../../src/config.ts";
import { AppError } from "../../../src/errors.ts";
import { Gateway, type GatewayOptions } from "../../../src/gateway/gateway.ts";
import type { AccessToken, TokenStatus } from "../../../src/gateway/types.ts";
import type { GatewayTokenBroker, Logger } from "../../../src/ports.ts";
import { MemoryStore } from "../../../src/runtimes/standard-ports.ts";
import { loadPrepared } from "../../../src/vehicles/prepared.ts";
import type { Vehicle } from "../../../src/vehicles/schema.ts";
import { checkedScriptedFetches, type Responder } from "../../support/scripted-fetch.ts";

const T0 = 1_800_000_000_000;
const API = "https://partner.example";
const VEHICLES_URL = `${API}/api/rental/partner/vehicles`;
const POSITION = { latitude: 52.5, longitude: 13.4 };
const VEHICLES = [{ vin: "WME4530421Y000001", position: POSITION, fuelCardPin: "1234" }];
/** What the stand-in parser below keeps of VEHICLES. */
const VEHICLES_SERVED = [{ vin: "WME4530421Y000001", position: POSITION }];

const config: Config = parseConfig({
  PARTNER_API_URL: API,
  PARTNER_CLIENT_ID: "client",
  PARTNER_CLIENT_SECRET: "client-secret",
  VEHICLES_TTL_S: "30",
  VEHICLES_STALE_S: "300",
});

const partner = checkedScriptedFetches();
const ok: Responder = () => new Response(JSON.stringify(VEHICLES), { headers: { "content-type": "application/json" } });
const status =
  (code: number, headers: Record<string, string> = {}): Responder =>
  () =>
    new Response("nope", { status: code, headers });

/** A structural stand-in for the TokenBroker: one token at a time, counts everything. */
class FakeBroker implements GatewayTokenBroker {
  readonly clock: { now(): number };
  n = 0;
  token: AccessToken | undefined;
  getTokenCalls = 0;
  ensureCalls: number[] = [];
  invalidated: string[] = [];
  failWith: unknown;
  constructor(clock: { now(): number }) {
    this.clock = clock;
  }
  #issue(): AccessToken {
    this.n += 1;
    const now = this.clock.now();
    this.token = {
      value: `secret-token-value-${this.n}`,
      id: `tok-${this.n}`,
      obtainedAt: now,
      expiresAt: now + 300_000,
    };
    return this.token;
  }
  async getToken(): Promise<AccessToken> {
    this.getTokenCalls += 1;
    if (this.failWith !== undefined) throw this.failWith;
    if (!this.token || this.token.expiresAt - this.clock.now() < 5_000) return this.#issue();
    return this.token;
  }
  async invalidate(id: string): Promise<void> {
    this.invalidated.push(id);
    if (this.token?.id === id) this.token = undefined;
  }
  async ensureValidFor(seconds: number): Promise<void> {
    this.ensureCalls.push(seconds);
    if (this.failWith !== undefined) throw this.failWith;
    if (!this.token || this.token.expiresAt - this.clock.now() < seconds * 1000) this.#issue();
  }
  status(): TokenStatus {
    const now = this.clock.now();
    return {
      state: this.token ? "valid" : "none",
      ageS: this.token ? Math.floor((now - this.token.obtainedAt) / 1000) : undefined,
      secondsLeft: this.token ? Math.floor((this.token.expiresAt - now) / 1000) : undefined,
      refreshAt: this.nextRefreshAt(),
      lastRefreshAt: this.token?.obtainedAt,
      lastError: undefined,
      tokenRequests: this.n,
      forcedRefreshes: this.invalidated.length,
    };
  }
  nextRefreshAt(): number | undefined {
    return this.token ? this.token.expiresAt - 60_000 : undefined;
  }
}

function setup(script: Responder[], over: Partial<GatewayOptions> = {}) {
  const clock = {
    t: T0,
    now() {
      return this.t;
    },
  };
  const up = partner(...script);
  const tokens = new FakeBroker(clock);
  const scheduled: Promise<unknown>[] = [];
  const logs: string[] = [];
  const log: Logger = { log: (level, event, fields) => logs.push(JSON.stringify({ level, event, ...fields })) };
  const gateway = new Gateway({
    config,
    fetch: up.fetch,
    tokens,
    clock,
    log,
    store: new MemoryStore(),
    // Stands in for the schema module: keeps allow-listed fields only.
    parseBody: (text) => ({
      vehicles: (JSON.parse(text) as Vehicle[]).map(({ vin, position }) => ({ vin, position })),
      dropped: 0,
    }),
    schedule: (p) => scheduled.push(p),
    random: () => 0,
    sleep: async () => {},
    ...over,
  });
  return { gateway, clock, up, tokens, logs, flush: () => Promise.all(scheduled.splice(0)) };
}

describe("Gateway.getSnapshot", () => {
  it("cold: 500 concurrent callers, one token, one partner request, a redacted snapshot", async () => {
    const { gateway, up, tokens } = setup([ok]);
    const results = await Promise.all(Array.from({ length: 500 }, () => gateway.getSnapshot()));
    expect(up.requests).toHaveLength(1);
    expect(up.requests[0]!.url).toBe(VEHICLES_URL);
    expect(tokens.getTokenCalls).toBe(1);
    for (const r of results) expect(r).toMatchObject({ ok: true, stale: false });
    const r = results[0]!;
    if (!r.ok) throw new Error("expected a snapshot");
    expect(new TextDecoder().decode(loadPrepared(r.snapshot).text)).toBe(JSON.stringify(VEHICLES_SERVED));
    expect(JSON.stringify(results)).not.toContain("secret-token-value");
  });

  it("within the TTL: no partner request; past it: stale at once and one background refresh", async () => {
    const { gateway, up, clock, flush } = setup([ok]);
    await gateway.getSnapshot();
    clock.t += 29_000;
    await gateway.getSnapshot();
    expect(up.requests).toHaveLength(1);
    clock.t += 2_000;
    up.push(ok);
    const stale = await Promise.all(Array.from({ length: 20 }, () => gateway.getSnapshot()));
    for (const r of stale) expect(r).toMatchObject({ ok: true, stale: true });
    await flush();
    expect(up.requests).toHaveLength(2);
    expect(await gateway.getSnapshot()).toMatchObject({ ok: true, stale: false });
  });

  it("a partner 401 is replayed once with a new token, through the broker", async () => {
    const { gateway, up, tokens } = setup([status(401), ok]);
    expect(await gateway.getSnapshot()).toMatchObject({ ok: true });
    expect(tokens.invalidated).toEqual(["tok-1"]);
    expect(up.requests.map((r) => r.headers.get("authorization"))).toEqual([
      "Bearer secret-token-value-1",
      "Bearer secret-token-value-2",
    ]);
  });

  it("partner failures with nothing to serve: ok:false; the breaker opens and then sends nothing", async () => {
    const { gateway, up, clock } = setup(Array.from({ length: 10 }, () => status(500)));
    for (let i = 0; i < 5; i++) {
      expect(await gateway.getSnapshot()).toEqual({
        ok: false,
        error: { code: "partner_error", status: 502, detail: "HTTP 500" },
      });
    }
    expect(up.requests).toHaveLength(10);
    expect(await gateway.getSnapshot()).toEqual({
      ok: false,
      error: { code: "partner_circuit_open", status: 503, retryAfterS: 30 },
    });
    expect(up.requests).toHaveLength(10);
    const s = await gateway.status();
    expect(s.breaker).toEqual({ state: "open", retryAt: clock.t + 30_000 });
    // Only calls that reached the partner are partner failures; the refused one is not.
    expect(s.counters).toMatchObject({ partnerRequests: 10, partnerFailures: 5, snapshotFetches: 6 });
  });

  it("429 with Retry-After: stale-if-error serves the last good copy, no partner call inside the window", async () => {
    const { gateway, up, clock } = setup([ok, status(429, { "retry-after": "60" })]);
    await gateway.getSnapshot();
    clock.t += 31_000;
    const r = await gateway.getSnapshot({ notOlderThan: clock.t });
    expect(r).toMatchObject({ ok: true, stale: true, error: { code: "partner_rate_limited", retryAfterS: 60 } });
    clock.t += 10_000;
    const again = await gateway.getSnapshot({ notOlderThan: clock.t });
    expect(again).toMatchObject({ ok: true, stale: true, error: { code: "partner_rate_limited", retryAfterS: 50 } });
    expect(up.requests).toHaveLength(2);
  });

  it("a token failure reaches the caller as plain data, and sends nothing to the partner", async () => {
    const { gateway, up, tokens } = setup([]);
    tokens.failWith = new AppError("token_client_rejected", { detail: "invalid_client" });
    expect(await gateway.getSnapshot()).toEqual({
      ok: false,
      error: { code: "token_client_rejected", status: 502, detail: "invalid_client" },
    });
    expect(up.requests).toHaveLength(0);
    expect((await gateway.status()).counters.partnerFailures).toBe(0);
  });
});

describe("Gateway.status", () => {
  it("token, snapshot, breaker and counters; never the token", async () => {
    const { gateway, clock, logs } = setup([ok]);
    expect(await gateway.status()).toMatchObject({
      token: { state: "none" },
      snapshot: { fetchedAt: undefined, ageS: undefined, count: undefined },
      breaker: { state: "closed", retryAt: undefined },
      counters: { tokenRequests: 0, partnerRequests: 0, snapshotFetches: 0, snapshotServed: 0 },
    });
    await gateway.getSnapshot();
    clock.t += 3_000;
    await gateway.getSnapshot();
    const s = await gateway.status();
    expect(s).toMatchObject({
      token: { state: "valid" },
      snapshot: { fetchedAt: T0, ageS: 3, count: 1 },
      counters: {
        tokenRequests: 1,
        partnerRequests: 1,
        partnerFailures: 0,
        snapshotFetches: 1,
        snapshotServed: 2,
        droppedVehicles: 0,
      },
    });
    expect(JSON.stringify(s)).not.toContain("secret-token-value");
    expect(logs.join("\n")).not.toContain("secret-token-value");
    expect(logs.some((l) => l.includes('"event":"partner_fetched"') && l.includes('"partnerMs"'))).toBe(true);
  });
});

describe("Gateway.warm", () => {
  it("makes the token valid long enough and fetches a snapshot", async () => {
    const { gateway, tokens, up } = setup([ok]);
    const r = await gateway.warm({ tokenValidForS: 120 });
    expect(tokens.ensureCalls).toEqual([120]);
    expect(r).toEqual({ tokenSecondsLeft: 300, snapshotFetchedAt: T0 });
    expect(up.requests).toHaveLength(1);
  });

  it("keeps a snapshot younger than half the TTL, refetches an older one", async () => {
    const { gateway, up, clock } = setup([ok]);
    await gateway.getSnapshot();
    clock.t += 14_000;
    expect((await gateway.warm({ tokenValidForS: 60 })).snapshotFetchedAt).toBe(T0);
    expect(up.requests).toHaveLength(1);
    clock.t += 2_000;
    up.push(ok);
    expect((await gateway.warm({ tokenValidForS: 60 })).snapshotFetchedAt).toBe(clock.t);
    expect(up.requests).toHaveLength(2);
  });

  it("never throws: a token failure comes back as error, the snapshot is still attempted", async () => {
    const { gateway, tokens, up } = setup([]);
    tokens.failWith = new AppError("token_endpoint_timeout");
    const r = await gateway.warm({ tokenValidForS: 120 });
    expect(r).toEqual({
      tokenSecondsLeft: undefined,
      snapshotFetchedAt: undefined,
      error: { code: "token_endpoint_timeout", status: 504 },
    });
    expect(tokens.getTokenCalls).toBe(1);
    expect(up.requests).toHaveLength(0);
  });

  it("a partner failure with a stale copy: the copy's time and the error", async () => {
    const { gateway, clock } = setup([ok, status(503, { "retry-after": "5" })]);
    await gateway.getSnapshot();
    clock.t += 20_000;
    const r = await gateway.warm({ tokenValidForS: 60 });
    expect(r).toEqual({
      tokenSecondsLeft: 280,
      snapshotFetchedAt: T0,
      error: { code: "partner_unavailable", status: 503, retryAfterS: 5, detail: "HTTP 503" },
    });
  });
});

describe("Gateway alarm helpers", () => {
  it("nextAlarmAt follows the broker's refresh time", async () => {
    const { gateway } = setup([ok]);
    expect(gateway.nextAlarmAt()).toBeUndefined();
    await gateway.getSnapshot();
    expect(gateway.nextAlarmAt()).toBe(T0 + 240_000);
  });

  it("refreshTokenIfDue refreshes only a due token, and never throws", async () => {
    const { gateway, tokens, clock } = setup([ok]);
    expect(await gateway.refreshTokenIfDue()).toEqual({ refreshed: false });
    expect(tokens.n).toBe(0);
    await gateway.getSnapshot();
    clock.t += 100_000;
    expect(await gateway.refreshTokenIfDue()).toEqual({ refreshed: false });
    expect(tokens.n).toBe(1);
    clock.t += 140_000;
    expect(await gateway.refreshTokenIfDue()).toEqual({ refreshed: true });
    expect(tokens.n).toBe(2);
    expect(gateway.nextAlarmAt()).toBe(clock.t + 240_000);

    clock.t += 240_000;
    tokens.failWith = new AppError("token_endpoint_unavailable", { retryAfterS: 10 });
    expect(await gateway.refreshTokenIfDue()).toEqual({
      refreshed: false,
      error: { code: "token_endpoint_unavailable", status: 503, retryAfterS: 10 },
    });
  });
});
