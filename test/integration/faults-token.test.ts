/**
 * Faults of the partner's token endpoint (the sandbox's real OAuth server, with fault switches),
 * seen through the Worker and the gateway object in workerd. Every case asserts the answer
 * (status, problem+json, headers), the number of token and partner requests, and (afterAll) that
 * nothing leaked. Timeouts run with the defaults: PARTNER_TOKEN_TIMEOUT_MS 5 s.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, vi } from "vitest";
import type { TokenFault } from "../../sandbox/index.ts";
import { advanceClock, gatewayStub, NOTHING, sandbox, sandboxCounts } from "../support/harness.ts";
import { scanSuite } from "../support/leak-scan.ts";
import { expectProblem } from "../support/problem.ts";

const scan = scanSuite({ logLines: true });

/** The gateway object's token state (never the token), recorded for the scan. */
async function tokenStatus() {
  const status = await gatewayStub().status();
  scan.see("gateway status", status);
  return status.token;
}

/**
 * `n` concurrent callers (paths by index) while the token endpoint never answers in full: each
 * gets 504 token_endpoint_timeout, after two token requests of 5 s each, one after the other.
 */
async function expectTwoTimedOutAttempts(n: number, path: (i: number) => string): Promise<void> {
  const started = Date.now();
  const answers = await Promise.all(Array.from({ length: n }, (_, i) => scan.fetch(path(i))));
  const elapsed = Date.now() - started;

  for (const a of answers) expectProblem(a, { status: 504, code: "token_endpoint_timeout", retryAfter: 1 });
  // Two attempts of 5 s each (a third could not end within the 15 s budget), one after the other.
  expect(elapsed).toBeGreaterThanOrEqual(9_900);
  expect(elapsed).toBeLessThan(15_000);
  expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 2 });
  expect(scan.maxInFlight(env.PARTNER_TOKEN_URL ?? "")).toBe(1);
}

/** With the token endpoint's answer altered by `fault`: 200, after one token request and one partner request. */
async function expectAccepted(fault: TokenFault): Promise<void> {
  await sandbox.faults({ token: fault });

  expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
  expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
}

/** The gateway object holds a valid token with `secondsLeft` in [min, max]. */
async function expectValidFor(min: number, max: number): Promise<void> {
  const token = await tokenStatus();
  expect(token.state).toBe("valid");
  expect(token.secondsLeft).toBeGreaterThanOrEqual(min);
  expect(token.secondsLeft).toBeLessThanOrEqual(max);
}

describe("token endpoint hangs", () => {
  it("20 callers get 504 token_endpoint_timeout within the retry budget; one token request in flight at a time; the object is not reset", async () => {
    await sandbox.faults({ token: { kind: "hang" } });
    // Mark this instance of the object: a reset (say, by blockConcurrencyWhile timing out) would lose the mark.
    const instances = new WeakSet<object>();
    await runInDurableObject(gatewayStub(), (instance) => {
      instances.add(instance);
    });

    await expectTwoTimedOutAttempts(20, (i) => `/v1/vehicles?limit=${i + 1}`);
    expect(scan.tokenRequests()).toHaveLength(2);
    const same = await runInDurableObject(gatewayStub(), (instance) => instances.has(instance));
    expect(same).toBe(true);
    const token = await tokenStatus();
    expect(token).toMatchObject({ state: "failing", lastError: "token_endpoint_timeout", tokenRequests: 2 });

    // The endpoint comes back: after the 1 s cool-down, one token request and the fleet.
    await sandbox.clearFaults();
    advanceClock(1_500);
    const ok = await scan.fetch("/v1/vehicles?limit=1");
    expect(ok.status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 3, vehicles: 1 });
  });

  it("headers at once, then the body stalls: the deadline covers the body too, 504 token_endpoint_timeout", async () => {
    await sandbox.faults({ token: { kind: "slowBody", chunkBytes: 16, intervalMs: 5, stallAfterBytes: 48 } });

    // The sandbox issues two real tokens, but their answers never end: neither is used.
    await expectTwoTimedOutAttempts(5, () => "/v1/vehicles");
  });
});

