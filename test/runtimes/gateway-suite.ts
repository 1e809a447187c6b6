/// <reference types="node" />
/**
 * One test body for every long-lived runtime: the real binary (Deno or Bun) runs
 * src/runtimes/<runtime>.ts against the partner sandbox, and we check what a client and the
 * partner see: answers, filters against brute force, partner load, secrets, timers, shutdown.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Counters, PIN_MARKER, type Sandbox, startSandbox, type Vehicle } from "../../sandbox/index.ts";
import { until } from "../support/wait.ts";
import { type Runtime, type RuntimeProcess, sandboxSettings, startRuntime } from "./runtime-process.ts";

const FLEET_SIZE = 2000;
const REQUEST_TIMEOUT_MS = 10_000;

async function get(base: string, path: string): Promise<{ res: Response; text: string }> {
  const res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  return { res, text: await res.text() };
}

/** Every string value anywhere in a JSON document (a PIN could hide under any key). */
function* strings(v: unknown): Generator<string> {
  if (typeof v === "string") yield v;
  else if (Array.isArray(v)) for (const x of v) yield* strings(x);
  else if (v && typeof v === "object") for (const x of Object.values(v)) yield* strings(x);
}

const inBox = (v: Vehicle, [minLon, minLat, maxLon, maxLat]: number[]) =>
  v.position.longitude >= (minLon as number) &&
  v.position.longitude <= (maxLon as number) &&
  v.position.latitude >= (minLat as number) &&
  v.position.latitude <= (maxLat as number);

