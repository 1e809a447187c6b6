import { describe, expect, it } from "vitest";
import { AppError } from "../../../src/errors.ts";
import type { AccessToken } from "../../../src/gateway/types.ts";
import { BREAKER_STORE_KEY, CircuitBreaker, type StoredBreaker } from "../../../src/partner/circuit-breaker.ts";
import {
  DEFAULT_RETRY_AFTER_S,
  fetchPartnerVehicles,
  type PartnerClientDeps,
  RETRY_DELAY_MAX_MS,
  RETRY_DELAY_MIN_MS,
} from "../../../src/partner/vehicles-client.ts";
import type { Logger, LogLevel, TokenSource } from "../../../src/ports.ts";
import { MemoryStore } from "../../../src/runtimes/standard-ports.ts";
import { checkedScriptedFetches, type Responder, type ScriptedFetch } from "../../support/scripted-fetch.ts";

const API = "https://partner.example";
const VEHICLES_URL = `${API}/api/rental/partner/vehicles`;
const T0 = 1_800_000_000_000;

// ---- fakes -----------------------------------------------------------------------------------

const fakeFetch = checkedScriptedFetches();

const json = (body: unknown, init: ResponseInit = {}): Responder => {
  return () =>
    new Response(JSON.stringify(body), {
      status: 200,
      ...init,
      headers: { "content-type": "application/json", ...(init.headers as Record<string, string>) },
    });
};
const status = (code: number, headers: Record<string, string> = {}): Responder => {
  return () => new Response(code === 304 ? null : "<html>partner error page</html>", { status: code, headers });
};
const networkError: Responder = () => Promise.reject(new TypeError("fetch failed"));

function tokenFor(n: number): AccessToken {
  return { value: `secret-token-value-${n}`, id: `tok-${n}`, expiresAt: T0 + 300_000, obtainedAt: T0 };
}

/** A TokenSource that counts calls; invalidate(id) of the current token makes the next one current. */
class FakeTokens implements TokenSource {
  n = 1;
  getTokenCalls = 0;
  invalidated: string[] = [];
  failWith: unknown;
  async getToken(): Promise<AccessToken> {
    this.getTokenCalls += 1;
    if (this.failWith !== undefined) throw this.failWith;
    return tokenFor(this.n);
  }
  async invalidate(id: string): Promise<void> {
    this.invalidated.push(id);
    if (id === `tok-${this.n}`) this.n += 1;
  }
}

function fakeClock(t = T0) {
  return {
    t,
    now() {
      return this.t;
    },
    advance(ms: number) {
      this.t += ms;
    },
  };
}

function recordingLog() {
  const lines: { level: LogLevel; event: string; fields?: Record<string, unknown> }[] = [];
  const log: Logger = { log: (level, event, fields) => lines.push({ level, event, ...(fields ? { fields } : {}) }) };
  return { log, lines };
}

const VEHICLES = [{ vin: "WME4530421Y000001" }, { vin: "WME4530421Y000002" }];

function setup(f: ScriptedFetch, over: Partial<PartnerClientDeps> = {}) {
  const clock = fakeClock();
  const tokens = new FakeTokens();
  const { log, lines } = recordingLog();
  const sleeps: number[] = [];
  const parsed: string[] = [];
  const breaker = new CircuitBreaker({ clock });
  const deps: PartnerClientDeps = {
    config: { apiUrl: API, partnerTimeoutMs: 1_000, partnerMaxBytes: 64 * 1024, partnerMaxVehicles: 50_000 },
    fetch: f.fetch,
    tokens,
    clock,
    log,
    breaker,
    parseBody: (text) => {
      parsed.push(text);
      const v = JSON.parse(text) as unknown[];
      return { vehicles: v, dropped: 1 };
    },
    random: () => 0.5,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...over,
  };
  return { deps, clock, tokens, lines, sleeps, parsed, breaker };
}

async function failure(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }
  throw new Error("expected a rejection");
}

/** Nothing that leaves the client may carry the bearer value. */
function expectNoTokenIn(...things: unknown[]) {
  for (const t of things) {
    const text = t instanceof Error ? `${t.message} ${JSON.stringify(t)} ${String(t.cause)}` : JSON.stringify(t);
    expect(text).not.toContain("secret-token-value");
  }
}

