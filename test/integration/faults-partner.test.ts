/**
 * Faults of the partner's vehicles API, seen through the Worker and the gateway object in workerd,
 * against the sandbox (real OAuth server). Every case asserts the answer (status, problem+json,
 * headers), the number of token and partner requests (sandbox counters), and (afterAll) that
 * nothing leaked. Timeouts run with the defaults: PARTNER_TIMEOUT_MS 10 s.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { VehiclesFault } from "../../sandbox/index.ts";
import { advanceClock, gatewayStub, NOTHING, sandbox, sandboxCounts } from "../support/harness.ts";
import { scanSuite } from "../support/leak-scan.ts";
import { expectNoInternals, expectProblem } from "../support/problem.ts";
import { waitFor } from "../support/wait.ts";

const scan = scanSuite({ logLines: true });

/** The Authorization headers the gateway sent to the vehicles URL in this test, in order. */
function bearersSent(): (string | undefined)[] {
  return scan.vehiclesRequests().map((r) => r.authorization);
}

describe("partner 401", () => {
  it("after revocation: one refresh, one replay with the new token, 200", async () => {
    expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
    expect((await sandbox.revokeAll()).revoked).toBeGreaterThanOrEqual(1);

    // Past TTL + stale window (150 s), before the token's own refresh time (about 240 s).
    advanceClock(160_000);
    const again = await scan.fetch("/v1/vehicles?limit=1");
    expect(again.status).toBe(200);
    expectNoInternals(again);

    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 2, vehicles: 3 });
    expect((await sandbox.counters()).vehicles.rejected).toMatchObject({ revoked: 1 });
    const [t1, t1again, t2] = bearersSent();
    expect(t1again).toBe(t1);
    expect(t2).toMatch(/^Bearer /);
    expect(t2).not.toBe(t1);
    const status = await gatewayStub().status();
    scan.see("gateway status", status);
    expect(status.token.forcedRefreshes).toBe(1);
  });

  it("permanent 401: no loop, exactly 2 partner calls (token, fresh token), then 502 partner_unauthorized", async () => {
    await sandbox.faults({ vehicles: { kind: "unauthorized" } });

    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => scan.fetch(`/v1/vehicles?limit=${i + 1}`)));
    for (const a of answers) expectProblem(a, { status: 502, code: "partner_unauthorized", retryAfter: "absent" });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 2, vehicles: 2 });
    const [first, replay] = bearersSent();
    expect(replay).not.toBe(first);

    // Right after: the storm guard allows no second forced refresh within 10 s, so no token request,
    // and no pointless replay with the token just rejected: one partner call.
    expectProblem(await scan.fetch("/v1/vehicles"), {
      status: 502,
      code: "partner_unauthorized",
      retryAfter: "absent",
    });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 2, vehicles: 3 });
  });
});

describe("partner asks us to wait", () => {
  const inOneMinute = () => new Date(Date.now() + 45_000).toUTCString();
  const cases: { name: string; fault: () => VehiclesFault; code: string; retryAfter: number | [number, number] }[] = [
    {
      name: "429 with Retry-After 20",
      fault: () => ({ kind: "tooManyRequests", retryAfter: 20 }),
      code: "partner_rate_limited",
      retryAfter: 20,
    },
    {
      name: "503 with Retry-After 15",
      fault: () => ({ kind: "status", status: 503, retryAfter: 15 }),
      code: "partner_unavailable",
      retryAfter: 15,
    },
    {
      name: "503 with Retry-After as an HTTP-date 45 s ahead",
      fault: () => ({ kind: "status", status: 503, retryAfter: inOneMinute() }),
      code: "partner_unavailable",
      retryAfter: [44, 46],
    },
    {
      name: "503 without Retry-After (30 s assumed)",
      fault: () => ({ kind: "status", status: 503 }),
      code: "partner_unavailable",
      retryAfter: 30,
    },
    {
      name: "429 with Retry-After of 11 days (clamped to an hour)",
      fault: () => ({ kind: "tooManyRequests", retryAfter: 999_999 }),
      code: "partner_rate_limited",
      retryAfter: 3600,
    },
  ];

  it.each(cases)(
    "$name: 503 $code with Retry-After; no partner or token request inside the window",
    async ({ fault, code, retryAfter }) => {
      await sandbox.faults({ vehicles: fault() });

      expectProblem(await scan.fetch("/v1/vehicles"), { status: 503, code, retryAfter });
      // No retry of a 429/503: the partner said when.
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });

      const waitS = typeof retryAfter === "number" ? retryAfter : retryAfter[0];
      advanceClock((waitS - 5) * 1000);
      const inside = await Promise.all(Array.from({ length: 10 }, () => scan.fetch("/v1/vehicles?limit=2")));
      for (const a of inside) expectProblem(a, { status: 503, code, retryAfter: [1, 7] });
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });

      await sandbox.clearFaults();
      advanceClock(7_000);
      expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
      // A window longer than the token's life (300 s) ends with a token request too, of course.
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: waitS + 2 > 240 ? 2 : 1, vehicles: 2 });
    },
  );
});

