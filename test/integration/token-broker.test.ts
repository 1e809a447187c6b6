/**
 * The token broker as the world sees it: through the Worker and the PartnerGateway Durable Object,
 * in workerd, against the sandbox's real OAuth 2.0 server (oidc-provider) and vehicles API.
 * Every test asserts the sandbox's request counts, and (afterEach) that no issued access token
 * and no client secret appears in any response, RPC result or console line.
 */
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Config } from "../../src/config.ts";
import type { AccessToken, SnapshotResult } from "../../src/gateway/types.ts";
import { type StoredToken, settingsFingerprint, TOKEN_STORE_KEY } from "../../src/oauth/token-store.ts";
import { MemoryStore } from "../../src/runtimes/standard-ports.ts";
import {
  advanceClock,
  coldStart,
  gatewayStub,
  NO_REJECTIONS,
  partnerCounts,
  partnerCountsWith,
  type RecordedResponse,
  recordTraffic,
  sandbox,
  type TrafficRecorder,
  tokenBroker,
  workerConfig,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

/** `n` concurrent requests through the Worker (a few different queries: filters never reach the partner). */
function burst(rec: TrafficRecorder, n: number): Promise<RecordedResponse[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => rec.get(`/v1/vehicles?limit=${2 + (i % 5)}`)));
}

function expectAllOk(responses: RecordedResponse[]): void {
  const statuses = responses.map((r) => r.status);
  expect(statuses).toEqual(responses.map(() => 200));
}

/** The bearer values the gateway sent to the partner's vehicles URL, in order. */
function bearersSent(rec: TrafficRecorder): (string | undefined)[] {
  return rec.vehiclesRequests().map((r) => r.bearer);
}

/** A token obtained with `config` by a broker of the test's own, stored where the gateway object keeps its token. */
async function storeTokenInObject(config: Config): Promise<{ token: AccessToken; stored: StoredToken | undefined }> {
  const mem = new MemoryStore();
  const token = await tokenBroker(config, mem).getToken();
  const stored = await mem.get<StoredToken>(TOKEN_STORE_KEY);
  await runInDurableObject(gatewayStub(), async (_instance, state) => {
    await state.storage.put(TOKEN_STORE_KEY, stored);
  });
  return { token, stored };
}

let rec: TrafficRecorder;

beforeEach(async () => {
  await coldStart();
  rec = recordTraffic();
});

afterEach(async () => {
  await rec.assertNoLeaks();
});

describe("token broker in the gateway object: single flight", () => {
  it("100 concurrent cold callers through the Worker make 1 token request and 1 partner request", async () => {
    const responses = await burst(rec, 100);

    expectAllOk(responses);
    responses.forEach((r, i) => {
      expect(r.json<{ vehicles: unknown[] }>().vehicles).toHaveLength(2 + (i % 5));
    });
    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 1, tokensIssued: 1, vehiclesRequests: 1, vehiclesServed: 1 }),
    );
    // The gateway's own counters agree, and it sent the one token it got.
    const status = await gatewayStub().status();
    rec.see(status);
    expect(status.counters).toMatchObject({ tokenRequests: 1, partnerRequests: 1, snapshotFetches: 1 });
    expect(rec.tokenRequests()).toHaveLength(1);
    const sent = bearersSent(rec);
    expect(sent).toHaveLength(1);
    expect((await sandbox.secrets()).accessTokens).toContain(sent[0]);
  });

  it("100 concurrent cold getSnapshot() calls on the object make 1 token request and 1 partner request", async () => {
    const stub = gatewayStub();
    const results: SnapshotResult[] = await Promise.all(Array.from({ length: 100 }, () => stub.getSnapshot()));

    const etags = new Set<string>();
    for (const r of results) {
      expect(r.ok).toBe(true);
      if (r.ok) {
        expect(r.stale).toBe(false);
        expect(r.snapshot.count).toBe(2000);
        etags.add(r.snapshot.etag);
      }
    }
    expect(etags.size).toBe(1); // one fetch, one snapshot, shared by all
    const first = results[0];
    if (first?.ok) rec.see(new TextDecoder().decode(first.snapshot.data));
    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 1, tokensIssued: 1, vehiclesRequests: 1, vehiclesServed: 1 }),
    );
  });
});

