import { describe, expect, it } from "vitest";
import type { Config } from "../../../src/config.ts";
import { AppError } from "../../../src/errors.ts";
import { FORCED_REFRESH_MAX_PER_MINUTE, REJECTED_CACHE_MS, TokenBroker } from "../../../src/oauth/token-broker.ts";
import { type StoredToken, TOKEN_STORE_KEY, tokenId } from "../../../src/oauth/token-store.ts";
import type { FetchFn, LogLevel } from "../../../src/ports.ts";
import { MemoryStore } from "../../../src/runtimes/standard-ports.ts";

const T0 = 1_700_000_000_000;
const SECRET = "s3cr+t:%/é";

const CONFIG: Config = {
  tokenUrl: "https://auth.example/auth/realms/partner/protocol/openid-connect/token",
  apiUrl: "https://api.example",
  clientId: "gateway",
  clientSecret: SECRET,
  clientAuth: "client_secret_post",
  scope: undefined,
  tokenDefaultLifetimeS: 300,
  tokenTimeoutMs: 5_000,
  partnerTimeoutMs: 10_000,
  partnerMaxBytes: 1024 * 1024,
  partnerMaxVehicles: 1000,
  vehiclesTtlS: 30,
  vehiclesStaleS: 300,
  vehiclesMaxLimit: 1000,
  corsOrigins: [],
  apiKeys: undefined,
  gatewayLocationHint: undefined,
  logRequests: "all",
};

type Reply = Response | Error | ((req: Request) => Response | Promise<Response>);

/**
 * A fake Keycloak token endpoint. Answers from `script` in order, then with fresh tokens
 * (`tok-1`, `tok-2`, ...); fails the test on any request that is not a well-formed token request.
 */
class FakeTokenEndpoint {
  calls = 0;
  issued: string[] = [];
  script: Reply[] = [];
  lifetimeS = 300;
  /** Resolve this to let pending requests answer (to hold callers in flight). */
  gate: Promise<void> | undefined;
  readonly #tokenUrl: string;

  constructor(tokenUrl: string) {
    this.#tokenUrl = tokenUrl;
  }

  readonly fetch: FetchFn = async (input) => {
    const req = input as Request;
    this.calls++;
    if (req.method !== "POST" || req.url !== this.#tokenUrl)
      throw new Error(`unexpected request ${req.method} ${req.url}`);
    const form = new URLSearchParams(await req.text());
    if (form.get("grant_type") !== "client_credentials") throw new Error("unexpected grant");
    if (this.gate) await this.gate;
    const next = this.script.shift();
    if (next instanceof Error) throw next;
    if (next instanceof Response) return next;
    if (typeof next === "function") return next(req);
    const token = `tok-${this.issued.length + 1}`;
    this.issued.push(token);
    return Response.json({ access_token: token, token_type: "Bearer", expires_in: this.lifetimeS });
  };
}

function setup(opts: { store?: MemoryStore; config?: Partial<Config>; clockAt?: number } = {}) {
  const config = { ...CONFIG, ...opts.config };
  const endpoint = new FakeTokenEndpoint(config.tokenUrl);
  const clock = { t: opts.clockAt ?? T0, now: () => clock.t };
  const logs: { level: LogLevel; event: string; fields?: Record<string, unknown> }[] = [];
  const sleeps: number[] = [];
  const store = opts.store ?? new MemoryStore();
  const broker = new TokenBroker({
    config,
    fetch: endpoint.fetch,
    store,
    clock,
    log: { log: (level, event, fields) => logs.push(fields ? { level, event, fields } : { level, event }) },
    random: () => 0.5,
    // Sleeping moves the fake clock: the retry budget is measured on it.
    sleep: async (ms) => {
      sleeps.push(ms);
      clock.t += ms;
    },
  });
  return { broker, endpoint, clock, logs, sleeps, store };
}

function jsonError(status: number, error: string, headers: Record<string, string> = {}): Response {
  return Response.json(
    { error, error_description: "Invalid client or Invalid client credentials" },
    { status, headers },
  );
}

async function rejection(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    return e as AppError;
  }
  throw new Error("expected a rejection");
}

