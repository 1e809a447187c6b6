/**
 * TokenBroker constructed directly inside the test (in workerd) against the sandbox's real OAuth
 * 2.0 server: both client authentication methods, settings changes retiring a shared stored
 * token, rejected credentials, and compare-and-swap invalidation. Every test asserts the
 * sandbox's request counts, and (afterEach) that no token or secret leaked anywhere.
 */
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Config, parseConfig } from "../../src/config.ts";
import { AppError } from "../../src/errors.ts";
import type { AccessToken } from "../../src/gateway/types.ts";
import { FORCED_REFRESH_MIN_INTERVAL_MS, REJECTED_CACHE_MS } from "../../src/oauth/token-broker.ts";
import { type StoredToken, TOKEN_STORE_KEY } from "../../src/oauth/token-store.ts";
import type { Clock } from "../../src/ports.ts";
import { MemoryStore } from "../../src/runtimes/standard-ports.ts";
import {
  coldStart,
  partnerCounts,
  partnerCountsWith,
  recordTraffic,
  type TrafficRecorder,
  tokenBroker,
} from "../support/harness.ts";

const VEHICLES_URL = `${env.PARTNER_API_URL}/api/rental/partner/vehicles`;
/** The token endpoint under another name (same server): a different token URL setting. */
const TOKEN_URL_BY_NAME = env.PARTNER_TOKEN_URL!.replace("//127.0.0.1:", "//localhost:");
/** Wrong, and as awkward to encode as the real ones. */
const WRONG_SECRET = "s3cr+t%:/=&?#wrong";

/** The Worker's settings (client_secret_post), with overrides, parsed as the Worker parses them. */
function settings(over: Record<string, string> = {}): Config {
  return parseConfig({
    PARTNER_TOKEN_URL: env.PARTNER_TOKEN_URL,
    PARTNER_API_URL: env.PARTNER_API_URL,
    PARTNER_CLIENT_ID: env.PARTNER_CLIENT_ID,
    PARTNER_CLIENT_SECRET: env.PARTNER_CLIENT_SECRET,
    PARTNER_CLIENT_AUTH: env.PARTNER_CLIENT_AUTH,
    ...over,
  });
}

/** The sandbox's client_secret_basic client. */
const BASIC = {
  PARTNER_CLIENT_ID: env.SANDBOX_BASIC_ID,
  PARTNER_CLIENT_SECRET: env.SANDBOX_BASIC_SECRET,
  PARTNER_CLIENT_AUTH: "client_secret_basic",
};

/** A clock the test moves by hand. */
function manualClock(): Clock & { advance(ms: number): void } {
  let now = Date.now();
  return {
    now: () => now,
    advance(ms) {
      now += ms;
    },
  };
}

/** GET the partner's vehicles with this token; the status (the body is read and dropped). */
async function useToken(token: AccessToken): Promise<number> {
  const res = await fetch(VEHICLES_URL, { headers: { authorization: `Bearer ${token.value}` } });
  await res.arrayBuffer();
  return res.status;
}

