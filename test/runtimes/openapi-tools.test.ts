/// <reference types="node" />
/**
 * The OpenAPI document as tools nobody here wrote read it (issue 12, items 8 to 10): the gateway
 * (the real Bun binary, against the partner sandbox) serves /openapi.json; `redocly lint`
 * (recommended rules, redocly.yaml) must find nothing in it, and a validating proxy (Prism,
 * `prism proxy --errors`: every request and every answer checked against the document) must
 * pass real requests and real answers through unchanged. So the document cannot drift from
 * the code: a parameter described so that Prism refuses a request the gateway accepts, or an
 * answer the document does not describe, fails here.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Sandbox, startSandbox } from "../../sandbox/index.ts";
import { type RuntimeProcess, sandboxSettings, startRuntime } from "./runtime-process.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "node_modules", ".bin");
const REQUEST_TIMEOUT_MS = 10_000;
/** Neither tool may phone home from a test (and the machine has no network but the registries). */
const TOOL_ENV = {
  ...process.env,
  NO_COLOR: "1",
  REDOCLY_TELEMETRY: "off",
  REDOCLY_SUPPRESS_UPDATE_NOTICE: "true",
  SCARF_ANALYTICS: "false",
};

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

async function send(base: string, path: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(`${base}${path}`, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** Starts `prism proxy --errors` on a free port; resolves with its URL once it listens. */
function startPrism(documentPath: string, upstream: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(join(BIN, "prism"), ["proxy", "--errors", "-h", "127.0.0.1", "-p", "0", documentPath, upstream], {
    env: TOOL_ENV,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  return new Promise((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`prism: ${why}\n${output}`));
    };
    const timer = setTimeout(() => fail("not listening within 45 s"), 45_000);
    child.once("error", (err) => fail(err.message));
    child.once("exit", (code) => fail(`exited (${code}) before listening`));
    const read = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (m?.[1]) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolve({ url: m[1], child });
      }
    };
    child.stdout.on("data", read);
    child.stderr.on("data", read);
  });
}