describe("TokenBroker single-flight", () => {
  it("100 concurrent cold callers make exactly 1 token request", async () => {
    const { broker, endpoint } = setup();
    const tokens = await Promise.all(Array.from({ length: 100 }, () => broker.getToken()));
    expect(endpoint.calls).toBe(1);
    expect(new Set(tokens.map((t) => t.value))).toEqual(new Set(["tok-1"]));
    expect(tokens[0]).toMatchObject({ id: await tokenId("tok-1"), obtainedAt: T0, expiresAt: T0 + 300_000 });
    expect(broker.tokenRequests).toBe(1);
  });

  it("serves the token from memory until its refresh time", async () => {
    const { broker, endpoint, clock } = setup();
    await broker.getToken();
    clock.t = T0 + 200_000;
    for (let i = 0; i < 10; i++) await broker.getToken();
    expect(endpoint.calls).toBe(1);
  });

  it("a token past its margin is refreshed exactly once, in the background, while still served", async () => {
    const { broker, endpoint, clock, logs } = setup();
    await broker.getToken();
    // random 0.5: margin = 60 s + 15 s, so the refresh is due at 225 s.
    expect(broker.nextRefreshAt()).toBe(T0 + 225_000);
    clock.t = T0 + 226_000;
    let release!: () => void;
    endpoint.gate = new Promise((r) => {
      release = r;
    });
    const during = await Promise.all(Array.from({ length: 20 }, () => broker.getToken()));
    expect(during.every((t) => t.value === "tok-1")).toBe(true); // nobody waits for the endpoint
    release();
    await broker.whenIdle();
    expect(endpoint.calls).toBe(2);
    expect((await broker.getToken()).value).toBe("tok-2");
    expect(endpoint.calls).toBe(2);
    expect(logs.filter((l) => l.event === "token_refreshed")).toHaveLength(2);
  });

  it("callers wait for the refresh once the token is no longer usable, and join one request", async () => {
    const { broker, endpoint, clock } = setup();
    await broker.getToken();
    clock.t = T0 + 296_000; // past the 5 s safety remainder
    const tokens = await Promise.all(Array.from({ length: 30 }, () => broker.getToken()));
    expect(tokens.every((t) => t.value === "tok-2")).toBe(true);
    expect(endpoint.calls).toBe(2);
  });

  it("never hands out a token past its expiry even if every refresh fails", async () => {
    const { broker, endpoint, clock } = setup();
    await broker.getToken();
    endpoint.script = Array.from({ length: 20 }, () => new Response("down", { status: 500 }));
    clock.t = T0 + 300_000;
    const err = await rejection(broker.getToken());
    expect(err.code).toBe("token_endpoint_error");
    expect(broker.status().state).toBe("failing");
  });
});