// ---- tests -----------------------------------------------------------------------------------

describe("fetchPartnerVehicles", () => {
  it("200: one bearer GET with manual redirects, vehicles from parseBody", async () => {
    const f = fakeFetch(json(VEHICLES));
    const { deps, tokens, parsed, lines } = setup(f);
    const out = await fetchPartnerVehicles(deps);
    expect(out.vehicles).toEqual(VEHICLES);
    expect(out.dropped).toBe(1);
    expect(out.timings).toEqual({ tokenMs: expect.any(Number), partnerMs: expect.any(Number) });
    expect(parsed).toEqual([JSON.stringify(VEHICLES)]);
    expect(f.requests).toHaveLength(1);
    const req = f.requests[0]!;
    expect(req.method).toBe("GET");
    expect(req.url).toBe(VEHICLES_URL);
    expect(req.redirect).toBe("manual");
    expect(req.headers.get("authorization")).toBe("Bearer secret-token-value-1");
    expect(req.headers.get("accept")).toBe("application/json");
    expect(tokens.getTokenCalls).toBe(1);
    expect(tokens.invalidated).toEqual([]);
    expectNoTokenIn(out, lines);
  });

  it("accepts a +json media type with parameters", async () => {
    const f = fakeFetch(
      json(VEHICLES, { headers: { "content-type": "application/vnd.sharenow+json; charset=utf-8" } }),
    );
    const { deps } = setup(f);
    await expect(fetchPartnerVehicles(deps)).resolves.toMatchObject({ vehicles: VEHICLES });
  });

  it("401 once: invalidates exactly that token, gets another, replays once", async () => {
    const f = fakeFetch(status(401, { "www-authenticate": 'Bearer error="invalid_token"' }), json(VEHICLES));
    const { deps, tokens, lines } = setup(f);
    const out = await fetchPartnerVehicles(deps);
    expect(out.vehicles).toEqual(VEHICLES);
    expect(f.requests).toHaveLength(2);
    expect(tokens.invalidated).toEqual(["tok-1"]);
    expect(tokens.getTokenCalls).toBe(2);
    expect(f.requests[0]!.headers.get("authorization")).toBe("Bearer secret-token-value-1");
    expect(f.requests[1]!.headers.get("authorization")).toBe("Bearer secret-token-value-2");
    expectNoTokenIn(lines);
  });

  it("permanent 401: exactly two partner calls, then partner_unauthorized (never loops)", async () => {
    const f = fakeFetch(status(401), status(401));
    const { deps, tokens, lines } = setup(f);
    const err = await failure(fetchPartnerVehicles(deps));
    expect(err.code).toBe("partner_unauthorized");
    expect(err.status).toBe(502);
    expect(f.requests).toHaveLength(2);
    expect(tokens.invalidated).toEqual(["tok-1"]);
    expect(tokens.getTokenCalls).toBe(2);
    expectNoTokenIn(err, lines);
  });

  it("401 when the broker refuses a new token (storm guard): no replay with the rejected token", async () => {
    const f = fakeFetch(status(401));
    const { deps, tokens, lines } = setup(f);
    tokens.invalidate = async (id) => {
      tokens.invalidated.push(id); // refused: the same token stays current
    };
    const err = await failure(fetchPartnerVehicles(deps));
    expect(err.code).toBe("partner_unauthorized");
    expect(f.requests).toHaveLength(1);
    expect(tokens.invalidated).toEqual(["tok-1"]);
    expect(tokens.getTokenCalls).toBe(2);
    expectNoTokenIn(err, lines);
  });

  it("403: partner_unauthorized without a replay or an invalidation", async () => {
    const f = fakeFetch(status(403));
    const { deps, tokens } = setup(f);
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_unauthorized");
    expect(f.requests).toHaveLength(1);
    expect(tokens.invalidated).toEqual([]);
  });

  it("429 with Retry-After: no partner call inside the window, a call again after it", async () => {
    const f = fakeFetch(status(429, { "retry-after": "10" }), json(VEHICLES));
    const { deps, clock, tokens } = setup(f);
    const first = await failure(fetchPartnerVehicles(deps));
    expect(first).toMatchObject({ code: "partner_rate_limited", status: 503, retryAfterS: 10 });
    expect(f.requests).toHaveLength(1);

    const inside = await failure(fetchPartnerVehicles(deps));
    expect(inside).toMatchObject({ code: "partner_rate_limited", retryAfterS: 10 });
    clock.advance(4_000);
    expect(await failure(fetchPartnerVehicles(deps))).toMatchObject({ code: "partner_rate_limited", retryAfterS: 6 });
    clock.advance(5_500);
    expect(await failure(fetchPartnerVehicles(deps))).toMatchObject({ code: "partner_rate_limited", retryAfterS: 1 });
    expect(f.requests).toHaveLength(1);
    // Inside the window not even a token is asked for.
    expect(tokens.getTokenCalls).toBe(1);

    clock.advance(500);
    await expect(fetchPartnerVehicles(deps)).resolves.toMatchObject({ vehicles: VEHICLES });
    expect(f.requests).toHaveLength(2);
  });

  it("503 with an HTTP-date Retry-After: partner_unavailable for the remaining window", async () => {
    const f = fakeFetch(status(503, { "retry-after": new Date(T0 + 20_000).toUTCString() }), json(VEHICLES));
    const { deps, clock } = setup(f);
    expect(await failure(fetchPartnerVehicles(deps))).toMatchObject({ code: "partner_unavailable", retryAfterS: 20 });
    clock.advance(15_000);
    expect(await failure(fetchPartnerVehicles(deps))).toMatchObject({ code: "partner_unavailable", retryAfterS: 5 });
    expect(f.requests).toHaveLength(1);
    clock.advance(5_000);
    await fetchPartnerVehicles(deps);
    expect(f.requests).toHaveLength(2);
  });

  it(`503 without Retry-After: a default window of ${DEFAULT_RETRY_AFTER_S} s, no retry`, async () => {
    const f = fakeFetch(status(503), json(VEHICLES));
    const { deps, clock, sleeps } = setup(f);
    expect(await failure(fetchPartnerVehicles(deps))).toMatchObject({
      code: "partner_unavailable",
      retryAfterS: DEFAULT_RETRY_AFTER_S,
    });
    expect(sleeps).toEqual([]);
    clock.advance(DEFAULT_RETRY_AFTER_S * 1000 - 1);
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_unavailable");
    expect(f.requests).toHaveLength(1);
    clock.advance(1);
    await fetchPartnerVehicles(deps);
    expect(f.requests).toHaveLength(2);
  });

  it("500: exactly two calls (one retry after a jittered delay), then partner_error", async () => {
    const f = fakeFetch(status(500), status(500));
    const { deps, sleeps, tokens } = setup(f);
    const err = await failure(fetchPartnerVehicles(deps));
    expect(err).toMatchObject({ code: "partner_error", status: 502 });
    expect(err.message).not.toContain("partner error page");
    expect(f.requests).toHaveLength(2);
    expect(sleeps).toHaveLength(1);
    expect(sleeps[0]).toBeGreaterThanOrEqual(RETRY_DELAY_MIN_MS);
    expect(sleeps[0]).toBeLessThan(RETRY_DELAY_MAX_MS);
    expect(tokens.invalidated).toEqual([]);
  });

  it("500 then 200: the retry succeeds", async () => {
    const f = fakeFetch(status(502), json(VEHICLES));
    const { deps } = setup(f);
    await expect(fetchPartnerVehicles(deps)).resolves.toMatchObject({ vehicles: VEHICLES });
    expect(f.requests).toHaveLength(2);
  });

  it("network errors: one retry, then partner_unavailable", async () => {
    const f = fakeFetch(networkError, networkError);
    const { deps, sleeps } = setup(f);
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_unavailable");
    expect(f.requests).toHaveLength(2);
    expect(sleeps).toHaveLength(1);
  });

  it("401 then 500 then 200: one replay and one retry are separate budgets", async () => {
    const f = fakeFetch(status(401), status(500), json(VEHICLES));
    const { deps, tokens } = setup(f);
    await expect(fetchPartnerVehicles(deps)).resolves.toMatchObject({ vehicles: VEHICLES });
    expect(f.requests).toHaveLength(3);
    expect(tokens.invalidated).toEqual(["tok-1"]);
  });

  it("other 4xx: partner_error, no retry", async () => {
    const f = fakeFetch(status(404));
    const { deps, sleeps } = setup(f);
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_error");
    expect(f.requests).toHaveLength(1);
    expect(sleeps).toEqual([]);
  });

  it("redirect: partner_redirect, the Location is never followed", async () => {
    const f = fakeFetch(status(302, { location: "https://evil.example/steal" }));
    const { deps } = setup(f);
    const err = await failure(fetchPartnerVehicles(deps));
    expect(err).toMatchObject({ code: "partner_redirect", status: 502 });
    expect(f.requests).toHaveLength(1);
    expect(f.requests[0]!.redirect).toBe("manual");
    expect(f.requests.every((r) => r.url === VEHICLES_URL)).toBe(true);
  });

  it("wrong content type: partner_response_invalid, the body is not parsed", async () => {
    const f = fakeFetch(
      () => new Response("<html>hi</html>", { status: 200, headers: { "content-type": "text/html" } }),
    );
    const { deps, parsed } = setup(f);
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_response_invalid");
    expect(parsed).toEqual([]);
    expect(f.requests).toHaveLength(1);
  });

  it("missing content type: partner_response_invalid", async () => {
    const f = fakeFetch(() => new Response(new Blob(["[]"]).stream(), { status: 200 }));
    const { deps } = setup(f);
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_response_invalid");
  });

  it("oversize by Content-Length: partner_response_invalid, no retry", async () => {
    let cancelled = false;
    const f = fakeFetch(() => {
      // Declares more than the cap; the body would never end, so only the header check can answer.
      const body = new ReadableStream<Uint8Array>({
        cancel() {
          cancelled = true;
        },
      });
      return new Response(body, {
        status: 200,
        headers: { "content-type": "application/json", "content-length": "2048" },
      });
    });
    const { deps, parsed } = setup(f, {
      config: { apiUrl: API, partnerTimeoutMs: 1_000, partnerMaxBytes: 1024, partnerMaxVehicles: 50_000 },
    });
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_response_invalid");
    expect(parsed).toEqual([]);
    expect(f.requests).toHaveLength(1);
    expect(cancelled).toBe(true);
  });

  it("oversize while streaming (no Content-Length): partner_response_invalid", async () => {
    const chunk = new TextEncoder().encode("x".repeat(512));
    const f = fakeFetch(() => {
      let n = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (n++ < 10) c.enqueue(chunk);
          else c.close();
        },
      });
      return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
    });
    const { deps } = setup(f, {
      config: { apiUrl: API, partnerTimeoutMs: 1_000, partnerMaxBytes: 1024, partnerMaxVehicles: 50_000 },
    });
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_response_invalid");
  });

  it("timeout while reading the body: partner_timeout, no retry", async () => {
    // Headers arrive, the body never ends; like a real fetch, the body errors when the request aborts.
    const f = fakeFetch((req) => {
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode("[{"));
          req.signal.addEventListener("abort", () => c.error(new DOMException("aborted", "AbortError")));
        },
      });
      return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
    });
    const { deps, sleeps } = setup(f, {
      config: { apiUrl: API, partnerTimeoutMs: 30, partnerMaxBytes: 1024, partnerMaxVehicles: 50_000 },
    });
    const err = await failure(fetchPartnerVehicles(deps));
    expect(err).toMatchObject({ code: "partner_timeout", status: 504 });
    expect(f.requests).toHaveLength(1);
    expect(sleeps).toEqual([]);
  });

  it("timeout before the headers: partner_timeout", async () => {
    const f = fakeFetch(
      (req) =>
        new Promise<Response>((_, reject) => {
          req.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
        }),
    );
    const { deps } = setup(f, {
      config: { apiUrl: API, partnerTimeoutMs: 30, partnerMaxBytes: 1024, partnerMaxVehicles: 50_000 },
    });
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_timeout");
  });

  it("parseBody's AppError propagates; any other parse failure becomes partner_response_invalid without its text", async () => {
    const f = fakeFetch(json(VEHICLES), json(VEHICLES));
    const { deps } = setup(f, {
      parseBody: () => {
        throw new AppError("partner_response_invalid", { detail: "not an array" });
      },
    });
    expect(await failure(fetchPartnerVehicles(deps))).toMatchObject({
      code: "partner_response_invalid",
      detail: "not an array",
    });
    const err = await failure(
      fetchPartnerVehicles({
        ...deps,
        parseBody: (t) => JSON.parse(`${t}partner-secret-text`) as never,
      }),
    );
    expect(err.code).toBe("partner_response_invalid");
    expect(err.message).not.toContain("partner-secret-text");
    expect(err.detail).toBeUndefined();
  });

  it("token errors propagate as they are, no partner call, and the breaker is not charged", async () => {
    const f = fakeFetch(json(VEHICLES));
    const { deps, tokens, breaker } = setup(f);
    const tokenError = new AppError("token_endpoint_unavailable", { retryAfterS: 7 });
    tokens.failWith = tokenError;
    for (let i = 0; i < 10; i++) expect(await failure(fetchPartnerVehicles(deps))).toBe(tokenError);
    expect(f.requests).toHaveLength(0);
    expect(breaker.state().state).toBe("closed");
    tokens.failWith = undefined;
    await fetchPartnerVehicles(deps);
    expect(f.requests).toHaveLength(1);
  });

  it("a token error on the replay propagates as it is", async () => {
    const f = fakeFetch(status(401));
    const { deps, tokens } = setup(f);
    const tokenError = new AppError("token_client_rejected");
    deps.tokens = {
      getToken: async () => {
        if (tokens.getTokenCalls++ === 0) return tokenFor(1);
        throw tokenError;
      },
      invalidate: (id) => tokens.invalidate(id),
    };
    expect(await failure(fetchPartnerVehicles(deps))).toBe(tokenError);
    expect(tokens.invalidated).toEqual(["tok-1"]);
    expect(f.requests).toHaveLength(1);
  });

  it("never puts the token in errors or logs, whatever the outcome", async () => {
    const f = fakeFetch(status(401), status(401), status(500), status(500), status(302), networkError, networkError);
    const { deps, lines } = setup(f);
    const errors = [
      await failure(fetchPartnerVehicles(deps)),
      await failure(fetchPartnerVehicles(deps)),
      await failure(fetchPartnerVehicles(deps)),
      await failure(fetchPartnerVehicles(deps)),
    ];
    expect(errors.map((e) => e.code)).toEqual([
      "partner_unauthorized",
      "partner_error",
      "partner_redirect",
      "partner_unavailable",
    ]);
    expectNoTokenIn(...errors, lines);
    expect(f.remaining()).toBe(0);
  });
});