export function describeGatewayOn(runtime: Runtime): void {
  describe(`the gateway on ${runtime}`, () => {
    let sandbox: Sandbox;
    let proc: RuntimeProcess;
    /** Every answer the gateway gave: status line, headers and body, for the leak scan. */
    const answers: string[] = [];
    const call = async (path: string) => {
      const r = await get(proc.url, path);
      answers.push(`${r.res.status} ${JSON.stringify([...r.res.headers])}\n${r.text}`);
      return r;
    };

    beforeAll(async () => {
      // tickMs 0: the fleet stands still, so the brute force below sees what the gateway serves.
      sandbox = await startSandbox({ port: 0, fleetSize: FLEET_SIZE, seed: 23, tickMs: 0 });
      // A TTL longer than this file takes: every count below is exact, no revalidation interferes.
      // The tier bypass only to show the response cache below (L1 answers everything else).
      proc = await startRuntime(runtime, {
        ...sandboxSettings(sandbox),
        VEHICLES_TTL_S: "300",
        ALLOW_TIER_BYPASS: "true",
      });
    }, 30_000);

    afterAll(async () => {
      await proc?.stop("SIGKILL");
      await sandbox?.close();
    });

    it("answers 100 concurrent cold requests with one token request and one partner request", async () => {
      const paths = Array.from({ length: 100 }, (_, i) =>
        i % 2 === 0 ? `/v1/vehicles?limit=${1 + (i % 7)}` : `/v1/vehicles?bbox=-10,35,30,60&limit=${1 + (i % 5)}`,
      );
      const results = await Promise.all(paths.map((p) => call(p)));
      expect(results.map((r) => r.res.status)).toEqual(paths.map(() => 200));
      const c: Counters = sandbox.counters();
      expect(c.token.total).toBe(1);
      expect(c.token.issued).toBe(1);
      expect(c.vehicles.total).toBe(1);
      expect(c.vehicles.served).toBe(1);
      expect(c.unexpected).toBe(0);
    });

    it("keeps a rendered answer in its response cache (Deno's Cache API, Bun's memory) and passes it through", async () => {
      // Most of the fleet: an answer that streams (views of the snapshot), stored as it streams.
      const path = "/v1/vehicles?limit=1999";
      const plain = await call(path);
      expect(plain.res.headers.get("cache-status")).toMatch(/^gateway-memory; hit/);
      // Skipping L1: the first such request misses and writes its answer behind it; wait (bounded)
      // until one is passed through from the runtime's cache.
      const skipped = await until(
        "a response cache hit",
        async () => {
          const res = await fetch(`${proc.url}${path}`, {
            headers: { "x-gateway-bypass": "memory" },
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          });
          return {
            status: res.headers.get("cache-status") ?? "",
            text: await res.text(),
            etag: res.headers.get("etag"),
          };
        },
        (r) => r.status.includes("detail=response"),
        10_000,
      );
      expect(skipped.status).toMatch(/^gateway-cache; hit; ttl=\d+; detail=response, gateway-memory; fwd=bypass$/);
      expect(skipped.text).toBe(plain.text);
      expect(skipped.etag).toBe(plain.res.headers.get("etag"));
      expect(proc.output()).not.toContain("cache_put_failed");
      expect(sandbox.counters().vehicles.total).toBe(1);
    });

    it("serves GET /v1/vehicles: 200, the whole fleet, allow-listed fields only", async () => {
      const { res, text } = await call("/v1/vehicles");
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      expect(res.headers.get("etag")).toBeTruthy();
      expect(res.headers.get("cache-status")).toMatch(/^gateway-memory; hit/);
      const body = JSON.parse(text) as { vehicles: Record<string, unknown>[]; count: number; total: number };
      expect(body.count).toBe(FLEET_SIZE);
      expect(body.total).toBe(FLEET_SIZE);
      expect(new Set(body.vehicles.map((v) => v.vin))).toEqual(new Set(sandbox.fleet().map((v) => v.vin)));
      for (const v of body.vehicles) expect(v).not.toHaveProperty("fuelCardPin");
    });

    it("filters by bbox exactly as a brute force over the sandbox fleet", async () => {
      const fleet = sandbox.fleet();
      const at = (fleet[0] as Vehicle).position;
      const boxes = [
        [at.longitude - 0.05, at.latitude - 0.04, at.longitude + 0.05, at.latitude + 0.04],
        [at.longitude - 0.5, at.latitude - 0.5, at.longitude + 0.5, at.latitude + 0.5],
        [-30, -10, -20, 0], // the Atlantic: nobody
      ].map((b) => b.map((x) => Number(x.toFixed(4))));
      for (const box of boxes) {
        const expected = fleet.filter((v) => inBox(v, box)).map((v) => v.vin);
        const { res, text } = await call(`/v1/vehicles?bbox=${box.join(",")}`);
        expect(res.status).toBe(200);
        const body = JSON.parse(text) as { vehicles: { vin: string }[]; total: number };
        expect(body.total).toBe(expected.length);
        expect(body.vehicles.map((v) => v.vin).sort()).toEqual(expected.sort());
      }
      // The boxes are not trivial: one catches a few, one many, one none.
      expect(fleet.filter((v) => inBox(v, boxes[0] as number[])).length).toBeGreaterThan(0);
      expect(fleet.filter((v) => inBox(v, boxes[1] as number[])).length).toBeLessThan(FLEET_SIZE);
    });

    it("serves GET /v1/vehicles/{vin}: 200, the vehicle without its fuelCardPin", async () => {
      const { fuelCardPin, ...redacted } = sandbox.fleet()[17] as Vehicle;
      expect(fuelCardPin).toContain(PIN_MARKER);
      const { res, text } = await call(`/v1/vehicles/${redacted.vin}`);
      expect(res.status).toBe(200);
      expect((JSON.parse(text) as { vehicle: unknown }).vehicle).toEqual(redacted);
    });

    it("answers a malformed parameter with 400 problem+json", async () => {
      for (const query of ["bbox=13.3,52.4,13.5", "limit=0", "near=91,0"]) {
        const { res, text } = await call(`/v1/vehicles?${query}`);
        expect(res.status).toBe(400);
        expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
        const problem = JSON.parse(text) as { status: number; code: string; parameter: string };
        expect(problem.status).toBe(400);
        expect(problem.code).toBe("invalid_parameter");
        expect(problem.parameter).toBe(query.split("=")[0]);
      }
    });

    it("reports /health: 200, one token and one partner request, a response cache", async () => {
      const { res, text } = await call("/health");
      expect(res.status).toBe(200);
      const health = JSON.parse(text) as {
        status: string;
        config: { cache: boolean };
        gateway: { token: { state: string }; counters: { tokenRequests: number; partnerRequests: number } };
      };
      expect(health.status).toBe("ok");
      expect(health.config.cache).toBe(true);
      expect(health.gateway.token.state).toBe("valid");
      expect(health.gateway.counters).toMatchObject({ tokenRequests: 1, partnerRequests: 1 });
    });

    // Issue 12, item 6: only on Workers does Cloudflare set cf-ray; here it is the client's text.
    it("takes no request id from a client's cf-ray header: it generates one", async () => {
      const ray = "8f2b9c3d4e5f6a7b-FRA";
      for (const value of [ray, "x".repeat(4000)]) {
        const res = await fetch(`${proc.url}/v1/vehicles?limit=1`, {
          headers: { "cf-ray": value },
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        await res.text();
        expect(res.status).toBe(200);
        expect(res.headers.get("x-request-id")).toMatch(
          /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
        );
      }
      expect(proc.output()).not.toContain(ray);
    });

    it("never lets a fuelCardPin, an access token or a client secret out", async () => {
      const { fuelCardPins, accessTokens, clientSecrets } = sandbox.secrets();
      expect(fuelCardPins).toHaveLength(FLEET_SIZE);
      expect(accessTokens.length).toBeGreaterThan(0);
      const pins = new Set(fuelCardPins);
      const wire = answers.join("\n");
      expect(wire).not.toContain(PIN_MARKER);
      expect(wire).not.toContain("fuelCardPin");
      for (const answer of answers) {
        const body = answer.slice(answer.indexOf("\n") + 1);
        for (const s of strings(JSON.parse(body))) expect(pins.has(s)).toBe(false);
      }
      for (const secret of [...accessTokens, ...clientSecrets]) expect(wire).not.toContain(secret);

      const logs = proc.output();
      expect(logs).toContain('"event":"request"');
      for (const secret of [...accessTokens, ...clientSecrets]) expect(logs).not.toContain(secret);
      expect(logs).not.toContain(PIN_MARKER);
    });

    it("stops on SIGTERM: exit code 0, within seconds", async () => {
      const { code, signal, ms } = await proc.stop("SIGTERM");
      expect({ code, signal }).toEqual({ code: 0, signal: null });
      expect(ms).toBeLessThan(5_000);
    });
  });

  describe(`the timers on ${runtime} (no client traffic)`, () => {
    let sandbox: Sandbox;
    let proc: RuntimeProcess | undefined;

    beforeAll(async () => {
      sandbox = await startSandbox({ port: 0, fleetSize: 200, seed: 5, tickMs: 0 });
    });
    afterAll(async () => {
      await proc?.stop("SIGKILL");
      await sandbox?.close();
    });

    it("warms up on the interval, as the cron does: token, snapshot and tiers filled", async () => {
      proc = await startRuntime(runtime, { ...sandboxSettings(sandbox), WARMUP_INTERVAL_S: "1" });
      const p = proc;
      await until(
        "a warm-up",
        () => p.output(),
        (out) => out.includes('"event":"warmup_done"'),
      );
      const { res } = await get(proc.url, "/v1/vehicles?limit=1");
      expect(res.status).toBe(200);
      expect(res.headers.get("cache-status")).toMatch(/^gateway-memory; hit/);
      const c = sandbox.counters();
      expect(c.token.total).toBe(1);
      expect(c.vehicles.total).toBe(1);
      await proc.stop();
      proc = undefined;
    });

    it("refreshes a token before it expires, as the Durable Object alarm does", async () => {
      sandbox.reset();
      sandbox.setTokenTtl(3);
      proc = await startRuntime(runtime, sandboxSettings(sandbox));
      expect((await get(proc.url, "/v1/vehicles?limit=1")).res.status).toBe(200);
      expect(sandbox.counters().token.total).toBe(1);
      // A 3 s token is renewed about 2 s into its life: two renewals with nobody asking. Wait for
      // the state asserted (the gateway holding a valid third token), not for the sandbox to have
      // issued it: the answer may still be on its way, and on a busy machine the second token can
      // run out meanwhile (the race that made this test fail under load).
      type Health = { gateway: { token: { state: string; tokenRequests: number } } };
      const url = proc.url;
      const health = await until(
        "a valid token from the second alarm refresh",
        async () => JSON.parse((await get(url, "/health")).text) as Health,
        (h) => h.gateway.token.tokenRequests >= 3 && h.gateway.token.state === "valid",
        // /health serves a per-process copy of the status, up to HEALTH_STATUS_TTL_MS old.
        20_000,
      );
      expect(health.gateway.token.state).toBe("valid");
      const c = sandbox.counters();
      expect(c.token.issued).toBeGreaterThanOrEqual(3);
      // Nobody asked for vehicles again: the refreshes came from the timer alone.
      expect(c.vehicles.total).toBe(1);
    });
  });
}