describe("token broker in the gateway object: refresh timing", () => {
  it("a token past its refresh margin is refreshed exactly once under 100 concurrent callers", async () => {
    expectAllOk([await rec.get("/v1/vehicles?limit=1")]);
    const [t1] = bearersSent(rec);

    // 250 s into a 300 s token: past its refresh time (60-90 s before the end), still usable
    // (until 5 s before the end); the snapshot (30 s TTL + 120 s stale) is long gone.
    advanceClock(250_000);
    expectAllOk(await burst(rec, 100));
    // The renewal runs behind the token still handed out: wait for it to land.
    await waitFor("the background refresh", async () => (await sandbox.counters()).token.issued >= 2, 3_000);
    // More callers at that moment start nothing more.
    expectAllOk(await burst(rec, 100));
    await Promise.all(Array.from({ length: 20 }, () => gatewayStub().status()));

    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 2, tokensIssued: 2, vehiclesRequests: 2, vehiclesServed: 2 }),
    );
    // The fetch at 250 s used the old token (still valid); nobody waited for the endpoint.
    expect(bearersSent(rec)).toEqual([t1, t1]);
    const status = await gatewayStub().status();
    rec.see(status);
    expect(status.token.state).toBe("valid");
    expect(status.token.tokenRequests).toBe(2);
    expect(status.token.secondsLeft).toBeGreaterThan(290);

    // 160 s later the old token has expired and the snapshot is gone: the next fetch carries the new one.
    advanceClock(160_000);
    expectAllOk(await burst(rec, 20));
    const sent = bearersSent(rec);
    expect(sent).toHaveLength(3);
    expect(sent[2]).not.toBe(t1);
    expect((await sandbox.secrets()).accessTokens).toContain(sent[2]);
    expect(await partnerCounts()).toMatchObject({ tokenRequests: 2, vehiclesRequests: 3, vehiclesServed: 3 });
  });

  it("an expired token is never sent: past expiry, 100 callers wait for one new token", async () => {
    expectAllOk([await rec.get("/v1/vehicles?limit=1")]);
    const [t1] = bearersSent(rec);

    advanceClock(301_000);
    expectAllOk(await burst(rec, 100));

    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 2, tokensIssued: 2, vehiclesRequests: 2, vehiclesServed: 2 }),
    );
    const sent = bearersSent(rec);
    expect(sent).toHaveLength(2);
    expect(sent[0]).toBe(t1);
    expect(sent[1]).not.toBe(t1); // nothing carried the old token after its expiry
  });

  it("a token the partner already considers expired is never sent (the sandbox is the witness)", async () => {
    // A 1 s token obtained with the gateway's own settings, stored where the gateway keeps it.
    await sandbox.tokenTtl(1);
    const { token: t1, stored } = await storeTokenInObject(workerConfig());
    expect(stored?.value).toBe(t1.value);
    await sandbox.tokenTtl(300);
    await sandbox.reset(); // counters from here on
    // Real time, so the sandbox's clock sees it too: oidc-provider ends a 1 s token within 1 s.
    await new Promise((resolve) => setTimeout(resolve, 1_100));

    expectAllOk(await burst(rec, 100));

    // Nothing refused (vehiclesRejected.expired: 0).
    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 1, tokensIssued: 1, vehiclesRequests: 1, vehiclesServed: 1 }),
    );
    const sent = bearersSent(rec);
    expect(sent).toHaveLength(1);
    expect(sent[0]).not.toBe(t1.value);

    // The witness works: the old token, sent by hand, is refused as expired.
    const res = await fetch(`${env.PARTNER_API_URL}/api/rental/partner/vehicles`, {
      headers: { authorization: `Bearer ${t1.value}` },
    });
    await res.arrayBuffer();
    expect(res.status).toBe(401);
    expect((await sandbox.counters()).vehicles.rejected.expired).toBe(1);
  });
});

