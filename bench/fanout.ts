/// <reference types="node" />
/**
 * `npm run bench:fanout`: the fan-out model of issue 11. How much work the one `PartnerGateway`
 * object does per TTL when every data centre fills from it, and how much when Workers Cache's
 * tiered cache sits in front of a feed entrypoint.
 *
 * Measured here, per fleet size (`--fleet 2000,20000,50000`, the default): the cost of one object
 * call carrying the snapshot, in workerd (bench/workerd.ts) against the partner sandbox. A probe
 * Worker (bench/object-probe-worker.ts) bound to the gateway's object class calls it in a closed
 * loop (one connection: the object is single-threaded) and keeps nothing; workerd's CPU per call
 * minus that of a request that makes no call is the cost of the call, both ends (locally the
 * object and its caller share one process; at the edge the object pays its own side, the
 * serialization, and the caller the rest). The bytes are the payload that arrives.
 *
 * Computed from it, for 50 and 300 data centres (`--dcs`), the object calls, bytes and object CPU
 * per TTL (`--ttl`, default 30 s as wrangler.toml):
 * - without the tiered feed: every data centre with traffic calls the object once per TTL (its
 *   Cache API copy expires once per TTL). That is the floor: on workers.dev the Cache API stores
 *   nothing, and every isolate calls it.
 * - with Workers Cache in front of a feed entrypoint: one call per upper tier per TTL (request
 *   collapsing per data centre, the upper tier shared by its lower tiers; a stale-while-revalidate
 *   answer lets one revalidation per upper tier run while the rest are served). The number of upper
 *   tiers is an assumption (`--upper-tiers`, default 20): Cloudflare's Workers Cache page says
 *   Workers Cache is tiered by default on "the same topology that powers Tiered Cache for zones",
 *   the upper tier "a smaller set of data centers that every lower tier consults on a miss", and
 *   gives no count. Smart Tiered Cache picks one upper tier per origin (plus a fallback); Generic
 *   Tiered Cache may use many. 20 is issue 11's bound for 300 data centres.
 *
 * Prints a markdown table and writes bench/results/fanout.json and fanout.md. `--quick`: short
 * loops, for a check of the harness. Loopback only; every loop is bounded in count and time.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startSandbox } from "../sandbox/index.ts";
import { type CallCost, fanout, fanoutMarkdown } from "./fanout-model.ts";
import { gatewayBindings, load, median, partnerCap, runPinned } from "./run.ts";
import { fleetArg } from "./snapshot-memory.ts";
import { type Bundle, buildGateway, startWorkerd } from "./workerd.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const QUICK = process.argv.includes("--quick");

function numberArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(process.argv[i + 1]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}: a positive number`);
  return n;
}

function listArg(name: string, fallback: number[]): number[] {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  const xs = (process.argv[i + 1] ?? "").split(",").map(Number);
  if (xs.length === 0 || xs.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`${name}: whole numbers`);
  return xs;
}

const FLEETS = fleetArg(process.argv, [2000, 20000, 50000]);
const DCS = listArg("--dcs", [50, 300]);
const TTL_S = numberArg("--ttl", 30);
const UPPER_TIERS = numberArg("--upper-tiers", 20);
/** The object's RPC method the probe calls (the lead's rewrite may rename it). */
const METHOD = process.env.FANOUT_METHOD ?? "getSnapshot";
const T = QUICK ? { rounds: 1, runS: 1 } : { rounds: 3, runS: 3 };

// Same pinning as bench/run.ts: this process and workerd on core 0, the load generator on core 1.
if (import.meta.main) runPinned(import.meta.url);