describe("fetchPartnerVehicles with the circuit breaker", () => {
  it("opens after 5 failing calls: the 6th sends nothing; half-opens after the cool-down", async () => {
    const failing = Array.from({ length: 10 }, () => status(500));
    const f = fakeFetch(...failing, status(500), status(500), json(VEHICLES));
    const { deps, clock, breaker } = setup(f);
    for (let i = 0; i < 5; i++) expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_error");
    expect(f.requests).toHaveLength(10);
    expect(breaker.state().state).toBe("open");

    const open = await failure(fetchPartnerVehicles(deps));
    expect(open).toMatchObject({ code: "partner_circuit_open", status: 503, retryAfterS: 30 });
    expect(f.requests).toHaveLength(10);

    // Half-open: one trial goes out and fails: open again for twice as long.
    clock.advance(30_000);
    expect(breaker.state().state).toBe("half-open");
    expect((await failure(fetchPartnerVehicles(deps))).code).toBe("partner_error");
    expect(f.requests).toHaveLength(12);
    expect(await failure(fetchPartnerVehicles(deps))).toMatchObject({ code: "partner_circuit_open", retryAfterS: 60 });

    // The next trial succeeds: closed.
    clock.advance(60_000);
    await expect(fetchPartnerVehicles(deps)).resolves.toMatchObject({ vehicles: VEHICLES });
    expect(f.requests).toHaveLength(13);
    expect(breaker.state()).toEqual({ state: "closed", retryAt: undefined });
  });
});