describe("token broker in the gateway object: persistence and settings", () => {
  it("after evictDurableObject, a new request costs no token request while the stored token is valid", async () => {
    expectAllOk([await rec.get("/v1/vehicles?limit=1")]);
    const [t1] = bearersSent(rec);

    await evictDurableObject(gatewayStub());
    // Snapshot gone (160 s > 30 s TTL + 120 s stale), token still before its refresh time (>= 210 s).
    advanceClock(160_000);
    expectAllOk(await burst(rec, 50));

    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 1, tokensIssued: 1, vehiclesRequests: 2, vehiclesServed: 2 }),
    );
    expect(bearersSent(rec)).toEqual([t1, t1]);
    // A new instance (memory lost: its counters start at 0) restored the token from storage.
    const status = await gatewayStub().status();
    rec.see(status);
    expect(status.counters.tokenRequests).toBe(0);
    expect(status.counters.partnerRequests).toBe(1);
    expect(status.token.state).toBe("valid");
  });

  it("a token stored under other settings (a deploy changed PARTNER_SCOPE) is retired, never sent", async () => {
    // The previous deployment asked for scope "vehicles"; this one asks for none.
    const { token: old } = await storeTokenInObject({ ...workerConfig(), scope: "vehicles" });
    await sandbox.reset();

    expectAllOk(await burst(rec, 50));

    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 1, tokensIssued: 1, vehiclesRequests: 1, vehiclesServed: 1 }),
    );
    const sent = bearersSent(rec);
    expect(sent).toHaveLength(1);
    expect(sent[0]).not.toBe(old.value); // still valid at the partner, but not ours any more
    const now = await runInDurableObject(gatewayStub(), (_instance, state) =>
      state.storage.get<StoredToken>(TOKEN_STORE_KEY),
    );
    expect(now?.value).toBe(sent[0]);
    expect(now?.fingerprint).toBe(await settingsFingerprint(workerConfig()));
  });
});

describe("token broker in the gateway object: failures", () => {
  it("rejected client credentials cause no storm: 50 requests, 1 token request, 502 token_client_rejected", async () => {
    await sandbox.faults({ token: { kind: "invalidClient" } });

    const responses = await burst(rec, 50);
    advanceClock(30_000); // within the minute the rejection is remembered
    responses.push(...(await burst(rec, 20)));

    const secrets = [workerConfig().clientSecret, workerConfig().clientId, env.SANDBOX_BASIC_SECRET];
    for (const r of responses) {
      expect(r.status).toBe(502);
      expect(r.headers.get("content-type")).toBe("application/problem+json");
      expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(0);
      const body = r.json<Record<string, unknown>>();
      expect(body).toMatchObject({ status: 502, code: "token_client_rejected" });
      expect(Object.keys(body).sort()).toEqual(["code", "detail", "instance", "status", "title", "type"]);
      for (const s of secrets) {
        expect(r.text).not.toContain(s);
        expect(r.text).not.toContain(encodeURIComponent(s));
      }
      expect(r.text).not.toMatch(/client_secret|password/i);
    }
    // tokenRejected: 0, since the fault answered, not oidc-provider.
    expect(await partnerCounts()).toEqual(partnerCountsWith({ tokenRequests: 1 }));
    expect((await sandbox.counters()).token.byStatus).toEqual({ "401": 1 });
  });

  it("revoked token: 50 concurrent callers cause exactly one refresh and one replay", async () => {
    expectAllOk([await rec.get("/v1/vehicles?limit=1")]);
    const [t1] = bearersSent(rec);
    expect((await sandbox.revokeAll()).revoked).toBeGreaterThanOrEqual(1);

    // Snapshot gone, token not yet due: the next fetch sends the revoked token and gets 401.
    advanceClock(160_000);
    expectAllOk(await burst(rec, 50));

    expect(await partnerCounts()).toEqual(
      partnerCountsWith({
        tokenRequests: 2,
        tokensIssued: 2,
        vehiclesRequests: 3,
        vehiclesServed: 2,
        vehiclesRejected: { ...NO_REJECTIONS, revoked: 1 },
      }),
    );
    const sent = bearersSent(rec);
    expect(sent).toHaveLength(3);
    expect(sent.slice(0, 2)).toEqual([t1, t1]);
    expect(sent[2]).not.toBe(t1);
    const status = await gatewayStub().status();
    rec.see(status);
    expect(status.token.forcedRefreshes).toBe(1);
    expect(status.token.tokenRequests).toBe(2);
  });
});

