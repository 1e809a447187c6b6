/// <reference types="node" />
/**
 * A/B of a change, for profiling: `node bench/compare.ts <other-project-dir> [paths]` builds the
 * gateway from this checkout (A) and from another copy of the project (B, e.g. a copy with one
 * step of the request removed), runs each in its own workerd beside the bare baseline Worker, and
 * prints workerd CPU per request and req/s for the same paths, alternating A and B.
 *
 * Paths default to `/v1/vehicles,/v1/vehicles/VIN` (VIN: the first vehicle's). Pin it as
 * `npm run bench` pins itself: `taskset -c 0 node bench/compare.ts ...` (the load generator goes
 * to core 1). ROUNDS (3) and RUN_S (2.5) in the environment set the length; BYPASS sends
 * `x-gateway-bypass` with the gateway's requests, to measure a lower tier (`memory`: the response
 * cache; `memory,responses`: L1 filled from the Cache API's snapshot; `memory,cache`: the object);
 * B_BINDINGS (JSON) adds settings to B's gateway (e.g. `{"LOG_REQUESTS":"errors"}` with B = this
 * checkout: the cost of one setting).
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startSandbox } from "../sandbox/index.ts";
import type { LoadResult, LoadSpec } from "./load.ts";
import { type Bundle, buildGateway, startWorkerd } from "./workerd.ts";

const LOAD = fileURLToPath(new URL("./load.ts", import.meta.url));
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const RUN_S = Number(process.env.RUN_S ?? 2.5);

function load(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("taskset", ["-c", "1", process.execPath, LOAD, JSON.stringify(spec)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), (RUN_S + 30) * 1000);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as LoadResult);
      else reject(new Error(`load failed (exit ${code})`));
    });
  });
}

const other = process.argv[2];
if (!other) {
  console.error("usage: node bench/compare.ts <other-project-dir> [/path,/path/VIN]");
  process.exit(2);
}
const paths = (process.argv[3] ?? "/v1/vehicles,/v1/vehicles/VIN").split(",");
const dirs = [mkdtempSync(join(tmpdir(), "bench-a-")), mkdtempSync(join(tmpdir(), "bench-b-"))] as const;
const bundles: Record<"A" | "B", Bundle> = {
  A: await buildGateway(dirs[0]),
  B: await buildGateway(dirs[1], other),
};
// FLEET (default 2,000) sets the sandbox's size; the TTL is long, so no partner refresh (and the
// object's per-snapshot work) lands inside a measured run.
const sb = await startSandbox({ port: 0, tickMs: 0, fleetSize: Number(process.env.FLEET ?? 2000) });
const cpu: Record<string, number[]> = {};
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const side of ["A", "B"] as const) {
      const w = await startWorkerd({
        bundle: bundles[side],
        gatewayBindings: {
          PARTNER_TOKEN_URL: sb.tokenUrl,
          PARTNER_API_URL: sb.apiUrl,
          PARTNER_CLIENT_ID: sb.clients.post.id,
          PARTNER_CLIENT_SECRET: sb.clients.post.secret,
          VEHICLES_TTL_S: "3600",
          ALLOW_TIER_BYPASS: "true",
          PARTNER_MAX_BYTES: String(64 * 2 ** 20),
          ...(side === "B" && process.env.B_BINDINGS
            ? (JSON.parse(process.env.B_BINDINGS) as Record<string, string>)
            : {}),
        },
        extras: { naiveBindings: {} },
      });
      try {
        const full = await (await fetch(`${w.urls.gateway}/v1/vehicles`)).text();
        const vin = (JSON.parse(full) as { vehicles: { vin: string }[] }).vehicles[0]!.vin;
        const targets = paths.map((p) => [p, `${w.urls.gateway}${p.replace("VIN", vin)}`] as const);
        await fetch(`${w.urls.baseline}/full`, { method: "PUT", body: full });
        const all = [["baseline", `${w.urls.baseline}/full`] as const, ...targets];
        const headersOf = (label: string) =>
          process.env.BYPASS && label !== "baseline" ? { "x-gateway-bypass": process.env.BYPASS } : {};
        for (const [label, url] of all) await load({ url, connections: 8, durationS: 0.5, headers: headersOf(label) });
        for (const [label, url] of all) {
          const c0 = w.cpuSeconds();
          const r = await load({ url, connections: 8, durationS: RUN_S, headers: headersOf(label) });
          const us = ((w.cpuSeconds() - c0) / r.requests) * 1e6;
          const key = `${side} ${label}`;
          cpu[key] = [...(cpu[key] ?? []), us];
          console.log(
            `${key.padEnd(40)} ${r.rps.toFixed(0).padStart(6)} req/s ${us.toFixed(0).padStart(6)} µs CPU/req`,
          );
        }
      } finally {
        await w.dispose();
      }
    }
  }
  console.log("\nmedian workerd CPU µs/req");
  for (const [key, xs] of Object.entries(cpu)) {
    const s = [...xs].sort((a, b) => a - b);
    console.log(`${key.padEnd(40)} ${s[Math.floor((s.length - 1) / 2)]!.toFixed(0).padStart(6)}`);
  }
} finally {
  await sb.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