/** Awaits a promise that must reject with an AppError of this code; returns the error. */
async function rejection(p: Promise<unknown>, code: string): Promise<AppError> {
  const err = await p.then(
    () => {
      throw new Error(`expected ${code}, got a token`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  expect((err as AppError).code).toBe(code);
  return err as AppError;
}

let rec: TrafficRecorder;

beforeEach(async () => {
  await coldStart();
  rec = recordTraffic();
});

afterEach(async () => {
  await rec.assertNoLeaks({ alsoAllowed: [TOKEN_URL_BY_NAME] });
});

describe("TokenBroker against the real OAuth server: client authentication", () => {
  it("client_secret_post and client_secret_basic both obtain a token the partner accepts", async () => {
    // The Worker's configured default (client_secret_post), end to end.
    expect((await rec.get("/v1/vehicles?limit=1")).status).toBe(200);

    const post = tokenBroker(settings());
    const basic = tokenBroker(settings(BASIC));
    expect(post.status().state).toBe("none");
    const [tp, tb] = await Promise.all([post.getToken(), basic.getToken()]);
    expect(tp.value).not.toBe(tb.value);
    expect(await useToken(tp)).toBe(200);
    expect(await useToken(tb)).toBe(200);
    rec.see([post.status(), basic.status()]);

    // On the wire: post carries the credentials in the body, basic in Authorization (form-encoded
    // first, RFC 6749 §2.3.1: the secrets hold `+ % : / = & ? #`, so a slip would be refused).
    const tokenRequests = rec.tokenRequests();
    expect(tokenRequests).toHaveLength(3);
    expect(tokenRequests.filter((r) => r.authorization === undefined)).toHaveLength(2);
    expect(tokenRequests.filter((r) => r.authorization?.startsWith("Basic "))).toHaveLength(1);

    // Control: the basic client's credentials sent the other way are refused (the sandbox holds
    // each client to its registered method), so the 200 above really was client_secret_basic.
    const wrongWay = tokenBroker(settings({ ...BASIC, PARTNER_CLIENT_AUTH: "client_secret_post" }));
    rec.see(await rejection(wrongWay.getToken(), "token_client_rejected"));

    expect(await partnerCounts()).toEqual(
      partnerCountsWith({
        tokenRequests: 4,
        tokensIssued: 3,
        tokenRejected: 1,
        vehiclesRequests: 3,
        vehiclesServed: 3,
      }),
    );
  });
});

describe("TokenBroker against the real OAuth server: settings retire the stored token", () => {
  it("the same settings on a shared store reuse the stored token: no token request", async () => {
    const store = new MemoryStore();
    const t1 = await tokenBroker(settings(), store).getToken();
    const t2 = await tokenBroker(settings(), store).getToken(); // a reset: new memory, same storage
    expect(t2.value).toBe(t1.value);
    expect(await useToken(t2)).toBe(200);
    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 1, tokensIssued: 1, vehiclesRequests: 1, vehiclesServed: 1 }),
    );
  });

  it.each([
    ["scope", { PARTNER_SCOPE: "vehicles" }],
    ["token URL", { PARTNER_TOKEN_URL: TOKEN_URL_BY_NAME }],
    ["client id, secret and method (the basic client)", BASIC],
  ] as [string, Record<string, string>][])(
    "changing the %s retires the stored token: one new token request, never reuse",
    async (_what, change) => {
      const store = new MemoryStore();
      const t1 = await tokenBroker(settings(), store).getToken();
      const t2 = await tokenBroker(settings(change), store).getToken();
      expect(t2.value).not.toBe(t1.value);
      expect((await store.get<StoredToken>(TOKEN_STORE_KEY))?.value).toBe(t2.value);
      expect(await useToken(t2)).toBe(200);
      // And back: the first settings do not take the other settings' token either.
      const t3 = await tokenBroker(settings(), store).getToken();
      expect(t3.value).not.toBe(t2.value);
      expect(t3.value).not.toBe(t1.value);
      expect(await partnerCounts()).toEqual(
        partnerCountsWith({ tokenRequests: 3, tokensIssued: 3, vehiclesRequests: 1, vehiclesServed: 1 }),
      );
    },
  );

  it("a wrong secret retires the stored token and gets a rejection, never the old token", async () => {
    const store = new MemoryStore();
    const t1 = await tokenBroker(settings(), store).getToken();
    const wrong = tokenBroker(settings({ PARTNER_CLIENT_SECRET: WRONG_SECRET }), store);
    const err = await rejection(wrong.getToken(), "token_client_rejected");
    rec.see(err);
    expect(err.detail).toBe("invalid_client");
    expect(String(err)).not.toContain(WRONG_SECRET);
    expect(await store.get(TOKEN_STORE_KEY)).toBeUndefined();
    expect(wrong.status()).toMatchObject({ state: "failing", lastError: "token_client_rejected", tokenRequests: 1 });
    expect(await useToken(t1)).toBe(200); // t1 still works at the partner: it was retired, not revoked
    expect(await partnerCounts()).toEqual(
      partnerCountsWith({
        tokenRequests: 2,
        tokensIssued: 1,
        tokenRejected: 1,
        vehiclesRequests: 1,
        vehiclesServed: 1,
      }),
    );
  });
});

