import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { FaultSpecError } from "../../../sandbox/faults.ts";
import { type Sandbox, startSandbox } from "../../../sandbox/index.ts";

const FORM = { "content-type": "application/x-www-form-urlencoded" };

function tokenRequest(sb: Sandbox, init: RequestInit = {}): Promise<Response> {
  const { id, secret } = sb.clients.post;
  const body = new URLSearchParams({ grant_type: "client_credentials", client_id: id, client_secret: secret });
  return fetch(sb.tokenUrl, { method: "POST", headers: FORM, body, redirect: "manual", ...init });
}

async function accessToken(sb: Sandbox): Promise<string> {
  const res = await tokenRequest(sb);
  return ((await res.json()) as { access_token: string }).access_token;
}

const vehicles = (sb: Sandbox, token: string, init: RequestInit = {}) =>
  fetch(sb.vehiclesUrl, { headers: { authorization: `Bearer ${token}` }, redirect: "manual", ...init });

/** Reads a body chunk by chunk, noting when each arrived. */
async function readTimed(res: Response): Promise<{ text: string; chunks: number; ms: number }> {
  const start = performance.now();
  const reader = res.body!.getReader();
  const parts: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
  }
  return { text: Buffer.concat(parts).toString("utf8"), chunks: parts.length, ms: performance.now() - start };
}

const settled = <T>(p: Promise<T>, ms: number) =>
  Promise.race([
    p.then(
      () => "settled" as const,
      () => "settled" as const,
    ),
    new Promise((r) => setTimeout(() => r("pending"), ms)),
  ]);