describe("partner fails", () => {
  it("500: one retry, then 502 partner_error; after 5 failed fetches the breaker opens (503 partner_circuit_open, no call) until a trial succeeds", async () => {
    await sandbox.faults({ vehicles: { kind: "status", status: 500 } });

    expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "partner_error", retryAfter: "absent" });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 2 });
    for (let i = 2; i <= 5; i++) {
      expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "partner_error", retryAfter: "absent" });
    }
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 10 });

    // Open: answered at once with the cool-down, nothing sent.
    const open = await Promise.all(Array.from({ length: 10 }, () => scan.fetch("/v1/vehicles")));
    for (const a of open) expectProblem(a, { status: 503, code: "partner_circuit_open", retryAfter: [29, 30] });
    advanceClock(20_000);
    expectProblem(await scan.fetch("/v1/vehicles"), { status: 503, code: "partner_circuit_open", retryAfter: [9, 10] });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 10 });
    const status = await gatewayStub().status();
    scan.see("gateway status", status);
    expect(status.breaker.state).toBe("open");

    // Half-open after the cool-down: one trial goes out, succeeds, and closes the breaker.
    await sandbox.clearFaults();
    advanceClock(11_000);
    expect((await scan.fetch("/v1/vehicles?limit=1")).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 11 });
    const after = await gatewayStub().status();
    scan.see("gateway status", after);
    expect(after.breaker.state).toBe("closed");
  });

  it("a network failure of one call (connection dropped) is retried once: 200", async () => {
    // A hang that is released at once: the connection resets, as from a crashing upstream.
    await sandbox.faults({ vehicles: { kind: "hang", times: 1 } });
    const pending = scan.fetch("/v1/vehicles?limit=1");
    await waitFor("the hung partner request", async () => (await sandboxCounts()).vehicles >= 1, 3_000);
    await sandbox.clearFaults();
    const a = await pending;
    expect(a.status).toBe(200);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 2 });
  });
});

describe("partner redirects", () => {
  const targets = [
    { status: 301 as const, where: "another origin" },
    { status: 302 as const, where: "another origin" },
    { status: 303 as const, where: "the same origin" },
    { status: 307 as const, where: "another origin" },
    { status: 308 as const, where: "the same origin" },
  ];
  it.each(targets)(
    "$status to $where: refused, 502 partner_redirect; nothing reaches the target; no retry",
    async ({ status, where }) => {
      const location = where === "the same origin" ? `${env.SANDBOX_URL}/steal` : undefined;
      await sandbox.faults({ vehicles: { kind: "redirect", status, ...(location ? { location } : {}) } });

      expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code: "partner_redirect", retryAfter: "absent" });
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
      expect((await sandbox.counters()).steal).toEqual({ total: 0, withAuthorization: 0 });
      for (const r of scan.outbound) expect(r.url).not.toContain("/steal");
    },
  );
});

describe("partner answers that are not a fleet", () => {
  const fleetOf = (n: number) => `[${Array.from({ length: n }, () => "{}").join(",")}]`;
  const cases: { name: string; fault: VehiclesFault; code?: string }[] = [
    { name: "JSON cut in the middle", fault: { kind: "invalidJson" } },
    { name: "an HTML page with status 200", fault: { kind: "html" } },
    {
      name: "a JSON array sent as text/plain",
      fault: { kind: "custom", status: 200, headers: { "content-type": "text/plain" }, body: "[]" },
    },
    {
      name: "a JSON array with no content type",
      fault: { kind: "custom", status: 200, body: "[]" },
    },
    {
      name: "an object without a vehicles array",
      fault: { kind: "custom", status: 200, headers: { "content-type": "application/json" }, body: '{"data":[]}' },
    },
    {
      name: "JSON null",
      fault: { kind: "custom", status: 200, headers: { "content-type": "application/json" }, body: "null" },
    },
    {
      name: "only malformed vehicles (a schema drift)",
      fault: {
        kind: "custom",
        status: 200,
        headers: { "content-type": "application/json" },
        body: '[{"vin":1,"position":"here"},{"id":"x"}]',
      },
    },
    {
      name: "50,001 vehicles (more than PARTNER_MAX_VEHICLES)",
      fault: { kind: "custom", status: 200, headers: { "content-type": "application/json" }, body: fleetOf(50_001) },
    },
    { name: "20 MiB, chunked (over PARTNER_MAX_BYTES 16 MiB)", fault: { kind: "oversize", mb: 20 } },
    { name: "20 MiB, declared in Content-Length", fault: { kind: "oversize", mb: 20, declareLength: true } },
    {
      name: "a 404 with an HTML body",
      fault: { kind: "custom", status: 404, headers: { "content-type": "text/html" }, body: "<html>Not here</html>" },
      code: "partner_error",
    },
  ];
  it.each(cases.map((c) => ({ ...c, code: c.code ?? "partner_response_invalid" })))(
    "$name: 502 $code after one call, no retry",
    async ({ fault, code }) => {
      await sandbox.faults({ vehicles: fault });

      expectProblem(await scan.fetch("/v1/vehicles"), { status: 502, code, retryAfter: "absent" });
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
    },
  );
});