describe("fetchPartnerVehicles: bodies too costly to parse", () => {
  it("refuses millions of tiny values before parseBody, as partner_response_invalid counted by the breaker", async () => {
    const many = `[${Array.from({ length: 1_000 }, () => "{}").join(",")}]`;
    const f = fakeFetch(() => new Response(many, { headers: { "content-type": "application/json" } }));
    const { deps, parsed, lines, breaker } = setup(f, {
      config: { apiUrl: API, partnerTimeoutMs: 1_000, partnerMaxBytes: 64 * 1024, partnerMaxVehicles: 100 },
    });
    const err = await failure(fetchPartnerVehicles(deps));
    expect(err).toMatchObject({
      code: "partner_response_invalid",
      status: 502,
      detail: "answer refused before parsing: more than 402 objects and arrays",
    });
    expect(parsed).toEqual([]); // never reached the validator
    expect(f.requests).toHaveLength(1); // a refused body is not fetched again at once
    expect(lines.find((l) => l.event === "partner_body_refused")).toMatchObject({
      level: "warn",
      fields: { bytes: many.length, containers: 403, values: 403 },
    });
    // Five such answers open the breaker like any other failure.
    for (let i = 0; i < 4; i++) {
      f.requests.length = 0;
      await failure(
        fetchPartnerVehicles({
          ...deps,
          fetch: fakeFetch(() => new Response(many, { headers: { "content-type": "application/json" } })).fetch,
        }),
      );
    }
    expect(breaker.state().state).toBe("open");
  });

  it("the same vehicles under the cap are parsed", async () => {
    const f = fakeFetch(json(VEHICLES));
    const { deps, parsed } = setup(f, {
      config: { apiUrl: API, partnerTimeoutMs: 1_000, partnerMaxBytes: 64 * 1024, partnerMaxVehicles: 2 },
    });
    await expect(fetchPartnerVehicles(deps)).resolves.toMatchObject({ vehicles: VEHICLES });
    expect(parsed).toHaveLength(1);
  });
});

