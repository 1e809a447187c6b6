/**
 * HTTP semantics of the vehicles endpoint in workerd against the sandbox: validators and 304,
 * Cache-Status (RFC 9211), Age, Cache-Control, HEAD, nosniff, the VIN route, 405 with Allow,
 * CORS, and problem+json for every error. Every test asserts what reached the partner.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  advanceClock,
  cachedFetchedAt,
  coldStartEachCapturingLogs,
  expectNoLeaks,
  type Observed,
  observe,
  sandboxCounts,
  type VehicleBody,
  type VehicleListBody,
} from "../support/harness.ts";
import { expectProblem } from "../support/problem.ts";
import { waitFor } from "../support/wait.ts";

const ALLOWED_ORIGIN = "https://app.example.com";
const OTHER_ORIGIN = "https://elsewhere.example.org";
const ROUTES = ["/v1/vehicles", "/v1/vehicles/WME4533911K123456", "/health"] as const;

/** A request through the Worker; every answer of this suite must carry nosniff. */
async function req(path: string, init?: RequestInit): Promise<Observed> {
  const o = await observe(path, init);
  expect(o.headers.get("x-content-type-options"), `nosniff on ${init?.method ?? "GET"} ${path}`).toBe("nosniff");
  return o;
}

async function json<T>(path: string, init?: RequestInit): Promise<Observed & { body: T }> {
  const o = await req(path, init);
  return { ...o, body: JSON.parse(o.text) as T };
}

const corsHeaders = (h: Headers) => [...h.keys()].filter((k) => k.startsWith("access-control-"));

const logs = coldStartEachCapturingLogs();

afterEach(async () => {
  await expectNoLeaks({ extra: logs() });
});