describe("the OpenAPI document, as redocly and Prism read it", () => {
  let sandbox: Sandbox;
  let gateway: RuntimeProcess;
  let prism: { url: string; child: ChildProcess } | undefined;
  let dir: string;
  let documentPath: string;
  /** A VIN of the fleet, as the gateway lists it. */
  let vin: string;

  beforeAll(async () => {
    sandbox = await startSandbox({ port: 0, fleetSize: 300, seed: 12, tickMs: 0 });
    // A long TTL: the direct and the proxied answer of each request come from one snapshot.
    gateway = await startRuntime("bun", { ...sandboxSettings(sandbox), VEHICLES_TTL_S: "300" });
    const doc = await send(gateway.url, "/openapi.json");
    expect(doc.status).toBe(200);
    dir = mkdtempSync(join(tmpdir(), "gateway-openapi-"));
    documentPath = join(dir, "openapi.json");
    writeFileSync(documentPath, doc.text);
    prism = await startPrism(documentPath, gateway.url);
    const list = JSON.parse((await send(gateway.url, "/v1/vehicles?limit=1")).text) as { vehicles: { vin: string }[] };
    vin = list.vehicles[0]?.vin ?? "";
    expect(vin).toMatch(/^[A-HJ-NPR-Z0-9]{17}$/);
  }, 90_000);

  afterAll(async () => {
    prism?.child.kill("SIGKILL");
    await gateway?.stop("SIGKILL");
    await sandbox?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("redocly lint (recommended rules, redocly.yaml): no error, no warning", async () => {
    const { stdout } = await promisify(execFile)(
      join(BIN, "redocly"),
      ["lint", "--config", join(ROOT, "redocly.yaml"), "--format", "json", documentPath],
      { env: TOOL_ENV, cwd: dir, maxBuffer: 16 * 1024 * 1024 },
    ).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? "" })); // exit 1 on errors: read them
    const report = JSON.parse(stdout) as {
      totals: { errors: number; warnings: number };
      problems: { ruleId: string; message: string; location: { pointer: string }[] }[];
    };
    const problems = report.problems.map((p) => `${p.ruleId} ${p.location[0]?.pointer}: ${p.message}`);
    expect(problems).toEqual([]);
    expect(report.totals).toMatchObject({ errors: 0, warnings: 0 });
  });

  // Requests the gateway accepts, with what it answers. HEAD is left out: Prism 5.16 parses the
  // empty body of a HEAD answer as JSON because of its (correct, RFC 9110 §9.3.2) Content-Type and
  // answers 500 "Unexpected end of JSON input", whatever the document says: the mechanism of
  // stoplightio/prism#1361 (a 204 with a Content-Type).
  const accepted: { path: () => string; status: number; init?: RequestInit }[] = [
    { path: () => "/v1/vehicles?limit=2", status: 200 },
    // The request Prism refused with 422 while bbox was described with prefixItems.
    { path: () => "/v1/vehicles?bbox=13.3,52.45,13.5,52.6", status: 200 },
    { path: () => "/v1/vehicles?near=52.52,13.405&radius=1500&fuelType=ELECTRIC,gasoline", status: 200 },
    { path: () => "/v1/vehicles?transmission=manual&seats=4,5&minFuelLevel=20&limit=3", status: 200 },
    { path: () => "/v1/vehicles?transmission=GA", status: 200 },
    { path: () => `/v1/vehicles/${vin}`, status: 200 },
    { path: () => `/v1/vehicles/${vin.toLowerCase()}`, status: 200 },
    { path: () => "/v1/vehicles/WME4533911K123456", status: 404 },
    // Accepted by the document, refused by the gateway: the 400 answer must match the document.
    { path: () => "/v1/vehicles?bbox=13.5,52.45,13.3,52.6", status: 400 },
    { path: () => "/v1/vehicles?near=95,13.4", status: 400 },
    { path: () => "/health", status: 200 },
    { path: () => "/openapi.json", status: 200 },
    { path: () => "/docs", status: 200 },
    { path: () => "/v1/vehicles", status: 204, init: { method: "OPTIONS" } },
    { path: () => `/v1/vehicles/${vin}`, status: 204, init: { method: "OPTIONS" } },
  ];

  it("Prism passes real requests and answers through unchanged (valid requests, documented answers)", async () => {
    const base = prism?.url ?? "";
    for (const { path, status, init } of accepted) {
      const direct = await send(gateway.url, path(), init);
      const proxied = await send(base, path(), init);
      const where = `${init?.method ?? "GET"} ${path()}: ${proxied.text.slice(0, 300)}`;
      expect(direct.status, where).toBe(status);
      expect(proxied.status, where).toBe(status);
      expect(proxied.headers.get("sl-violations"), where).toBeNull();
      if (status !== 204 && !path().startsWith("/health")) expect(proxied.text, where).toBe(direct.text);
    }
  });

  it("Prism passes 304 answers (If-None-Match) on the list, a vehicle and the document", async () => {
    const base = prism?.url ?? "";
    for (const path of ["/v1/vehicles?limit=1", `/v1/vehicles/${vin}`, "/openapi.json", "/docs"]) {
      const etag = (await send(gateway.url, path)).headers.get("etag") ?? "";
      expect(etag, path).not.toBe("");
      const proxied = await send(base, path, { headers: { "if-none-match": etag } });
      expect(proxied.status, `${path}: ${proxied.text.slice(0, 300)}`).toBe(304);
    }
  });

  it("the document refuses what the gateway refuses (Prism 422, the gateway 400)", async () => {
    const base = prism?.url ?? "";
    for (const path of [
      "/v1/vehicles?limit=abc",
      "/v1/vehicles?limit=0",
      "/v1/vehicles?bbox=13.3,52.45,13.5",
      "/v1/vehicles?near=52.52",
      "/v1/vehicles?transmission=auto",
      "/v1/vehicles?seats=0",
      "/v1/vehicles/not-a-vin",
    ]) {
      expect((await send(gateway.url, path)).status, path).toBe(400);
      expect((await send(base, path)).status, path).toBe(422);
    }
  });
});