describe("TokenBroker against the real OAuth server: single flight on its own", () => {
  // Through the gateway the snapshot service already coalesces partner fetches; here the broker
  // alone must coalesce its callers.
  it("100 concurrent cold getToken() make 1 token request", async () => {
    const b = tokenBroker(settings());
    const tokens = await Promise.all(Array.from({ length: 100 }, () => b.getToken()));
    expect(new Set(tokens.map((t) => t.value)).size).toBe(1);
    expect(await useToken(tokens[0]!)).toBe(200);
    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 1, tokensIssued: 1, vehiclesRequests: 1, vehiclesServed: 1 }),
    );
  });

  it("past the refresh margin, 100 concurrent getToken() get the old token at once and cause 1 refresh", async () => {
    const clock = manualClock();
    const b = tokenBroker(settings(), new MemoryStore(), clock);
    const t1 = await b.getToken();

    clock.advance(250_000); // 300 s token: due (60-90 s before the end), still usable (until 5 s before)
    const during = await Promise.all(Array.from({ length: 100 }, () => b.getToken()));
    expect(during.every((t) => t.value === t1.value)).toBe(true);
    await b.whenIdle();
    const after = await Promise.all(Array.from({ length: 100 }, () => b.getToken()));
    expect(new Set(after.map((t) => t.value)).size).toBe(1);
    expect(after[0]!.value).not.toBe(t1.value);
    expect(await partnerCounts()).toEqual(partnerCountsWith({ tokenRequests: 2, tokensIssued: 2 }));
  });

  it("past expiry, 100 concurrent getToken() wait for 1 new token and never get the old one", async () => {
    const clock = manualClock();
    const b = tokenBroker(settings(), new MemoryStore(), clock);
    const t1 = await b.getToken();

    clock.advance(301_000);
    const tokens = await Promise.all(Array.from({ length: 100 }, () => b.getToken()));
    expect(new Set(tokens.map((t) => t.value)).size).toBe(1);
    expect(tokens[0]!.value).not.toBe(t1.value);
    // Only just short of its end (within the 5 s safety remainder) it is not handed out either.
    clock.advance(296_000);
    const late = await b.getToken();
    expect(late.value).not.toBe(tokens[0]!.value);
    expect(await partnerCounts()).toEqual(partnerCountsWith({ tokenRequests: 3, tokensIssued: 3 }));
  });
});

describe("TokenBroker against the real OAuth server: no storms", () => {
  it("a wrong secret: 50 concurrent getToken() and 50 more within a minute make 1 token request", async () => {
    const clock = manualClock();
    const b = tokenBroker(settings({ PARTNER_CLIENT_SECRET: WRONG_SECRET }), new MemoryStore(), clock);

    const first = await Promise.allSettled(Array.from({ length: 50 }, () => b.getToken()));
    clock.advance(59_000);
    const second = await Promise.allSettled(Array.from({ length: 50 }, () => b.getToken()));

    for (const r of [...first, ...second]) {
      expect(r.status).toBe("rejected");
      if (r.status === "rejected") {
        expect(r.reason).toBeInstanceOf(AppError);
        expect((r.reason as AppError).code).toBe("token_client_rejected");
        expect((r.reason as AppError).retryAfterS).toBeGreaterThan(0);
        rec.see(r.reason);
      }
    }
    expect(await partnerCounts()).toEqual(partnerCountsWith({ tokenRequests: 1, tokenRejected: 1 }));
    expect(b.tokenRequests).toBe(1);

    // When the minute is over, one more try: still one request, not fifty.
    clock.advance(REJECTED_CACHE_MS - 59_000 + 1);
    const third = await Promise.allSettled(Array.from({ length: 50 }, () => b.getToken()));
    expect(third.every((r) => r.status === "rejected")).toBe(true);
    expect(await partnerCounts()).toEqual(partnerCountsWith({ tokenRequests: 2, tokenRejected: 2 }));
  });

  it("50 concurrent invalidate(id) cause one refresh; a stale id does not discard the newer token", async () => {
    const clock = manualClock();
    const b = tokenBroker(settings(), new MemoryStore(), clock);
    const t1 = await b.getToken();

    await Promise.all(Array.from({ length: 50 }, () => b.invalidate(t1.id)));
    expect(b.forcedRefreshes).toBe(1);
    const t2 = await b.getToken();
    expect(t2.id).not.toBe(t1.id);

    // A late report about t1 (another caller's, say) must not throw away t2; past the storm
    // guard's 10 s, so only the id comparison can keep it.
    clock.advance(FORCED_REFRESH_MIN_INTERVAL_MS + 1_000);
    await Promise.all(Array.from({ length: 50 }, () => b.invalidate(t1.id)));
    const t3 = await b.getToken();
    expect(t3.value).toBe(t2.value);
    expect(b.forcedRefreshes).toBe(1);
    expect(await useToken(t3)).toBe(200);
    rec.see(b.status());

    expect(await partnerCounts()).toEqual(
      partnerCountsWith({ tokenRequests: 2, tokensIssued: 2, vehiclesRequests: 1, vehiclesServed: 1 }),
    );
  });
});