describe("token endpoint errors", () => {
  it("500: three attempts with backoff, then 502 token_endpoint_error; inside the cool-down no token request; the cool-down doubles", async () => {
    await sandbox.faults({ token: { kind: "status", status: 500 } });

    expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "token_endpoint_error", retryAfter: 1 });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 3 });
    // Inside the 1 s window: answered at once, nothing sent.
    const inside = await Promise.all(Array.from({ length: 10 }, () => scan.fetch("/v1/vehicles")));
    for (const a of inside) expectProblem(a, { status: 502, code: "token_endpoint_error", retryAfter: 1 });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 3 });

    // After it: one more refresh (three attempts), and the next window is twice as long.
    advanceClock(1_100);
    expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "token_endpoint_error", retryAfter: 2 });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 6 });

    await sandbox.clearFaults();
    advanceClock(2_100);
    expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 7, vehicles: 1 });
  });

  it("429 with Retry-After 30: 503 token_endpoint_unavailable with Retry-After; no token request inside the window", async () => {
    await sandbox.faults({ token: { kind: "tooManyRequests", retryAfter: 30 } });

    expectProblem(await scan.fetch("/v1/vehicles"), {
      status: 503,
      code: "token_endpoint_unavailable",
      retryAfter: 30,
    });
    // Retry-After is honoured at once: no second attempt.
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });

    advanceClock(20_000);
    const inside = await Promise.all(Array.from({ length: 10 }, () => scan.fetch("/v1/vehicles")));
    for (const a of inside) {
      expectProblem(a, { status: 503, code: "token_endpoint_unavailable", retryAfter: [9, 10] });
    }
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });

    await sandbox.clearFaults();
    advanceClock(10_500);
    expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 2, vehicles: 1 });
  });

  it("invalid_client: 502 token_client_rejected, remembered for 60 s: one token request a minute, never a storm", async () => {
    await sandbox.faults({ token: { kind: "invalidClient" } });

    const first = expectProblem(await scan.fetch("/v1/vehicles"), {
      status: 502,
      code: "token_client_rejected",
      retryAfter: 60,
    });
    expect(first.detail).toBe("invalid_client");
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });

    const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => scan.fetch(`/v1/vehicles?limit=${i + 1}`)));
    for (const a of burst) expectProblem(a, { status: 502, code: "token_client_rejected", retryAfter: [59, 60] });
    advanceClock(58_000);
    expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "token_client_rejected", retryAfter: [1, 2] });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });

    // A minute on, one more try (still rejected), and another minute of silence.
    advanceClock(3_000);
    expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "token_client_rejected", retryAfter: 60 });
    expectProblem(await scan.fetch("/v1/vehicles"), {
      status: 502,
      code: "token_client_rejected",
      retryAfter: [59, 60],
    });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 2 });
  });

  // Issue 12, item 2: the token endpoint's own text never reaches a client, only the log.
  it("a 400 whose error is the server's own text: 502 token_client_rejected with a fixed detail, for 60 s; the text only in the log", async () => {
    const text = "Account suspended - call +1 555 0100 or visit evil.example/pay";
    await sandbox.faults({
      token: {
        kind: "custom",
        status: 400,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ error: text }),
      },
    });
    for (const path of ["/v1/vehicles", "/v1/vehicles?limit=1"]) {
      const seen = await scan.fetch(path);
      const body = expectProblem(seen, { status: 502, code: "token_client_rejected", retryAfter: [59, 60] });
      expect(body.detail).toBe("unregistered OAuth error code");
      expect(seen.text).not.toContain("evil.example");
      expect(seen.text).not.toContain("Account suspended");
    }
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });
    // The operator can still read what the endpoint said (the scan's spy on console.warn, reused).
    const warned = vi.spyOn(console, "warn").mock.calls.map((args) => args.map(String).join(" "));
    expect(warned.some((l) => l.includes("token_request_failed") && l.includes("evil.example/pay"))).toBe(true);
  });

  it("200 with an error member (server_error): no token taken from it; transient, so three attempts, then 502 token_endpoint_error", async () => {
    await sandbox.faults({ token: { kind: "errorIn200" } });

    const body = expectProblem(await scan.fetch("/v1/vehicles"), {
      status: 502,
      code: "token_endpoint_error",
      retryAfter: 1,
    });
    // The registered §5.2 code may be named; the server's prose (error_description) never.
    expect(body.detail).toBe("server_error");
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 3 });
  });

  // Answers that are not a usable token: refused on the first attempt (the same request would get
  // the same answer), 502 token_response_invalid, and no partner request with whatever came.
  const invalidAnswers: { name: string; fault: TokenFault; issued: number }[] = [
    { name: "an HTML page with status 200", fault: { kind: "html" }, issued: 0 },
    { name: "an HTML page with status 404", fault: { kind: "html", status: 404 }, issued: 0 },
    { name: "JSON cut in the middle", fault: { kind: "invalidJson" }, issued: 0 },
    { name: "a body over 64 KiB (chunked)", fault: { kind: "oversize", mb: 1 }, issued: 0 },
    { name: "a body over 64 KiB (declared)", fault: { kind: "oversize", mb: 1, declareLength: true }, issued: 0 },
    { name: "expires_in 0", fault: { kind: "expiresIn", value: "zero" }, issued: 1 },
    { name: "token_type MAC", fault: { kind: "tokenType", tokenType: "MAC" }, issued: 1 },
    {
      name: "a JSON answer with text/plain",
      fault: {
        kind: "custom",
        status: 200,
        headers: { "content-type": "text/plain" },
        body: `{"access_token":"${"x".repeat(40)}","token_type":"Bearer","expires_in":300}`,
      },
      issued: 0,
    },
  ];
  // Issue 12, item 3: a real token whose lifetime ran out on the way is never sent to the partner.
  it("3 s to answer expires_in 2: 502 token_response_invalid, the expired token never sent; cool-down as usual", async () => {
    await sandbox.tokenTtl(2);
    await sandbox.faults({ token: { kind: "latency", ms: 3_000 } });

    expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "token_response_invalid", retryAfter: 1 });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });
    expect((await sandbox.counters()).token.issued).toBe(1);
    expect(scan.vehiclesRequests()).toHaveLength(0);
    expect((await tokenStatus()).state).toBe("failing");
    // Inside the cool-down nothing is sent, neither to the token endpoint nor to the partner.
    expectProblem(await scan.fetch("/v1/vehicles?limit=1"), {
      status: 502,
      code: "token_response_invalid",
      retryAfter: 1,
    });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });
  });

  it.each(invalidAnswers)(
    "$name: 502 token_response_invalid after one token request, nothing sent to the partner",
    async ({ fault, issued }) => {
      await sandbox.faults({ token: fault });

      expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "token_response_invalid", retryAfter: 1 });
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });
      expect((await sandbox.counters()).token.issued).toBe(issued);
      // No hot loop: inside the cool-down, nothing is sent.
      expectProblem(await scan.fetch("/v1/vehicles?limit=1"), {
        status: 502,
        code: "token_response_invalid",
        retryAfter: 1,
      });
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1 });
      expect(scan.vehiclesRequests()).toHaveLength(0);
    },
  );
});

describe("token answers that are unusual but valid", () => {
  // The sandbox issues 120 s tokens here, so the lifetime the gateway assumes tells where it came from.
  beforeEach(() => sandbox.tokenTtl(120));

  it("expires_in missing: the token is used with the default lifetime (PARTNER_TOKEN_DEFAULT_EXPIRES_S, 300 s)", async () => {
    await expectAccepted({ kind: "expiresIn", value: "missing" });
    await expectValidFor(295, 300);
  });

  it('expires_in as a string ("120"): accepted, and read as 120 s', async () => {
    await expectAccepted({ kind: "expiresIn", value: "string" });
    await expectValidFor(115, 120);
  });

  it('token_type "bearer" in lower case: accepted (RFC 6749 §5.1, case-insensitive)', async () => {
    await expectAccepted({ kind: "tokenType", tokenType: "bearer" });
  });
});