describe("token broker in the gateway object: alarm", () => {
  it("the alarm refreshes a due token with no traffic, once, and stays scheduled", async () => {
    expectAllOk([await rec.get("/v1/vehicles?limit=1")]);
    expect(await partnerCounts()).toMatchObject({ tokenRequests: 1, vehiclesRequests: 1 });
    const before = await runInDurableObject(gatewayStub(), (_instance, state) => state.storage.getAlarm());
    expect(before).not.toBeNull();

    advanceClock(250_000); // past the refresh time, no client request
    expect(await runDurableObjectAlarm(gatewayStub())).toBe(true);
    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 2, tokensIssued: 2, vehiclesRequests: 1, vehiclesServed: 1 }),
    );

    // At least once: running it again right away changes nothing, and it reschedules itself.
    expect(await runDurableObjectAlarm(gatewayStub())).toBe(true);
    expect(await partnerCounts()).toMatchObject({ tokenRequests: 2, tokensIssued: 2, vehiclesRequests: 1 });
    const next = await runInDurableObject(gatewayStub(), (_instance, state) => state.storage.getAlarm());
    expect(next).not.toBeNull();
    // Set for the new token's refresh time: well ahead, within its 300 s life.
    expect(next!).toBeGreaterThan(Date.now() + 100_000);
    expect(next!).toBeLessThan(Date.now() + 300_000);

    const status = await gatewayStub().status();
    rec.see(status);
    expect(status.token.state).toBe("valid");
    expect(status.token.tokenRequests).toBe(2);
    expect(rec.vehiclesRequests()).toHaveLength(1);
  });
});

describe("nothing leaks", () => {
  it("responses, /health, RPC results and console output hold no access token and no client secret", async () => {
    expectAllOk(await burst(rec, 10));
    const fleet = await sandbox.fleet();
    const vin = String(fleet[0]?.vin);
    expect((await rec.get(`/v1/vehicles/${vin}`)).status).toBe(200);
    expect((await rec.get("/health")).status).toBe(200);
    rec.see(await gatewayStub().status());
    rec.see(await gatewayStub().warm({ tokenValidForS: 120 }));

    // Refresh by time, by the alarm, and forced by a 401.
    advanceClock(250_000);
    expectAllOk(await burst(rec, 10));
    await waitFor("the background refresh", async () => (await sandbox.counters()).token.issued >= 2, 3_000);
    await sandbox.revokeAll();
    advanceClock(160_000);
    expectAllOk(await burst(rec, 10));
    advanceClock(250_000);
    expect(await runDurableObjectAlarm(gatewayStub())).toBe(true);
    expect((await rec.get("/health")).status).toBe(200);

    // A rejected client, too.
    await coldStartKeepingRecorder();
    await sandbox.faults({ token: { kind: "invalidClient" } });
    expect((await rec.get("/v1/vehicles?limit=1")).status).toBe(502);
    expect((await rec.get("/health")).status).toBe(200);

    // The recorder did see the logs of every path above (so the check below is not vacuous).
    for (const event of ["token_refreshed", "token_invalidated", "token_request_failed", '"event":"request"']) {
      expect(rec.logs.some((l) => l.includes(event))).toBe(true);
    }
    expect((await sandbox.secrets()).accessTokens.length).toBeGreaterThanOrEqual(3);
    await rec.assertNoLeaks();
  });
});

/** coldStart restores every mock: start a new recorder and carry the old records over. */
async function coldStartKeepingRecorder(): Promise<void> {
  const old = rec;
  await coldStart();
  rec = recordTraffic();
  rec.outbound.push(...old.outbound);
  rec.logs.push(...old.logs);
  rec.seen.push(...old.seen);
}