describe("fetchPartnerVehicles with a persisted breaker", () => {
  /** A MemoryStore that logs what is written, in order with the parse. */
  class EventStore extends MemoryStore {
    readonly events: string[];
    constructor(events: string[]) {
      super();
      this.events = events;
    }
    override async put<T>(key: string, value: T): Promise<void> {
      const rec = value as StoredBreaker;
      this.events.push(`put ${key} ${rec.parsingSince === undefined ? "no mark" : "mark"}`);
      return super.put(key, value);
    }
    async sync(): Promise<void> {
      this.events.push("sync");
    }
  }

  it("the parse mark is stored and synced before parseBody runs, and cleared after it", async () => {
    const events: string[] = [];
    const store = new EventStore(events);
    const f = fakeFetch(json(VEHICLES));
    const { deps, clock } = setup(f);
    const breaker = new CircuitBreaker({ clock, store });
    const parseBody = (text: string) => {
      events.push("parse");
      return { vehicles: JSON.parse(text) as unknown[], dropped: 0 };
    };
    await expect(fetchPartnerVehicles({ ...deps, breaker, parseBody })).resolves.toMatchObject({ vehicles: VEHICLES });
    await breaker.flush();
    expect(events).toEqual([`put ${BREAKER_STORE_KEY} mark`, "sync", "parse", `put ${BREAKER_STORE_KEY} no mark`]);
  });

  it("an open breaker found in the store: no token, no partner call", async () => {
    const store = new MemoryStore();
    const f = fakeFetch();
    const { deps, clock, tokens } = setup(f);
    await store.put<StoredBreaker>(BREAKER_STORE_KEY, {
      v: 1,
      failures: 0,
      cooldownMs: 30_000,
      openUntil: clock.t + 30_000,
    });
    const fresh = new CircuitBreaker({ clock, store });
    const err = await failure(fetchPartnerVehicles({ ...deps, breaker: fresh }));
    expect(err).toMatchObject({ code: "partner_circuit_open", retryAfterS: 30 });
    expect(tokens.getTokenCalls).toBe(0);
    expect(f.requests).toHaveLength(0);
  });
});