describe("TokenBroker persistence", () => {
  it("reloads a stored token with the same fingerprint: 0 requests", async () => {
    const store = new MemoryStore();
    const first = setup({ store });
    const t1 = await first.broker.getToken();
    const stored = await store.get<StoredToken>(TOKEN_STORE_KEY);
    expect(stored).toMatchObject({ value: "tok-1", expiresAt: T0 + 300_000, obtainedAt: T0 });
    expect(stored?.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(stored)).not.toContain(SECRET);

    // A reset (deploy, eviction): memory gone, storage kept.
    const second = setup({ store, clockAt: T0 + 60_000 });
    const t2 = await second.broker.getToken();
    expect(second.endpoint.calls).toBe(0);
    expect(t2).toEqual(t1);
  });

  it.each<[string, Partial<Config>]>([
    ["secret", { clientSecret: "another secret" }],
    ["client id", { clientId: "other" }],
    ["token URL", { tokenUrl: "https://auth2.example/token" }],
    ["auth method", { clientAuth: "client_secret_basic" }],
    ["scope", { scope: "vehicles" }],
  ])("a different %s retires the stored token: 1 request", async (_, change) => {
    const store = new MemoryStore();
    await setup({ store }).broker.getToken();
    const second = setup({ store, config: change, clockAt: T0 + 1_000 });
    expect((await second.broker.getToken()).value).toBe("tok-1"); // the new endpoint's first token
    expect(second.endpoint.calls).toBe(1);
    expect(second.logs.some((l) => l.event === "token_retired")).toBe(true);
    // The retired token is replaced in storage, so a third reset reuses the new one.
    const third = setup({ store, config: change, clockAt: T0 + 2_000 });
    await third.broker.getToken();
    expect(third.endpoint.calls).toBe(0);
  });

  it("does not reuse a stored token that is no longer usable", async () => {
    const store = new MemoryStore();
    await setup({ store }).broker.getToken();
    const later = setup({ store, clockAt: T0 + 296_000 });
    expect((await later.broker.getToken()).value).toBe("tok-1"); // the new endpoint's first token
    expect(later.endpoint.calls).toBe(1);
  });

  it("keeps working when the store fails", async () => {
    const { broker, endpoint, logs } = setup({
      store: Object.assign(new MemoryStore(), {
        get: async () => {
          throw new Error("storage down");
        },
        put: async () => {
          throw new Error("storage down");
        },
      }),
    });
    expect((await broker.getToken()).value).toBe("tok-1");
    expect(endpoint.calls).toBe(1);
    expect(logs.some((l) => l.event === "token_store_failed")).toBe(true);
  });
});

describe("TokenBroker invalidate (compare-and-swap)", () => {
  it("50 concurrent reports of one token cause exactly one refresh", async () => {
    const { broker, endpoint } = setup();
    const t1 = await broker.getToken();
    await Promise.all(Array.from({ length: 50 }, () => broker.invalidate(t1.id)));
    expect(endpoint.calls).toBe(2);
    expect(broker.forcedRefreshes).toBe(1);
    expect((await broker.getToken()).value).toBe("tok-2");
    expect(endpoint.calls).toBe(2);
  });

  it("50 reports racing with getToken callers still cost one refresh", async () => {
    const { broker, endpoint } = setup();
    const t1 = await broker.getToken();
    const results = await Promise.all(
      Array.from({ length: 50 }, () => broker.invalidate(t1.id).then(() => broker.getToken())),
    );
    expect(endpoint.calls).toBe(2);
    expect(results.every((t) => t.value === "tok-2")).toBe(true);
  });

  it("a report about an older token never discards a newer one", async () => {
    const { broker, endpoint, clock } = setup();
    const t1 = await broker.getToken();
    clock.t = T0 + 296_000;
    const t2 = await broker.getToken();
    expect(t2.value).toBe("tok-2");
    await broker.invalidate(t1.id);
    await broker.invalidate("0123456789abcdef");
    expect(endpoint.calls).toBe(2);
    expect(broker.forcedRefreshes).toBe(0);
    expect((await broker.getToken()).id).toBe(t2.id);
  });

  it("storm guard: at most 1 forced refresh per 10 s and 3 per minute", async () => {
    const { broker, endpoint, clock, logs } = setup();
    const report = async () => broker.invalidate((await broker.getToken()).id);
    await broker.getToken();
    await report(); // t=0: forced #1
    expect(endpoint.calls).toBe(2);
    clock.t = T0 + 5_000;
    await report(); // within 10 s: suppressed
    expect(endpoint.calls).toBe(2);
    expect(logs.some((l) => l.event === "token_invalidate_suppressed" && l.level === "warn")).toBe(true);
    clock.t = T0 + 10_000;
    await report(); // forced #2
    clock.t = T0 + 20_000;
    await report(); // forced #3
    expect(endpoint.calls).toBe(4);
    clock.t = T0 + 30_000;
    await report(); // 4th within a minute: suppressed
    clock.t = T0 + 45_000;
    await report(); // still suppressed
    expect(endpoint.calls).toBe(4);
    expect(broker.forcedRefreshes).toBe(FORCED_REFRESH_MAX_PER_MINUTE);
    clock.t = T0 + 60_000; // the first one left the window
    await report();
    expect(endpoint.calls).toBe(5);
    expect(broker.forcedRefreshes).toBe(4);
  });
});

