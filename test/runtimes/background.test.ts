/// <reference types="node" />
/**
 * What a server process does in the background, on the real deno and bun binaries: its timers
 * never keep a process alive that should end, and a Deno Cache API that cannot be opened gives
 * way to the memory cache once (one log line), not a failed match and put on every request.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Sandbox, startSandbox } from "../../sandbox/index.ts";
import { type Runtime, type RuntimeProcess, sandboxSettings, startRuntime } from "./runtime-process.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const FIXTURE = "test/runtimes/fixtures/one-request.ts";
const COMMANDS: Record<Runtime, string[]> = {
  deno: ["run", "--allow-net", "--allow-env", FIXTURE],
  bun: [FIXTURE],
};
/** Far below the warm-up interval (60 s) and the token's refresh time (minutes): a referenced timer fails this. */
const EXIT_WITHIN_MS = 20_000;

/** Runs the fixture to its end (or kills it after `timeoutMs`): exit code, signal, output. */
function runFixture(runtime: Runtime, settings: Record<string, string>, dir: string, timeoutMs: number) {
  return new Promise<{ code: number | null; signal: string | null; output: string }>((resolve, reject) => {
    const env = { PATH: process.env.PATH ?? "", HOME: dir, NO_COLOR: "1", DENO_DIR: join(dir, "deno"), ...settings };
    const child = spawn(join(ROOT, "node_modules", ".bin", runtime), COMMANDS[runtime], { cwd: ROOT, env });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      output += s;
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      output += s;
    });
    const kill = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (err) => {
      clearTimeout(kill);
      reject(err);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(kill);
      resolve({ code, signal, output });
    });
  });
}

/** The JSON log lines of a process's output with this event. */
const events = (output: string, event: string) =>
  output.split("\n").filter((line) => line.startsWith("{") && line.includes(`"event":"${event}"`));

describe("background timers of a server process", () => {
  let sandbox: Sandbox;
  let dir: string;

  beforeAll(async () => {
    sandbox = await startSandbox({ port: 0, fleetSize: 100, seed: 7, tickMs: 0 });
    dir = mkdtempSync(join(tmpdir(), "gateway-background-"));
  });
  afterAll(async () => {
    await sandbox?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const runtime of ["deno", "bun"] as const) {
    it(`never keep a ${runtime} process alive: it ends by itself after its work, without close()`, async () => {
      sandbox.reset();
      const { code, signal, output } = await runFixture(runtime, sandboxSettings(sandbox), dir, EXIT_WITHIN_MS);
      expect({ code, signal }, output).toEqual({ code: 0, signal: null });
      expect(events(output, "served"), output).toEqual(['{"event":"served","status":200}']);
      const c = sandbox.counters();
      expect(c.token.total).toBe(1);
      expect(c.vehicles.total).toBe(1);
    });
  }
});

describe("a Deno Cache API that cannot be opened", () => {
  let sandbox: Sandbox;
  let dir: string;
  let proc: RuntimeProcess | undefined;

  beforeAll(async () => {
    sandbox = await startSandbox({ port: 0, fleetSize: 100, seed: 11, tickMs: 0 });
    dir = mkdtempSync(join(tmpdir(), "gateway-cache-"));
  });
  afterAll(async () => {
    await proc?.stop("SIGKILL");
    await sandbox?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("falls back to the memory cache once: one log line, and L2 hits from memory", async () => {
    // Deno keeps its Cache API under DENO_DIR: below a plain file, no directory can be made
    // (whoever runs the test, root included), so caches.open fails as on a read-only disk.
    const file = join(dir, "not-a-directory");
    writeFileSync(file, "");
    proc = await startRuntime("deno", {
      ...sandboxSettings(sandbox),
      VEHICLES_TTL_S: "300",
      ALLOW_TIER_BYPASS: "true",
      DENO_DIR: join(file, "deno"),
    });
    const base = proc.url;
    const get = async (bypass?: string) => {
      const res = await fetch(`${base}/v1/vehicles?limit=1`, {
        headers: bypass ? { "x-gateway-bypass": bypass } : {},
        signal: AbortSignal.timeout(10_000),
      });
      await res.arrayBuffer();
      return res;
    };

    const first = await get();
    expect(first.status).toBe(200);
    expect(first.headers.get("cache-status")).toMatch(/^gateway-object; fwd=miss/);
    // The L2 write runs behind the answer: wait (bounded) until skipping L1 finds it in L2.
    const deadline = Date.now() + 10_000;
    let status = "";
    while (!status.includes("gateway-cache; hit")) {
      expect(Date.now(), `no L2 hit; last Cache-Status: ${status}`).toBeLessThan(deadline);
      const res = await get("memory");
      expect(res.status).toBe(200);
      status = res.headers.get("cache-status") ?? "";
    }
    for (let i = 0; i < 5; i++) expect((await get("memory")).headers.get("cache-status")).toMatch(/gateway-cache; hit/);

    const output = proc.output();
    const unavailable = events(output, "cache_unavailable");
    expect(unavailable, output).toHaveLength(1);
    expect(JSON.parse(unavailable[0] as string)).toMatchObject({
      level: "warn",
      cache: "sharenow-vehicles-v1",
      fallback: "memory",
    });
    expect(events(output, "cache_match_failed")).toEqual([]);
    expect(events(output, "cache_put_failed")).toEqual([]);
    const c = sandbox.counters();
    expect(c.token.total).toBe(1);
    expect(c.vehicles.total).toBe(1);
    expect(output).not.toContain(sandboxSettings(sandbox).PARTNER_CLIENT_SECRET);
  });
});