async function measureSize(bundle: Bundle, size: number): Promise<CallCost | { size: number; error: string }> {
  const sb = await startSandbox({ port: 0, host: "127.0.0.1", fleetSize: size, seed: 1, tickMs: 0 });
  const cap = partnerCap(sb);
  if (cap.maxBytes !== undefined)
    console.log(
      `  ${size.toLocaleString("en").padStart(6)} vehicles: the partner body (${(cap.bodyBytes / 1e6).toFixed(1)} MB) is over ` +
        `the default PARTNER_MAX_BYTES (${(cap.defaultMaxBytes / 1e6).toFixed(1)} MB): run with ${(cap.maxBytes / 1e6).toFixed(1)} MB`,
    );
  // A TTL longer than the run: every call is served from the object's snapshot, no partner fetch.
  const w = await startWorkerd({
    bundle,
    gatewayBindings: gatewayBindings(sb, { VEHICLES_TTL_S: "3600", VEHICLES_STALE_S: "3600", LOG_REQUESTS: "errors" }),
    probe: { method: METHOD },
  });
  try {
    const probe = w.urls.probe!;
    const first = await fetch(`${probe}/call?bytes=1`, { signal: AbortSignal.timeout(60_000) });
    const { ok, bytes, error } = (await first.json()) as { ok: boolean; bytes: number; error?: string };
    if (!ok) {
      console.log(
        `  ${size.toLocaleString("en").padStart(6)} vehicles: no snapshot from the object (${error}): left out`,
      );
      return { size, error: error ?? "unknown" };
    }
    // Warm-up (JIT of both ends).
    await load({ url: `${probe}/call`, connections: 1, durationS: QUICK ? 0.5 : 1 });
    sb.resetCounters();
    const call: number[] = [];
    const floor: number[] = [];
    const rps: number[] = [];
    const p50: number[] = [];
    let calls = 0;
    for (let round = 0; round < T.rounds; round++) {
      for (const path of ["/call", "/floor"] as const) {
        const cpu0 = w.cpuSeconds();
        const r = await load({ url: `${probe}${path}`, connections: 1, durationS: T.runS });
        const us = ((w.cpuSeconds() - cpu0) / Math.max(1, r.requests)) * 1e6;
        if (r.ok !== r.requests) throw new Error(`${path}: ${r.requests - r.ok} failed of ${r.requests}`);
        if (path === "/call") {
          call.push(us);
          rps.push(r.rps);
          p50.push(r.p50);
          calls += r.requests;
        } else floor.push(us);
      }
    }
    const cost: CallCost = {
      size,
      bytes,
      cpuUs: median(call) - median(floor),
      callCpuUsRounds: call,
      floorCpuUsRounds: floor,
      callsPerS: median(rps),
      p50Ms: median(p50),
      calls,
      partnerRequests: sb.counters().vehicles.total,
      partnerMaxBytes: cap.maxBytes,
    };
    console.log(
      `  ${size.toLocaleString("en").padStart(6)} vehicles: ${(bytes / 1e6).toFixed(2)} MB per call, ` +
        `${(cost.cpuUs / 1000).toFixed(2)} ms workerd CPU per call (floor ${median(floor).toFixed(0)} µs), ` +
        `${cost.callsPerS.toFixed(0)} calls/s on one connection, p50 ${cost.p50Ms.toFixed(1)} ms`,
    );
    return cost;
  } finally {
    await w.dispose().catch(() => {});
    await sb.close().catch(() => {});
  }
}

async function main(): Promise<void> {
  const started = new Date();
  const loadAtStart = spawnSync("uptime", [], { encoding: "utf8" })
    .stdout.replace(/^.*load average:\s*/, "")
    .trim();
  console.log(
    `fan-out: one object call at ${FLEETS.map((n) => n.toLocaleString("en")).join(", ")} vehicles ` +
      `(${T.rounds} x ${T.runS} s per size${QUICK ? ", quick" : ""}); load ${loadAtStart}`,
  );
  const outdir = mkdtempSync(join(tmpdir(), "sharenow-fanout-"));
  try {
    const bundle = await buildGateway(outdir);
    const costs: CallCost[] = [];
    const failed: { size: number; error: string }[] = [];
    for (const size of FLEETS) {
      const c = await measureSize(bundle, size);
      if ("error" in c) failed.push(c);
      else costs.push(c);
    }
    const rows = fanout(costs, DCS, TTL_S, UPPER_TIERS);
    const md = fanoutMarkdown(rows, TTL_S, UPPER_TIERS);
    const loadAtEnd = spawnSync("uptime", [], { encoding: "utf8" })
      .stdout.replace(/^.*load average:\s*/, "")
      .trim();
    const note =
      `TTL ${TTL_S} s; upper tiers assumed: ${UPPER_TIERS}; one call measured in workerd ` +
      `(${cpus()[0]?.model ?? "unknown CPU"}, ${cpus().length} cores, load ${loadAtStart} at start, ${loadAtEnd} at end), ` +
      `both ends of the RPC in one process; object method \`${METHOD}\`.` +
      failed
        .map((f) => ` At ${f.size.toLocaleString("en")} vehicles the object gave no snapshot (\`${f.error}\`).`)
        .join("");
    console.log(`\n${md}\n\n${note}`);
    const dir = join(ROOT, "bench/results");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, "fanout.json"),
      `${JSON.stringify({ startedAt: started.toISOString(), quick: QUICK, ttlS: TTL_S, upperTiers: UPPER_TIERS, method: METHOD, loadAtStart, loadAtEnd, costs, failed, rows }, null, 2)}\n`,
    );
    writeFileSync(join(dir, "fanout.md"), `${md}\n\n${note}\n`);
    console.log("wrote bench/results/fanout.json and fanout.md");
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

if (import.meta.main) await main();