describe("TokenBroker failures", () => {
  it("invalid_client is negative-cached: 20 calls -> 1 request, same error at once", async () => {
    const { broker, endpoint, clock } = setup();
    endpoint.script = Array.from({ length: 30 }, () => jsonError(401, "invalid_client"));
    for (let i = 0; i < 20; i++) {
      const err = await rejection(broker.getToken());
      expect(err.code).toBe("token_client_rejected");
      expect(err.detail).toBe("invalid_client");
      expect(err.retryAfterS).toBeGreaterThan(0);
      expect(err.message).not.toContain(SECRET);
      clock.t += 1_000;
    }
    expect(endpoint.calls).toBe(1);
    // Concurrent callers during the window: no request either.
    await Promise.allSettled(Array.from({ length: 20 }, () => broker.getToken()));
    expect(endpoint.calls).toBe(1);
    clock.t = T0 + REJECTED_CACHE_MS;
    await rejection(broker.getToken());
    expect(endpoint.calls).toBe(2);
    expect(broker.status()).toMatchObject({ state: "failing", lastError: "token_client_rejected" });
  });

  it("honours Retry-After: no request before it passes, callers fail fast with retryAfterS", async () => {
    const { broker, endpoint, clock } = setup();
    endpoint.script = [new Response("slow down", { status: 429, headers: { "retry-after": "30" } })];
    const first = await rejection(broker.getToken());
    expect(first).toMatchObject({ code: "token_endpoint_unavailable", retryAfterS: 30 });
    expect(endpoint.calls).toBe(1); // no retry inside the window, not even within this getToken
    clock.t = T0 + 10_000;
    const during = await rejection(broker.getToken());
    expect(during).toMatchObject({ code: "token_endpoint_unavailable", retryAfterS: 20 });
    expect(endpoint.calls).toBe(1);
    clock.t = T0 + 30_000;
    expect((await broker.getToken()).value).toBe("tok-1");
    expect(endpoint.calls).toBe(2);
  });

  it("retries a transient failure within one getToken (backoff with jitter) and succeeds", async () => {
    const { broker, endpoint, sleeps } = setup();
    endpoint.script = [new Response("oops", { status: 502 }), new TypeError("fetch failed")];
    const t = await broker.getToken();
    expect(t.value).toBe("tok-1");
    expect(endpoint.calls).toBe(3);
    expect(broker.tokenRequests).toBe(3);
    // random 0.5: attempt 2 waits 0.5 * 250 ms, attempt 3 waits 0.5 * 500 ms.
    expect(sleeps).toEqual([125, 250]);
    expect(broker.status()).toMatchObject({ state: "valid", lastError: undefined });
  });

  it("gives up after 3 attempts and keeps the total bounded", async () => {
    const { broker, endpoint, clock } = setup();
    endpoint.script = Array.from({ length: 10 }, () => new Response("oops", { status: 500 }));
    const err = await rejection(broker.getToken());
    expect(err.code).toBe("token_endpoint_error");
    expect(endpoint.calls).toBe(3);
    expect(clock.t - T0).toBeLessThan(30_000);
    // A short cooldown follows: the next caller fails fast without a request.
    const again = await rejection(broker.getToken());
    expect(again.code).toBe("token_endpoint_error");
    expect(endpoint.calls).toBe(3);
  });

  it("an endpoint that times out every time gets 2 attempts within the 15 s budget", async () => {
    const { broker, endpoint, clock } = setup();
    endpoint.script = Array.from({ length: 10 }, () => () => {
      clock.t += 5_000; // each attempt uses up its whole timeout
      return new Response("", { status: 504 });
    });
    await rejection(broker.getToken());
    expect(endpoint.calls).toBe(2);
    expect(clock.t - T0).toBeLessThan(15_000);
  });

  it("a failed refresh keeps serving the still-usable old token", async () => {
    const { broker, endpoint, clock, logs } = setup();
    await broker.getToken();
    endpoint.script = Array.from({ length: 10 }, () => new Response("oops", { status: 503 }));
    clock.t = T0 + 230_000;
    expect((await broker.getToken()).value).toBe("tok-1");
    await broker.whenIdle();
    expect(endpoint.calls).toBe(4); // 1 + 3 attempts
    expect((await broker.getToken()).value).toBe("tok-1");
    expect(broker.status()).toMatchObject({ state: "valid", lastError: "token_endpoint_unavailable" });
    expect(logs.some((l) => l.event === "token_refresh_failed" && l.fields?.servingOldToken === true)).toBe(true);
  });

  it("a rejected refresh keeps serving the old token, then reports the rejection", async () => {
    const { broker, endpoint, clock } = setup();
    await broker.getToken();
    endpoint.script = Array.from({ length: 10 }, () => jsonError(400, "unauthorized_client"));
    clock.t = T0 + 230_000;
    expect((await broker.getToken()).value).toBe("tok-1");
    await broker.whenIdle();
    expect(endpoint.calls).toBe(2);
    clock.t = T0 + 289_000; // inside the negative cache: no background retry either
    expect((await broker.getToken()).value).toBe("tok-1");
    await broker.whenIdle();
    expect(endpoint.calls).toBe(2);
    expect(broker.nextRefreshAt()).toBe(T0 + 230_000 + REJECTED_CACHE_MS); // an alarm waits for the window
    clock.t = T0 + 296_000; // unusable, and the window has passed: one more try
    expect((await rejection(broker.getToken())).code).toBe("token_client_rejected");
    expect(endpoint.calls).toBe(3);
  });

  it("never logs the token or the secret", async () => {
    const { broker, endpoint, clock, logs } = setup();
    const t = await broker.getToken();
    await broker.invalidate(t.id);
    endpoint.script = [jsonError(401, "invalid_client")];
    clock.t = T0 + 296_000;
    await rejection(broker.getToken());
    const text = JSON.stringify(logs) + JSON.stringify(broker.status());
    expect(text).not.toContain("tok-1");
    expect(text).not.toContain("tok-2");
    expect(text).not.toContain(SECRET);
    expect(logs.find((l) => l.event === "token_refreshed")?.fields).toEqual({ lifetimeS: 300, tokenId: t.id });
  });
});