describe("vehicles endpoint: HTTP semantics", () => {
  it("refuses bad input before any tier is touched: nothing reaches the partner", async () => {
    const bad: [string, RequestInit | undefined, number, string][] = [
      ["/v1/vehicles?foo=1", undefined, 400, "invalid_parameter"],
      ["/v1/vehicles?limit=0", undefined, 400, "invalid_parameter"],
      ["/v1/vehicles/abc", undefined, 400, "invalid_vin"],
      ["/v1/vehicles", { headers: { "content-length": "3" } }, 413, "body_not_allowed"],
      [`/v1/vehicles?bbox=${"1".repeat(3000)}`, undefined, 414, "query_too_large"],
      ["/v2/vehicles", undefined, 404, "not_found"],
      ["/v1/vehicles", { method: "POST" }, 405, "method_not_allowed"],
    ];
    for (const [path, init, status, code] of bad) expectProblem(await req(path, init), { status: status, code: code });
    expect(await sandboxCounts()).toEqual({ token: 0, vehicles: 0, unexpected: 0, steal: 0 });
  });

  it("ETag and If-None-Match: 304 with no body and the same ETag; filters and stale views differ", async () => {
    const first = await json<VehicleListBody>("/v1/vehicles?limit=5");
    expect(first.status).toBe(200);
    const etag = first.headers.get("etag");
    expect(etag).toMatch(/^W\/"[^"]+"$/);

    const notModified = await req("/v1/vehicles?limit=5", { headers: { "if-none-match": etag as string } });
    expect(notModified.status).toBe(304);
    expect(notModified.text).toBe("");
    expect(notModified.headers.get("etag")).toBe(etag);
    expect(notModified.headers.get("content-type")).toBeNull();
    expect(notModified.headers.get("cache-status")).toMatch(/^gateway-memory; hit; ttl=\d+$/);
    expect(notModified.headers.get("cache-control")).toMatch(/^public, max-age=\d+/);
    expect(notModified.headers.get("age")).toMatch(/^\d+$/);

    // Weak comparison (RFC 9110 §13.1.2), lists and `*`.
    for (const inm of [etag!.replace(/^W\//, ""), `"nope", ${etag}`, "*"]) {
      const r = await req("/v1/vehicles?limit=5", { headers: { "if-none-match": inm } });
      expect(r.status, inm).toBe(304);
      expect(r.text).toBe("");
    }
    const changed = await req("/v1/vehicles?limit=5", { headers: { "if-none-match": '"something-else"' } });
    expect(changed.status).toBe(200);
    expect(changed.headers.get("etag")).toBe(etag);

    // The same query spelled differently is the same representation; another filter is not.
    const same = await req("/v1/vehicles?limit=05");
    expect(same.headers.get("etag")).toBe(etag);
    const a = await req("/v1/vehicles?fuelType=electric,diesel&seats=5,4&limit=3");
    const b = await req("/v1/vehicles?limit=3&seats=4,5&fuelType=DIESEL,ELECTRIC");
    expect(a.headers.get("etag")).toBe(b.headers.get("etag"));
    expect(a.text).toBe(b.text);
    expect(a.headers.get("etag")).not.toBe(etag);

    // HEAD honours If-None-Match too.
    const head = await req("/v1/vehicles?limit=5", { method: "HEAD", headers: { "if-none-match": etag as string } });
    expect(head.status).toBe(304);

    // The single-vehicle route has its own validator and answers 304 the same way.
    const vin = first.body.vehicles[0]!.vin;
    const one = await req(`/v1/vehicles/${vin}`);
    const vinTag = one.headers.get("etag") as string;
    expect(vinTag).toMatch(/^W\/"[^"]+"$/);
    expect(vinTag).not.toBe(etag);
    const one304 = await req(`/v1/vehicles/${vin}`, { headers: { "if-none-match": vinTag } });
    expect(one304.status).toBe(304);
    expect(one304.text).toBe("");
    expect(one304.headers.get("etag")).toBe(vinTag);

    // A stale answer is another representation (`stale: true`): its validator differs.
    advanceClock(31_000);
    const stale = await req("/v1/vehicles?limit=5", { headers: { "if-none-match": etag as string } });
    expect(stale.status).toBe(200);
    expect(stale.headers.get("etag")).not.toBe(etag);
    expect((JSON.parse(stale.text) as VehicleListBody).stale).toBe(true);
    await waitFor("the background refresh", async () => (await sandboxCounts()).vehicles === 2);

    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 2, unexpected: 0, steal: 0 });
  });

  it("Cache-Status names the tier that answered (RFC 9211), with Age and Cache-Control to match", async () => {
    const cold = await req("/v1/vehicles?limit=1");
    // `stored` for the Cache API only once this isolate has read an entry back (a new isolate has not).
    expect(cold.headers.get("cache-status")).toBe(
      "gateway-object; fwd=miss; stored, gateway-cache; fwd=miss, gateway-memory; fwd=miss; stored",
    );
    expect(cold.headers.get("age")).toBe("0");
    expect(cold.headers.get("cache-control")).toBe(
      "public, max-age=30, stale-while-revalidate=120, stale-if-error=120",
    );
    expect(cold.headers.get("vary")?.toLowerCase()).toContain("origin");

    const warm = await req("/v1/vehicles?limit=1");
    expect(warm.headers.get("cache-status")).toMatch(/^gateway-memory; hit; ttl=(29|30)$/);

    advanceClock(10_000);
    const later = await req("/v1/vehicles?limit=1");
    expect(later.headers.get("cache-status")).toMatch(/^gateway-memory; hit; ttl=(19|20)$/);
    const age = Number(later.headers.get("age"));
    expect(age).toBeGreaterThanOrEqual(10);
    expect(age).toBeLessThanOrEqual(11);
    // max-age counts down with Age: together they make the TTL.
    const maxAge = Number(/max-age=(\d+)/.exec(later.headers.get("cache-control") ?? "")?.[1]);
    expect(maxAge + age).toBe(30);

    // With isolate memory bypassed, this data centre's Cache API answers: the rendered answer the
    // cold request stored, or (rendered answers skipped too) the snapshot.
    await waitFor("the L2 entry", async () => (await cachedFetchedAt()) !== undefined);
    const l2 = await req("/v1/vehicles?limit=1", { headers: { "x-gateway-bypass": "memory" } });
    expect(l2.status).toBe(200);
    expect(l2.headers.get("cache-status")).toMatch(
      /^gateway-cache; hit; ttl=(19|20); detail=response, gateway-memory; fwd=bypass$/,
    );
    expect(Number(l2.headers.get("age"))).toBe(age);
    const snapshot = await req("/v1/vehicles?limit=1", { headers: { "x-gateway-bypass": "memory,responses" } });
    expect(snapshot.headers.get("cache-status")).toMatch(
      /^gateway-cache; hit; ttl=(19|20), gateway-memory; fwd=bypass$/,
    );
    expect(Number(snapshot.headers.get("age"))).toBe(age);

    // Past the TTL, within the stale window: stale, a negative ttl, and must-revalidate downstream.
    advanceClock(25_000);
    const stale = await req("/v1/vehicles?limit=1");
    expect(stale.headers.get("cache-status")).toMatch(/^gateway-memory; hit; ttl=-\d+$/);
    expect(stale.headers.get("cache-control")).toBe("public, max-age=0, must-revalidate");
    expect(Number(stale.headers.get("age"))).toBeGreaterThanOrEqual(35);
    await waitFor("the background refresh", async () => (await sandboxCounts()).vehicles === 2);
    await waitFor("the refreshed snapshot in memory", async () => {
      const r = await req("/v1/vehicles?limit=1");
      return /^gateway-memory; hit; ttl=(29|30)$/.test(r.headers.get("cache-status") ?? "");
    });

    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 2, unexpected: 0, steal: 0 });
  });

  it("HEAD answers with the GET's headers and no body", async () => {
    const got = await req("/v1/vehicles?limit=2");
    for (const path of [
      "/v1/vehicles?limit=2",
      `/v1/vehicles/${(JSON.parse(got.text) as VehicleListBody).vehicles[0]!.vin}`,
      "/health",
    ]) {
      const g = await req(path);
      const h = await req(path, { method: "HEAD" });
      expect(h.status, path).toBe(200);
      expect(h.text, path).toBe("");
      // The clock may tick between the two: compare ttl and max-age as shapes.
      const timeless = (v: string | null) => v?.replace(/(ttl|max-age)=-?\d+/g, "$1=N") ?? null;
      for (const name of ["content-type", "etag", "cache-control", "cache-status", "vary", "age"]) {
        expect(timeless(h.headers.get(name)), `${name} of HEAD ${path}`).toBe(timeless(g.headers.get(name)));
      }
    }
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("/v1/vehicles/{vin}: 200 for a known VIN (any case), 404 for an unknown valid one, 400 for a malformed one", async () => {
    const list = await json<VehicleListBody>("/v1/vehicles?limit=3");
    const known = list.body.vehicles[1]!;
    const one = await json<VehicleBody>(`/v1/vehicles/${known.vin}`);
    expect(one.status).toBe(200);
    expect(one.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(one.body).toEqual({ vehicle: known, fetchedAt: list.body.fetchedAt, stale: false });
    const lower = await json<VehicleBody>(`/v1/vehicles/${known.vin.toLowerCase()}`);
    expect(lower.body.vehicle).toEqual(known);
    expect(lower.headers.get("etag")).toBe(one.headers.get("etag"));

    // A well-formed VIN that is not in the fleet (the sandbox's VINs never start with AAA).
    const missing = expectProblem(await req("/v1/vehicles/AAA4533911K123456"), {
      status: 404,
      code: "vehicle_not_found",
    });
    expect(missing.instance).toBe("/v1/vehicles/AAA4533911K123456");

    for (const vin of [
      "abc",
      "WME4533911K12345",
      "WME4533911K1234567",
      "WME4533911K12345O",
      "WMEI533911K123456",
      "WME-533911K123456",
    ]) {
      expectProblem(await req(`/v1/vehicles/${vin}`), { status: 400, code: "invalid_vin" });
    }
    // The VIN route takes no query.
    const q = expectProblem(await req(`/v1/vehicles/${known.vin}?limit=1`), { status: 400, code: "invalid_parameter" });
    expect(q.detail).toMatch(/no query/);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("405 with Allow for POST, PUT, DELETE and PATCH on every route, with or without a body", async () => {
    for (const path of ROUTES) {
      for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
        for (const body of [undefined, '{"vin":"WME4533911K123456"}']) {
          const init: RequestInit =
            body === undefined ? { method } : { method, body, headers: { "content-type": "application/json" } };
          const o = await req(path, init);
          const p = expectProblem(o, { status: 405, code: "method_not_allowed" });
          expect(p.instance).toBe(path);
          const allow = (o.headers.get("allow") ?? "").split(",").map((s) => s.trim());
          expect(allow.sort(), `${method} ${path}`).toEqual(["GET", "HEAD", "OPTIONS"]);
        }
      }
    }
    expect(await sandboxCounts()).toEqual({ token: 0, vehicles: 0, unexpected: 0, steal: 0 });
  });

  it("CORS: a preflight from the configured origin gets CORS headers, one from another origin none", async () => {
    const preflight = (origin: string, path = "/v1/vehicles") =>
      req(path, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "GET", "access-control-request-headers": "if-none-match" },
      });
    for (const path of ["/v1/vehicles", "/v1/vehicles/WME4533911K123456"]) {
      const ok = await preflight(ALLOWED_ORIGIN, path);
      expect(ok.status).toBe(204);
      expect(ok.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
      expect(ok.headers.get("access-control-allow-methods")?.split(",")).toEqual(
        expect.arrayContaining(["GET", "HEAD"]),
      );
      expect(ok.headers.get("access-control-allow-methods")).not.toMatch(/POST|PUT|DELETE|PATCH/);
      expect(ok.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("if-none-match");
      expect(ok.headers.get("access-control-max-age")).toBe("600");
      expect(ok.headers.get("vary")?.toLowerCase()).toContain("origin");

      const other = await preflight(OTHER_ORIGIN, path);
      expect(other.status).toBeLessThan(500);
      expect(corsHeaders(other.headers), `preflight from another origin on ${path}`).toEqual([]);
    }

    // Actual requests: the configured origin can read the answer and its caching headers; another cannot.
    const ok = await req("/v1/vehicles?limit=1", { headers: { origin: ALLOWED_ORIGIN } });
    expect(ok.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
    expect(ok.headers.get("access-control-expose-headers")?.split(",")).toEqual(
      expect.arrayContaining(["etag", "cache-status", "age"]),
    );
    const other = await req("/v1/vehicles?limit=1", { headers: { origin: OTHER_ORIGIN } });
    expect(other.status).toBe(200);
    expect(corsHeaders(other.headers)).toEqual([]);
    const none = await req("/v1/vehicles?limit=1");
    expect(corsHeaders(none.headers)).toEqual([]);

    // Errors too: the configured origin may read them (else a browser reports a CORS failure instead).
    const errors: [string, Record<string, string>, number, string][] = [
      ["/v1/vehicles?limit=x", {}, 400, "invalid_parameter"],
      [`/v1/vehicles?bbox=${"1".repeat(3000)}`, {}, 414, "query_too_large"],
      ["/v1/vehicles", { "content-length": "2" }, 413, "body_not_allowed"],
      ["/v1/vehicles/AAA4533911K123456", {}, 404, "vehicle_not_found"],
    ];
    for (const [path, headers, status, code] of errors) {
      const allowed = await req(path, { headers: { ...headers, origin: ALLOWED_ORIGIN } });
      expectProblem(allowed, { status: status, code: code });
      expect(allowed.headers.get("access-control-allow-origin"), path.slice(0, 40)).toBe(ALLOWED_ORIGIN);
      const denied = await req(path, { headers: { ...headers, origin: OTHER_ORIGIN } });
      expectProblem(denied, { status: status, code: code });
      expect(corsHeaders(denied.headers)).toEqual([]);
    }
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("an unknown path is a 404 problem+json", async () => {
    for (const path of [
      "/nothing-here",
      "/v1",
      "/v2/vehicles",
      "/v1/vehicle",
      "/v1/vehicles/WME4533911K123456/extra",
      "/health/x",
    ]) {
      const p = expectProblem(await req(path), { status: 404, code: "not_found" });
      expect(p.instance).toBe(path);
    }
    expect(await sandboxCounts()).toEqual({ token: 0, vehicles: 0, unexpected: 0, steal: 0 });
  });

  it("a body on GET or HEAD is refused with 413", async () => {
    for (const method of ["GET", "HEAD"]) {
      for (const path of ["/v1/vehicles", "/v1/vehicles/WME4533911K123456", "/health"]) {
        const bodies: Record<string, string>[] = [{ "content-length": "12" }, { "transfer-encoding": "chunked" }];
        for (const headers of bodies) {
          const o = await req(path, { method, headers });
          if (method === "HEAD") {
            expect(o.status).toBe(413);
            expect(o.headers.get("content-type")).toBe("application/problem+json");
          } else expectProblem(o, { status: 413, code: "body_not_allowed" });
        }
      }
    }
    // An empty body is no body.
    expect((await req("/v1/vehicles?limit=1", { headers: { "content-length": "0" } })).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("an unknown, repeated or malformed query parameter is a 400 naming it", async () => {
    const cases: [string, string][] = [
      ["foo=1", "foo"],
      ["LIMIT=1", "LIMIT"],
      ["limit=1&limit=2", "limit"],
      ["bbox=1,2,3", "bbox"],
      ["bbox=13.5,52.4,13.3,52.6", "bbox"],
      ["bbox=a,b,c,d", "bbox"],
      ["bbox=0x1,1,2,2", "bbox"],
      ["near=52.5", "near"],
      ["near=91,13", "near"],
      ["near=52.5,13.4,1", "near"],
      ["radius=100", "radius"],
      ["near=52.5,13.4&radius=0", "radius"],
      ["near=52.5,13.4&radius=50001", "radius"],
      ["near=52.5,13.4&radius=1e3", "radius"],
      ["fuelType=", "fuelType"],
      ["fuelType=ELECTRIC,", "fuelType"],
      ["fuelType=%3Cscript%3E", "fuelType"],
      ["minFuelLevel=101", "minFuelLevel"],
      ["minFuelLevel=-1", "minFuelLevel"],
      ["minFuelLevel=Infinity", "minFuelLevel"],
      ["transmission=CVT", "transmission"],
      ["seats=0", "seats"],
      ["seats=4.5", "seats"],
      ["seats=", "seats"],
      ["limit=0", "limit"],
      ["limit=5001", "limit"],
      ["limit=-1", "limit"],
      ["limit=ten", "limit"],
      [`${"x".repeat(100)}=1`, "x".repeat(64)],
    ];
    for (const [query, name] of cases) {
      const p = expectProblem(await req(`/v1/vehicles?${query}`), { status: 400, code: "invalid_parameter" });
      expect(p.parameter, query).toBe(name);
      expect(p.detail, query).toBeTruthy();
      // The detail is static text: it never echoes the client's value.
      if (query.includes("script")) expect(p.detail).not.toContain("script");
    }
    expect(await sandboxCounts()).toEqual({ token: 0, vehicles: 0, unexpected: 0, steal: 0 });
  });

  it("a too long query is a 414", async () => {
    // Past the query parser's bound (2,048 characters) and past the URL bound (4,096).
    for (const n of [2100, 5000]) {
      expectProblem(await req(`/v1/vehicles?fuelType=${"A".repeat(n)}`), { status: 414, code: "query_too_large" });
      expectProblem(await req(`/v1/vehicles/WME4533911K123456?x=${"A".repeat(n)}`), {
        status: n > 4000 ? 414 : 400,
        code: n > 4000 ? "query_too_large" : "invalid_parameter",
      });
    }
    // Just under the bound, a long but valid list is parsed normally.
    const longList = Array.from({ length: 16 }, (_, i) => `TYPE_${"X".repeat(20)}${i}`).join(",");
    expect((await req(`/v1/vehicles?fuelType=${longList}&limit=1`)).status).toBe(200);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("every answer carries nosniff and a request id, errors included", async () => {
    const answers = [
      await req("/v1/vehicles?limit=1"),
      await req("/v1/vehicles?limit=1", { method: "HEAD" }),
      await req("/health"),
      await req("/nope"),
      await req("/v1/vehicles?bad=1"),
      await req("/v1/vehicles", { method: "DELETE" }),
      await req("/v1/vehicles", {
        method: "OPTIONS",
        headers: { origin: ALLOWED_ORIGIN, "access-control-request-method": "GET" },
      }),
      await req("/v1/vehicles", {
        method: "OPTIONS",
        headers: { origin: OTHER_ORIGIN, "access-control-request-method": "GET" },
      }),
    ];
    for (const a of answers) expect(a.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });
});
