/// <reference types="node" />
/**
 * src/runtimes/server.ts in-process (Node): what the Deno and Bun entries share. Where the L2
 * cache comes from, settings errors, where to listen, and a close() that leaves no timer behind.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { type Sandbox, startSandbox } from "../../sandbox/index.ts";
import { MemoryResponseCache } from "../../src/cache/memory-cache.ts";
import type { Logger } from "../../src/ports.ts";
import { createGatewayServer, type GatewayServer, listenOptions, logListening } from "../../src/runtimes/server.ts";
import { sandboxSettings } from "./runtime-process.ts";

const req = (path: string) => new Request(`http://gateway.test${path}`);

function capture(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (level, event, fields) => lines.push(JSON.stringify({ level, event, ...fields })) };
}

describe("listenOptions", () => {
  it("defaults to port 8787 on the runtime's own host", () => {
    expect(listenOptions({})).toEqual({ port: 8787, hostname: undefined });
  });
  it("takes PORT (0: any free port) and HOST", () => {
    expect(listenOptions({ PORT: "0", HOST: "127.0.0.1" })).toEqual({ port: 0, hostname: "127.0.0.1" });
    expect(listenOptions({ PORT: " 9000 " })).toEqual({ port: 9000, hostname: undefined });
  });
  it("refuses a PORT that is not a port, naming it", () => {
    for (const PORT of ["-1", "65536", "80a", "8.5"]) expect(() => listenOptions({ PORT })).toThrow(/PORT/);
  });
});

describe("createGatewayServer with invalid settings", () => {
  it("answers /health 503 and requests 500, naming the settings (never their values)", async () => {
    const log = capture();
    const server = createGatewayServer(
      { PARTNER_CLIENT_AUTH: "nope", PARTNER_CLIENT_SECRET: "not-logged-secret" },
      { log },
    );
    const health = await server.fetch(req("/health"));
    expect(health.status).toBe(503);
    const body = (await health.json()) as { status: string; config: { invalid: string[] } };
    expect(body.status).toBe("misconfigured");
    expect(body.config.invalid).toEqual(expect.arrayContaining(["PARTNER_CLIENT_ID", "PARTNER_CLIENT_AUTH"]));
    const res = await server.fetch(req("/v1/vehicles"));
    expect(res.status).toBe(500);
    expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    expect(((await res.json()) as { code: string }).code).toBe("config_invalid");
    expect(log.lines[0]).toContain('"event":"config_invalid"');
    expect(log.lines.join("\n")).not.toContain("not-logged-secret");
    await server.close();
  });
});

describe("createGatewayServer against the sandbox", () => {
  let sandbox: Sandbox;
  let server: GatewayServer | undefined;

  beforeAll(async () => {
    sandbox = await startSandbox({ port: 0, fleetSize: 100, seed: 3, tickMs: 0 });
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
    vi.unstubAllGlobals();
    sandbox.reset();
  });
  afterAll(async () => {
    await sandbox?.close();
  });

  it("uses a bounded memory cache where the runtime has no Cache API (Node, Bun)", async () => {
    expect((globalThis as { caches?: unknown }).caches).toBeUndefined();
    server = createGatewayServer(sandboxSettings(sandbox), { log: capture() });
    expect(server.deps.cache).toBeInstanceOf(MemoryResponseCache);
  });

  it("uses the Cache API where the runtime has one (Deno): feature detection", async () => {
    const stored = new Map<string, Response>();
    const open = vi.fn(async (_name: string) => ({
      match: async (key: string) => stored.get(key)?.clone(),
      put: async (key: string, res: Response) => {
        stored.set(key, res);
      },
    }));
    vi.stubGlobal("caches", { open });
    server = createGatewayServer(sandboxSettings(sandbox), { log: capture() });
    const res = await server.fetch(req("/v1/vehicles?limit=2"));
    expect(res.status).toBe(200);
    // The snapshot, and the first request's rendered answer (the response cache), each under its path.
    await vi.waitFor(() => expect(stored.size).toBe(2));
    expect([...stored.keys()].map((k) => new URL(k).pathname).sort()).toEqual([
      "/v1/partner-vehicles",
      "/v1/responses",
    ]);
    expect(open).toHaveBeenCalledWith("sharenow-vehicles-v1");
  });

  it("close() stops the token alarm and the warm-up: nothing runs afterwards", async () => {
    sandbox.setTokenTtl(3);
    const log = capture();
    server = createGatewayServer({ ...sandboxSettings(sandbox), WARMUP_INTERVAL_S: "1" }, { log });
    expect((await server.fetch(req("/v1/vehicles?limit=1"))).status).toBe(200);
    await server.close();
    const before = sandbox.counters();
    // Past the 3 s token's refresh time and three warm-up ticks.
    await new Promise((r) => setTimeout(r, 3_500));
    const after = sandbox.counters();
    expect(after.token.total).toBe(before.token.total);
    expect(after.vehicles.total).toBe(before.vehicles.total);
    expect(log.lines.some((l) => l.includes('"event":"warmup_done"'))).toBe(false);
  });

  it("logs where it listens, one JSON line, IPv6 in brackets", () => {
    const log = capture();
    server = createGatewayServer(sandboxSettings(sandbox), { log });
    logListening(server, "deno", "::1", 8787);
    expect(JSON.parse(log.lines.at(-1) as string)).toEqual({
      level: "info",
      event: "listening",
      runtime: "deno",
      url: "http://[::1]:8787",
    });
  });
});
