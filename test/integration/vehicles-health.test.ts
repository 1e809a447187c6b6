/**
 * GET /health: configuration state, token state (never the token), snapshot age, and the
 * counters of the gateway object (token and partner requests) and of the isolate (per tier).
 * It never makes a token or partner request of its own.
 */
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { HEALTH_STATUS_TTL_MS } from "../../src/app.ts";
import {
  advanceClock,
  cachedFetchedAt,
  coldStartEachCapturingLogs,
  expectNoLeaks,
  health,
  observe,
  sandbox,
  sandboxCounts,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

const logs = coldStartEachCapturingLogs();

afterEach(async () => {
  await sandbox.clearFaults();
  await expectNoLeaks({ extra: logs(), everyPin: true });
});

describe("GET /health", () => {
  it("on a cold start: config, no token, no snapshot, zero counters; and it calls nobody", async () => {
    const h = await health();
    expect(h.status).toBe(200);
    expect(h.headers.get("content-type")).toMatch(/^application\/json/);
    expect(h.headers.get("cache-control")).toBe("no-store");
    expect(h.headers.get("x-content-type-options")).toBe("nosniff");
    expect(h.body.status).toBe("ok");
    expect(h.body.config).toMatchObject({
      ok: true,
      clientAuth: "client_secret_post",
      vehiclesTtlS: 30,
      vehiclesStaleS: 120,
      apiKeys: false,
      rateLimit: false,
      cache: true,
    });
    expect(h.body.gateway.token).toMatchObject({ state: "none", tokenRequests: 0 });
    expect(h.body.gateway.token.secondsLeft).toBeUndefined();
    expect(h.body.gateway.snapshot).toEqual({});
    expect(h.body.gateway.breaker.state).toBe("closed");
    expect(h.body.gateway.counters).toEqual({
      tokenRequests: 0,
      partnerRequests: 0,
      partnerFailures: 0,
      snapshotServed: 0,
      snapshotFetches: 0,
      droppedVehicles: 0,
      feedRequests: 0,
    });
    expect(h.body.isolate).toEqual({
      memoryHits: 0,
      cacheHits: 0,
      responseHits: 0,
      responsePuts: 0,
      gatewayCalls: 0,
      cacheReads: 0,
      fills: 0,
      joined: 0,
      takeovers: 0,
      staleServed: 0,
      notModified: 0,
      cacheApi: "unknown",
    });
    // Neither the client id nor its secret (both configured as secrets).
    expect(h.text).not.toContain(env.PARTNER_CLIENT_ID as string);
    expect(h.text).not.toContain(env.PARTNER_CLIENT_SECRET as string);
    expect(await sandboxCounts()).toEqual({ token: 0, vehicles: 0, unexpected: 0, steal: 0 });
  });

  it("after traffic: token state without the token, snapshot age, and counters per tier", async () => {
    const first = await observe("/v1/vehicles?limit=2");
    const etag = first.headers.get("etag") as string;
    for (let i = 0; i < 5; i++) await observe("/v1/vehicles?fuelType=ELECTRIC");
    await observe("/v1/vehicles?limit=2", { headers: { "if-none-match": etag } });
    await waitFor("the L2 entry", async () => (await cachedFetchedAt()) !== undefined);
    const l2 = await observe("/v1/vehicles?limit=1", { headers: { "x-gateway-bypass": "memory" } });
    expect(l2.headers.get("cache-status")).toMatch(/^gateway-cache; hit/);

    advanceClock(12_000);
    const h = await health();
    expect(h.status).toBe(200);
    const token = h.body.gateway.token;
    expect(token.state).toBe("valid");
    expect(token.tokenRequests).toBe(1);
    expect(token.ageS).toBeGreaterThanOrEqual(12);
    expect(token.ageS).toBeLessThanOrEqual(14);
    expect(token.secondsLeft).toBeGreaterThan(280);
    expect(token.secondsLeft).toBeLessThanOrEqual(288);
    // Nothing that looks like a bearer value anywhere in it.
    const { accessTokens } = await sandbox.secrets();
    expect(accessTokens.length).toBeGreaterThan(0);
    for (const t of accessTokens) expect(h.text).not.toContain(t);
    expect(Object.keys(token)).not.toContain("value");

    expect(h.body.gateway.snapshot.count).toBe(2000);
    expect(h.body.gateway.snapshot.ageS).toBeGreaterThanOrEqual(12);
    expect(h.body.gateway.snapshot.ageS).toBeLessThanOrEqual(14);
    expect(h.body.gateway.counters).toMatchObject({
      tokenRequests: 1,
      partnerRequests: 1,
      partnerFailures: 0,
      snapshotFetches: 1,
      snapshotServed: 1,
    });
    const iso = h.body.isolate;
    expect(iso.gatewayCalls).toBe(1);
    expect(iso.memoryHits).toBe(6);
    expect(iso.notModified).toBe(1);
    expect(iso.cacheHits).toBe(1);
    expect(iso.staleServed).toBe(0);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("with a failing partner: failures and stale answers are counted, the breaker is shown, /health stays 200", async () => {
    await observe("/v1/vehicles?limit=1");
    await sandbox.faults({ vehicles: { kind: "status", status: 503, retryAfter: 30 } });
    advanceClock(31_000);
    const stale = await observe("/v1/vehicles?limit=1");
    expect((JSON.parse(stale.text) as { stale: boolean }).stale).toBe(true);
    // /health serves this isolate's copy of the object's status, up to HEALTH_STATUS_TTL_MS old.
    await waitFor(
      "the failed refresh",
      async () => (await health()).body.gateway.counters.partnerFailures === 1,
      HEALTH_STATUS_TTL_MS + 10_000,
    );
    const h = await health();
    expect(h.status).toBe(200);
    expect(h.body.gateway.counters).toMatchObject({ partnerRequests: 2, partnerFailures: 1, snapshotFetches: 2 });
    expect(h.body.gateway.breaker.retryAt).toBeGreaterThan(Date.now());
    expect(h.body.gateway.snapshot.ageS).toBeGreaterThanOrEqual(31);
    expect(h.body.isolate.staleServed).toBe(1);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 2, unexpected: 0, steal: 0 });
  });
});