describe("sandbox fault switches", () => {
  let sb: Sandbox;
  let token: string;
  beforeAll(async () => {
    sb = await startSandbox({ port: 0, fleetSize: 200, tickMs: 0 });
    token = await accessToken(sb);
  });
  afterAll(async () => {
    await sb.close();
  });
  beforeEach(() => sb.reset());

  describe.each(["token", "vehicles"] as const)("common faults on %s", (endpoint) => {
    const call = (init: RequestInit = {}) =>
      endpoint === "token" ? tokenRequest(sb, init) : vehicles(sb, token, init);

    it("latency delays the headers, then the real answer comes", async () => {
      sb.setFaults({ [endpoint]: { kind: "latency", ms: 150, times: 1 } });
      const start = performance.now();
      const res = await call();
      expect(performance.now() - start).toBeGreaterThanOrEqual(140);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      await (await call()).arrayBuffer();
      // Only the first request was delayed (`times: 1`).
      expect(sb.counters()[endpoint].byFault).toEqual({ latency: 1 });
    });

    it("status answers 5xx with Retry-After, for `times` requests only", async () => {
      sb.setFaults({ [endpoint]: { kind: "status", status: 503, retryAfter: 7, times: 2 } });
      for (let i = 0; i < 2; i++) {
        const res = await call();
        expect(res.status).toBe(503);
        expect(res.headers.get("retry-after")).toBe("7");
        expect(res.headers.get("content-type")).toMatch(/^text\/html/);
        await res.arrayBuffer();
      }
      expect((await call()).status).toBe(200);
      expect(sb.faults()[endpoint]).toEqual([
        { fault: { kind: "status", status: 503, retryAfter: 7, times: 2 }, remaining: 0 },
      ]);
    });

    it("tooManyRequests answers 429 with Retry-After", async () => {
      sb.setFaults({ [endpoint]: { kind: "tooManyRequests", retryAfter: 3 } });
      const res = await call();
      expect(res.status).toBe(429);
      expect(res.headers.get("retry-after")).toBe("3");
    });

    it("redirect points to another origin, whose hits are counted", async () => {
      sb.setFaults({ [endpoint]: { kind: "redirect" } });
      const res = await call();
      expect(res.status).toBe(302);
      const location = res.headers.get("location")!;
      expect(location).toBe(sb.stealUrl);
      expect(new URL(location).origin).not.toBe(sb.url);
      // A client that followed it (with its credentials) is caught.
      await (await fetch(location, { headers: { authorization: "Bearer leaked" } })).arrayBuffer();
      expect(sb.counters().steal).toEqual({ total: 1, withAuthorization: 1 });
    });

    it("invalidJson sends a cut JSON body as application/json", async () => {
      sb.setFaults({ [endpoint]: { kind: "invalidJson" } });
      const res = await call();
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("application/json");
      const text = await res.text();
      expect(text.length).toBeGreaterThan(10);
      expect(() => JSON.parse(text)).toThrow();
    });

    it("html sends a page instead of JSON", async () => {
      sb.setFaults({ [endpoint]: { kind: "html" } });
      const res = await call();
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^text\/html/);
      expect(await res.text()).toMatch(/^<!DOCTYPE html>/);
    });

    it("oversize sends valid JSON of at least N MiB, chunked unless asked otherwise", async () => {
      sb.setFaults({
        [endpoint]: [
          { kind: "oversize", mb: 2, times: 1 },
          { kind: "oversize", mb: 1, declareLength: true },
        ],
      });
      const chunked = await call();
      expect(chunked.headers.get("content-length")).toBeNull();
      const text = await chunked.text();
      expect(text.length).toBeGreaterThanOrEqual(2 * 1024 * 1024);
      expect(() => JSON.parse(text)).not.toThrow();
      const declared = await call();
      const length = Number(declared.headers.get("content-length"));
      expect(length).toBeGreaterThanOrEqual(1024 * 1024);
      expect((await declared.arrayBuffer()).byteLength).toBe(length);
    });

    it("slowBody sends headers at once and trickles the real body", async () => {
      sb.setFaults({ [endpoint]: { kind: "slowBody", chunkBytes: endpoint === "token" ? 20 : 4096, intervalMs: 30 } });
      const start = performance.now();
      const res = await call();
      const headersMs = performance.now() - start;
      expect(res.status).toBe(200);
      const { text, chunks, ms } = await readTimed(res);
      expect(chunks).toBeGreaterThan(3);
      expect(ms).toBeGreaterThanOrEqual(90);
      // Headers came before most of the body did.
      expect(headersMs).toBeLessThan(ms);
      const body = JSON.parse(text);
      if (endpoint === "token") {
        // A real token: it opens the vehicles endpoint.
        expect((await vehicles(sb, body.access_token)).status).toBe(200);
      } else {
        expect(body).toEqual(sb.fleet());
      }
    });

    it("slowBody with stallAfterBytes stalls until the faults are cleared", async () => {
      sb.setFaults({ [endpoint]: { kind: "slowBody", chunkBytes: 5, intervalMs: 1, stallAfterBytes: 10 } });
      const res = await call();
      expect(res.status).toBe(200);
      const reading = res.text();
      expect(await settled(reading, 200)).toBe("pending");
      sb.clearFaults();
      await expect(reading).rejects.toThrow();
    });

    it("hang never answers until the faults are cleared", async () => {
      sb.setFaults({ [endpoint]: { kind: "hang", times: 1 } });
      const pending = call();
      expect(await settled(pending, 200)).toBe("pending");
      sb.clearFaults();
      await expect(pending).rejects.toThrow();
      expect((await call()).status).toBe(200);
    });

    it("custom sends exactly what it is told", async () => {
      sb.setFaults({
        [endpoint]: { kind: "custom", status: 418, headers: { "x-why": "tea" }, body: "short and stout" },
      });
      const res = await call();
      expect(res.status).toBe(418);
      expect(res.headers.get("x-why")).toBe("tea");
      expect(await res.text()).toBe("short and stout");
    });
  });

  describe("token-only faults", () => {
    const tokenJson = async () => {
      const res = await tokenRequest(sb);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };

    it("invalidClient answers 401 invalid_client (RFC 6749 §5.2)", async () => {
      sb.setFaults({ token: { kind: "invalidClient" } });
      const { status, body } = await tokenJson();
      expect(status).toBe(401);
      expect(body.error).toBe("invalid_client");
    });

    it("errorIn200 answers 200 with an error member and no token", async () => {
      sb.setFaults({ token: { kind: "errorIn200" } });
      const { status, body } = await tokenJson();
      expect(status).toBe(200);
      expect(body.error).toBe("server_error");
      expect(body).not.toHaveProperty("access_token");
    });

    it.each([
      ["missing", undefined],
      ["string", "300"],
      ["zero", 0],
    ] as const)("expiresIn %s reshapes a real token", async (value, expected) => {
      sb.setFaults({ token: { kind: "expiresIn", value } });
      const { status, body } = await tokenJson();
      expect(status).toBe(200);
      expect(body.expires_in).toBe(expected);
      expect("expires_in" in body).toBe(value !== "missing");
      expect((await vehicles(sb, body.access_token as string)).status).toBe(200);
    });

    it("tokenType spells the type otherwise (default: bearer)", async () => {
      sb.setFaults({
        token: [
          { kind: "tokenType", times: 1 },
          { kind: "tokenType", tokenType: "BEARER" },
        ],
      });
      expect((await tokenJson()).body.token_type).toBe("bearer");
      const { body } = await tokenJson();
      expect(body.token_type).toBe("BEARER");
      expect((await vehicles(sb, body.access_token as string)).status).toBe(200);
    });

    it("rejects faults that do not belong to the endpoint, and bad values", () => {
      expect(() => sb.setFaults({ vehicles: { kind: "invalidClient" } as never })).toThrow(FaultSpecError);
      expect(() => sb.setFaults({ token: { kind: "unauthorized" } as never })).toThrow(FaultSpecError);
      expect(() => sb.setFaults({ token: { kind: "status", status: 404 as never } })).toThrow(/status/);
      expect(() => sb.setFaults({ token: { kind: "latency", ms: 5, times: 0 } })).toThrow(/times/);
    });
  });

  describe("vehicles-only faults and sequences", () => {
    it("unauthorized answers 401 invalid_token to a valid token", async () => {
      sb.setFaults({ vehicles: { kind: "unauthorized", times: 1 } });
      const res = await vehicles(sb, token);
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toMatch(/error="invalid_token"/);
      expect((await vehicles(sb, token)).status).toBe(200);
    });

    it("manyItems sends exactly count copies of item; by default 16,776,001 bytes of empty objects", async () => {
      sb.setFaults({
        vehicles: [
          { kind: "manyItems", count: 3, item: '{"a":1}', declareLength: true, times: 1 },
          { kind: "manyItems", times: 1 },
        ],
      });
      const small = await vehicles(sb, token);
      expect(small.status).toBe(200);
      expect(small.headers.get("content-length")).toBe("25");
      expect(await small.text()).toBe('[{"a":1},{"a":1},{"a":1}]');
      const big = await vehicles(sb, token);
      expect(big.headers.get("content-type")).toMatch(/^application\/json/);
      expect(big.headers.get("content-length")).toBeNull();
      const text = await big.text();
      expect(text.length).toBe(16_776_001);
      expect(text.length).toBeLessThan(16 * 1024 * 1024);
      expect(text.startsWith("[{},{},")).toBe(true);
      expect(text.endsWith(",{}]")).toBe(true);
      expect(sb.counters().vehicles.byFault).toEqual({ manyItems: 2 });
      expect(() => sb.setFaults({ vehicles: { kind: "manyItems", count: 1 } })).toThrow(/count/);
      expect(() => sb.setFaults({ token: { kind: "manyItems" } as never })).toThrow(FaultSpecError);
    });

    it("walks the list in order: latency adds up, then the first armed fault answers", async () => {
      sb.setFaults({
        vehicles: [
          { kind: "latency", ms: 50, times: 2 },
          { kind: "status", status: 502, times: 1 },
          { kind: "tooManyRequests", times: 1 },
        ],
      });
      const statuses = [];
      for (let i = 0; i < 3; i++) {
        const res = await vehicles(sb, token);
        await res.arrayBuffer();
        statuses.push(res.status);
      }
      expect(statuses).toEqual([502, 429, 200]);
    });

    it("counts exactly", async () => {
      sb.setFaults({
        token: [
          { kind: "status", status: 500, times: 1 },
          { kind: "expiresIn", value: "zero", times: 1 },
        ],
        vehicles: [
          { kind: "latency", ms: 1, times: 1 },
          { kind: "html", times: 1 },
        ],
      });
      await (await tokenRequest(sb)).arrayBuffer();
      const fresh = await accessToken(sb);
      await accessToken(sb);
      await (await vehicles(sb, fresh)).arrayBuffer();
      await (await vehicles(sb, fresh)).arrayBuffer();
      await (await vehicles(sb, "nope")).arrayBuffer();
      await (await fetch(`${sb.url}/nowhere`)).arrayBuffer();
      expect(sb.counters()).toEqual({
        token: {
          total: 3,
          byStatus: { 200: 2, 500: 1 },
          byFault: { status: 1, expiresIn: 1 },
          issued: 2,
          rejected: 0,
        },
        vehicles: {
          total: 3,
          byStatus: { 200: 2, 401: 1 },
          byFault: { latency: 1, html: 1 },
          served: 1,
          rejected: { missing: 0, unknown: 1, expired: 0, revoked: 0 },
        },
        steal: { total: 0, withAuthorization: 0 },
        unexpected: 1,
        unexpectedRequests: ["GET /nowhere"],
      });
      sb.resetCounters();
      expect(sb.counters().token.total).toBe(0);
    });
  });
});