// Issue 12, item 2, for the partner: its own words never reach a client, whatever the status.
describe("partner text in error answers", () => {
  const text = "Account suspended - call +1 555 0100 or visit evil.example/pay";
  it.each([
    { status: 400, code: "partner_error" },
    { status: 403, code: "partner_unauthorized" },
    { status: 200, code: "partner_response_invalid" },
  ])("a JSON $status carrying the partner's message: 502 $code with our own detail only", async ({ status, code }) => {
    await sandbox.faults({
      vehicles: {
        kind: "custom",
        status,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ error: text, message: text, detail: text }),
      },
    });
    const seen = await scan.fetch("/v1/vehicles");
    expectProblem(seen, { status: 502, code, retryAfter: "absent" });
    expect(seen.text).not.toContain("evil.example");
    expect(seen.text).not.toContain("Account suspended");
  });
});

describe("partner bodies too costly to parse (millions of tiny values under the byte cap)", () => {
  it("16 MiB of [{},{},…] (5.6 million items): 502 partner_response_invalid before the parse, one call, the object not reset", async () => {
    await sandbox.faults({ vehicles: { kind: "manyItems" } });
    const instances = new WeakSet<object>();
    await runInDurableObject(gatewayStub(), (instance) => {
      instances.add(instance);
    });

    const body = expectProblem(await scan.fetch("/v1/vehicles"), {
      status: 502,
      code: "partner_response_invalid",
      retryAfter: "absent",
    });
    expect(body.detail).toBe("answer refused before parsing: more than 200002 objects and arrays");
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
    expect((await sandbox.counters()).vehicles.byStatus).toEqual({ 200: 1 });
    expect(await runInDurableObject(gatewayStub(), (instance) => instances.has(instance))).toBe(true);
  });

  it("five refused bodies open the breaker: then nothing is fetched until the cool-down ends", async () => {
    // 250,000 empty objects (750 KB): over the 200,002 containers that 50,000 vehicles may hold.
    await sandbox.faults({ vehicles: { kind: "manyItems", count: 250_000 } });
    for (let i = 1; i <= 5; i++) {
      expectProblem(await scan.fetch("/v1/vehicles"), {
        status: 502,
        code: "partner_response_invalid",
        retryAfter: "absent",
      });
      expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: i });
    }
    const answers = await Promise.all(Array.from({ length: 10 }, () => scan.fetch("/v1/vehicles?limit=3")));
    for (const a of answers) expectProblem(a, { status: 503, code: "partner_circuit_open", retryAfter: [29, 30] });
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 5 });
  });
});

describe("partner timeouts cover headers and body", () => {
  it("headers never come: 504 partner_timeout after PARTNER_TIMEOUT_MS (10 s), no retry", async () => {
    await sandbox.faults({ vehicles: { kind: "hang" } });

    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 5 }, () => scan.fetch("/v1/vehicles")));
    const elapsed = Date.now() - started;
    for (const a of answers) expectProblem(a, { status: 504, code: "partner_timeout", retryAfter: "absent" });
    expect(elapsed).toBeGreaterThanOrEqual(9_900);
    expect(elapsed).toBeLessThan(13_000);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("headers at once, then the body stalls: the same deadline covers the body, 504 partner_timeout at 10 s", async () => {
    await sandbox.faults({ vehicles: { kind: "slowBody", chunkBytes: 1024, intervalMs: 5, stallAfterBytes: 8192 } });

    const started = Date.now();
    const a = await scan.fetch("/v1/vehicles");
    const elapsed = Date.now() - started;
    expectProblem(a, { status: 504, code: "partner_timeout", retryAfter: "absent" });
    expect(elapsed).toBeGreaterThanOrEqual(9_900);
    expect(elapsed).toBeLessThan(13_000);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });

  it("a slow body that completes within the deadline is accepted", async () => {
    await sandbox.faults({ vehicles: { kind: "slowBody", chunkBytes: 128 * 1024, intervalMs: 100, times: 1 } });

    const a = await scan.fetch("/v1/vehicles?limit=5");
    expect(a.status).toBe(200);
    expect(a.json<{ total: number }>().total).toBe(2000);
    expect(await sandboxCounts()).toEqual({ ...NOTHING, token: 1, vehicles: 1 });
  });
});