describe("TokenBroker status and scheduling", () => {
  it("reports state without the token", async () => {
    const { broker, clock } = setup();
    expect(broker.status()).toMatchObject({ state: "none", tokenRequests: 0 });
    expect(broker.nextRefreshAt()).toBeUndefined();
    await broker.getToken();
    clock.t = T0 + 100_000;
    expect(broker.status()).toEqual({
      state: "valid",
      ageS: 100,
      secondsLeft: 200,
      refreshAt: T0 + 225_000,
      lastRefreshAt: T0,
      lastError: undefined,
      tokenRequests: 1,
      forcedRefreshes: 0,
    });
    clock.t = T0 + 299_000;
    expect(broker.status().state).toBe("expired");
  });

  it("ensureValidFor refreshes only when the token would not last that long", async () => {
    const { broker, endpoint, clock } = setup();
    await broker.ensureValidFor(120);
    expect(endpoint.calls).toBe(1);
    await broker.ensureValidFor(120);
    expect(endpoint.calls).toBe(1);
    clock.t = T0 + 200_000; // 95 s of use left
    await broker.ensureValidFor(120);
    expect(endpoint.calls).toBe(2);
    // Asking for more than any token lasts does not loop: a fresh token is kept.
    await broker.ensureValidFor(3600);
    expect(endpoint.calls).toBe(2);
  });

  it("a short-lived token (5 s) is renewed about 1 s before its end, without a hot loop", async () => {
    const { broker, endpoint, clock } = setup();
    endpoint.lifetimeS = 5;
    await broker.getToken();
    for (let ms = 0; ms <= 20_000; ms += 100) {
      clock.t = T0 + ms;
      await broker.getToken();
      await broker.whenIdle();
    }
    // One request every ~3.75 s (random 0.5): 20 s / 3.75 s + the first.
    expect(endpoint.calls).toBeGreaterThanOrEqual(5);
    expect(endpoint.calls).toBeLessThanOrEqual(7);
  });
});
