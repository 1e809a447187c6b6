/// <reference types="node" />
/**
 * `npm run bench`: the gateway beside the runtime's own limit and beside a naive proxy, on
 * loopback only, bounded in time (about three minutes; `--quick` for a short check of the
 * harness). Prints a table, PASS/MISS against the targets, and writes bench/results/latest.json
 * (and latest.md, the table for BENCHMARKS.md).
 *
 * Set-up: the partner sandbox in this process; workerd driven through Miniflare as a library,
 * the gateway bundled exactly as `wrangler deploy` would upload it, each Worker on its own direct
 * socket. On a machine with two or more cores, this process and workerd run on core 0 and the
 * load generator (bench/load.ts, a child process) on core 1.
 *
 * Method: every throughput case is run closed-loop in interleaved rounds (all cases, then all
 * again, so a noisy neighbour hurts every case alike) and the median round is reported; latency
 * is measured separately at a fixed rate, below saturation (a saturated workerd only shows its
 * queue). workerd's CPU time per request is read from /proc (the whole process: HTTP, the
 * runtime, the handler, the Cache API and the Durable Object, mean over each run).
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Sandbox, startSandbox } from "../sandbox/index.ts";
import type { CpuFigure } from "./cpu.ts";
import { BBOX, NEAR } from "./cpu.ts";
import type { LoadResult, LoadSpec } from "./load.ts";
import { type Bundle, buildGateway, startWorkerd, type Workerd } from "./workerd.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const QUICK = process.argv.includes("--quick");

// ---- Pinning: re-run this script on core 0; load children go to core 1. ----
const NCPU = cpus().length;
const HAS_TASKSET = process.platform === "linux" && spawnSync("taskset", ["-V"]).status === 0;
const PIN = HAS_TASKSET && NCPU >= 2;
if (import.meta.main && PIN && process.env.BENCH_PINNED !== "1") {
  // (Node's stripTypeScriptTypes, used for the two bench Workers, warns that it is experimental.)
  const node = [process.execPath, "--disable-warning=ExperimentalWarning", fileURLToPath(import.meta.url)];
  const r = spawnSync("taskset", ["-c", "0", ...node, ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { ...process.env, BENCH_PINNED: "1" },
  });
  process.exit(r.status ?? 1);
}

/** Durations in seconds. Full: about 3 minutes on the machine BENCHMARKS.md names. */
const T = QUICK
  ? { warm: 0.3, run: 1, rounds: 1, latency: 1, sustained: 8, connections: 8, rate: 500 }
  : { warm: 0.5, run: 2.5, rounds: 3, latency: 4, sustained: 24, connections: 8, rate: 500 };
/** Sustained run: short tokens and a short TTL, so the run spans several of each. */
const SUSTAINED = { tokenTtlS: 6, vehiclesTtlS: 2, rate: 200 };
const STAMPEDE = 500;

// ---- Helpers ----

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : "";
}

function loadAverage(): string {
  return sh("uptime", []).replace(/^.*load average:\s*/, "");
}

/** One run of bench/load.ts in a child process (on core 1 when pinning), bounded in time. */
function load(spec: LoadSpec): Promise<LoadResult> {
  const script = join(ROOT, "bench/load.ts");
  const [cmd, args] = PIN
    ? ["taskset", ["-c", "1", process.execPath, script, JSON.stringify(spec)]]
    : [process.execPath, [script, JSON.stringify(spec)]];
  const limitMs = ((spec.durationS ?? 0) + (spec.timeoutS ?? 10) + 15) * 1000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args as string[], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as LoadResult);
      else reject(new Error(`load run failed (exit ${code}): ${spec.url}`));
    });
  });
}

function cpuBench(): Promise<CpuFigure[]> {
  const script = join(ROOT, "bench/cpu.ts");
  const [cmd, args] = PIN
    ? ["taskset", ["-c", "1", process.execPath, script, "--json"]]
    : [process.execPath, [script, "--json"]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args as string[], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 180_000);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as CpuFigure[]);
      else reject(new Error(`bench/cpu.ts failed (exit ${code})`));
    });
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : (s[Math.floor((s.length - 1) / 2)] as number);
};

function gatewayBindings(sb: Sandbox, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PARTNER_TOKEN_URL: sb.tokenUrl,
    PARTNER_API_URL: sb.apiUrl,
    PARTNER_CLIENT_ID: sb.clients.post.id,
    PARTNER_CLIENT_SECRET: sb.clients.post.secret,
    PARTNER_CLIENT_AUTH: "client_secret_post",
    // As wrangler.toml [vars]:
    VEHICLES_TTL_S: "30",
    VEHICLES_STALE_S: "300",
    VEHICLES_MAX_LIMIT: "5000",
    CORS_ORIGINS: "",
    GATEWAY_LOCATION_HINT: "weur",
    // Benchmarks only: lets `x-gateway-bypass` reach the lower tiers.
    ALLOW_TIER_BYPASS: "true",
    // The production default is `all`; `BENCH_LOG_REQUESTS=errors npm run bench` measures without the line.
    LOG_REQUESTS: process.env.BENCH_LOG_REQUESTS ?? "all",
    ...extra,
  };
}

// ---- The cases ----

interface Case {
  id: string;
  label: string;
  url: string;
  headers?: Record<string, string>;
  /** What the first member of Cache-Status must say on a warm request (checks the bypass works). */
  expect?: RegExp;
  /** Only for the CPU profile: closed loop, no latency run. */
  profile?: boolean;
}

interface CaseResult {
  id: string;
  label: string;
  cacheStatus: string | null;
  bytes: number;
  /** Closed loop: requests per second, one figure per round. */
  rpsRounds: number[];
  rps: number;
  ratio: number;
  /** workerd CPU per request, µs (process CPU / requests, per round), median of rounds. */
  serverCpuUs: number;
  /** Share of a core workerd used during the rounds (1 = saturated core 0). */
  serverBusy: number;
  /** Share of a core the load generator used (well below 1: not the bottleneck). */
  clientBusy: number;
  /** Sandbox CPU per request (this process: the partner's token endpoint and vehicles API), µs. */
  partnerCpuUs: number;
  /** Partner traffic per client request during the closed-loop rounds. */
  tokenPerRequest: number;
  partnerPerRequest: number;
  /** Partner traffic during the closed-loop rounds, and the requests those rounds answered. */
  tokenRequests: number;
  partnerRequests: number;
  requests: number;
  /** Fixed-rate run (none for profile cases). */
  latency: { rate: number; p50: number; p90: number; p99: number; max: number; requests: number } | undefined;
  errors: number;
}

async function runCases(w: Workerd, sb: Sandbox, cases: Case[]): Promise<CaseResult[]> {
  const state = new Map<string, { rounds: LoadResult[]; cpu: number[]; wall: number[]; partnerCpu: number[] }>();
  const tallies = new Map<string, { token: number; partner: number }>();
  for (const c of cases) {
    state.set(c.id, { rounds: [], cpu: [], wall: [], partnerCpu: [] });
    tallies.set(c.id, { token: 0, partner: 0 });
  }

  // Warm-up: each case once, short (JIT, connections, memo of per-vehicle JSON, cache entries).
  for (const c of cases) {
    await load({ url: c.url, headers: c.headers ?? {}, connections: T.connections, durationS: T.warm });
  }

  for (let round = 0; round < T.rounds; round++) {
    for (const c of cases) {
      const s = state.get(c.id)!;
      const before = {
        cpu: w.cpuSeconds(),
        partner: process.cpuUsage(),
        counters: sb.counters(),
        t: performance.now(),
      };
      const r = await load({ url: c.url, headers: c.headers ?? {}, connections: T.connections, durationS: T.run });
      const partner = process.cpuUsage(before.partner);
      const after = sb.counters();
      s.rounds.push(r);
      s.cpu.push(w.cpuSeconds() - before.cpu);
      s.wall.push((performance.now() - before.t) / 1000);
      s.partnerCpu.push((partner.user + partner.system) / 1e6);
      const tally = tallies.get(c.id)!;
      tally.token += after.token.total - before.counters.token.total;
      tally.partner += after.vehicles.total - before.counters.vehicles.total;
      process.stdout.write(
        `  round ${round + 1}/${T.rounds} ${c.label.padEnd(34)} ${r.rps.toFixed(0).padStart(6)} req/s` +
          `  ${((s.cpu.at(-1)! / Math.max(1, r.requests)) * 1e6).toFixed(0).padStart(6)} µs CPU/req` +
          `${r.non2xx + r.errors + r.timeouts ? `  errors ${r.non2xx + r.errors + r.timeouts}` : ""}\n`,
      );
    }
  }

  // Latency at one fixed rate for the baseline and every case that can take it (half the
  // throughput of the slower of the baseline and the full fleet from memory, at most T.rate),
  // else at half the case's own throughput.
  const half = (rps: number) => Math.max(2, Math.floor((rps * 0.5) / 10) * 10 || Math.floor(rps * 0.5));
  const rpsOf = (id: string) => median(state.get(id)?.rounds.map((r) => r.rps) ?? []);
  const slowest = Math.min(rpsOf("baseline"), rpsOf("memory-full"));
  const commonRate = Math.min(T.rate, Number.isFinite(slowest) ? half(slowest) : T.rate);
  const results: CaseResult[] = [];
  for (const c of cases) {
    const s = state.get(c.id)!;
    const rpsRounds = s.rounds.map((r) => r.rps);
    const rps = median(rpsRounds);
    const rate = Math.min(commonRate, half(rps));
    const lat = c.profile
      ? undefined
      : await load({ url: c.url, headers: c.headers ?? {}, connections: 16, durationS: T.latency, rate });
    const requests = s.rounds.reduce((a, r) => a + r.requests, 0);
    const tally = tallies.get(c.id)!;
    const res = await fetch(c.url, { headers: c.headers ?? {} });
    const bytes = (await res.arrayBuffer()).byteLength;
    results.push({
      id: c.id,
      label: c.label,
      cacheStatus: res.headers.get("cache-status"),
      bytes,
      rpsRounds,
      rps,
      ratio: Number.NaN,
      serverCpuUs: median(s.cpu.map((cpu, i) => (cpu / Math.max(1, s.rounds[i]!.requests)) * 1e6)),
      serverBusy: median(s.cpu.map((cpu, i) => cpu / s.wall[i]!)),
      clientBusy: median(s.rounds.map((r) => r.clientCpuS / r.durationS)),
      partnerCpuUs: median(s.partnerCpu.map((cpu, i) => (cpu / Math.max(1, s.rounds[i]!.requests)) * 1e6)),
      tokenPerRequest: tally.token / Math.max(1, requests),
      partnerPerRequest: tally.partner / Math.max(1, requests),
      tokenRequests: tally.token,
      partnerRequests: tally.partner,
      requests,
      latency: lat && { rate, p50: lat.p50, p90: lat.p90, p99: lat.p99, max: lat.max, requests: lat.requests },
      errors:
        s.rounds.reduce((a, r) => a + r.non2xx + r.errors + r.timeouts, 0) +
        (lat ? lat.non2xx + lat.errors + lat.timeouts : 0),
    });
  }
  const base = results.find((r) => r.id === "baseline");
  for (const r of results) r.ratio = base ? r.rps / base.rps : Number.NaN;
  return results;
}

/** Checks, before measuring, that each case answers 200 from the tier it claims. */
async function checkCases(cases: Case[]): Promise<void> {
  for (const c of cases) {
    // Twice: the first request may fill a tier.
    await (await fetch(c.url, { headers: c.headers ?? {} })).arrayBuffer();
    const res = await fetch(c.url, { headers: c.headers ?? {} });
    await res.arrayBuffer();
    const status = res.headers.get("cache-status") ?? "";
    if (res.status !== 200) throw new Error(`${c.label}: status ${res.status}`);
    if (c.expect && !c.expect.test(status)) throw new Error(`${c.label}: Cache-Status "${status}" not ${c.expect}`);
  }
}

// ---- Stampede and sustained runs (each on a fresh workerd: a cold start) ----

interface Stampede {
  requests: number;
  ok: number;
  errors: number;
  p50: number;
  p99: number;
  max: number;
  durationS: number;
  tokenRequests: number;
  partnerRequests: number;
  serverCpuS: number;
  failures: LoadResult["failures"];
  notices: string[];
}

export async function stampede(bundle: Bundle, sb: Sandbox): Promise<Stampede> {
  const w = await startWorkerd({ bundle, gatewayBindings: gatewayBindings(sb) });
  try {
    sb.resetCounters();
    const cpu0 = w.cpuSeconds();
    const r = await load({ url: `${w.urls.gateway}/v1/vehicles`, connections: STAMPEDE, burst: true, timeoutS: 30 });
    const c = sb.counters();
    return {
      requests: r.requests,
      ok: r.ok,
      errors: r.non2xx + r.errors + r.timeouts,
      p50: r.p50,
      p99: r.p99,
      max: r.max,
      durationS: r.durationS,
      tokenRequests: c.token.total,
      partnerRequests: c.vehicles.total,
      serverCpuS: w.cpuSeconds() - cpu0,
      failures: r.failures,
      notices: w.notices().map((n) => n.line),
    };
  } finally {
    await w.dispose();
  }
}

interface Sustained {
  durationS: number;
  rate: number;
  tokenTtlS: number;
  vehiclesTtlS: number;
  requests: number;
  errors: number;
  p50: number;
  p99: number;
  tokenRequests: number;
  tokenLifetimes: number;
  tokenPerLifetime: number;
  /** Seconds between successive token requests (median, min). */
  tokenIntervalMedianS: number;
  tokenIntervalMinS: number;
  partnerRequests: number;
  ttls: number;
  partnerPerTtl: number;
  partnerIntervalMedianS: number;
  partner401: number;
  /** Idle connections workerd closed (keep-alive timeout), replaced by the load generator before use. */
  reconnects: number;
  /** The first failures seen by the load generator, and the gateway's warnings and errors. */
  failures: LoadResult["failures"];
  notices: string[];
}

export async function sustained(bundle: Bundle, sb: Sandbox): Promise<Sustained> {
  sb.setTokenTtl(SUSTAINED.tokenTtlS);
  const w = await startWorkerd({
    bundle,
    gatewayBindings: gatewayBindings(sb, { VEHICLES_TTL_S: String(SUSTAINED.vehiclesTtlS) }),
  });
  // When each token and partner request arrived, polled from the sandbox's counters.
  const tokenAt: number[] = [];
  const partnerAt: number[] = [];
  let last = { token: 0, partner: 0 };
  let t0 = 0;
  const poll = setInterval(() => {
    const c = sb.counters();
    const t = (performance.now() - t0) / 1000;
    for (let i = last.token; i < c.token.total; i++) tokenAt.push(t);
    for (let i = last.partner; i < c.vehicles.total; i++) partnerAt.push(t);
    last = { token: c.token.total, partner: c.vehicles.total };
  }, 50);
  try {
    sb.resetCounters();
    t0 = performance.now();
    const r = await load({
      url: `${w.urls.gateway}/v1/vehicles?${NEAR}`,
      connections: 16,
      durationS: T.sustained,
      rate: SUSTAINED.rate,
    });
    clearInterval(poll);
    const c = sb.counters();
    const intervals = (at: number[]) => at.slice(1).map((t, i) => t - (at[i] as number));
    // Counted up to the run's scheduled end (the load generator may wait for stragglers after it).
    const tokenAtD = tokenAt.filter((t) => t <= T.sustained);
    const partnerAtD = partnerAt.filter((t) => t <= T.sustained);
    // The run's scheduled length (the load generator may wait for stragglers after it).
    const D = T.sustained;
    const tokenLifetimes = D / SUSTAINED.tokenTtlS;
    const ttls = D / SUSTAINED.vehiclesTtlS;
    return {
      durationS: D,
      rate: SUSTAINED.rate,
      tokenTtlS: SUSTAINED.tokenTtlS,
      vehiclesTtlS: SUSTAINED.vehiclesTtlS,
      requests: r.requests,
      errors: r.non2xx + r.errors + r.timeouts,
      p50: r.p50,
      p99: r.p99,
      tokenRequests: tokenAtD.length,
      tokenLifetimes,
      tokenPerLifetime: tokenAtD.length / tokenLifetimes,
      tokenIntervalMedianS: median(intervals(tokenAt)),
      tokenIntervalMinS: Math.min(...intervals(tokenAt)),
      partnerRequests: partnerAtD.length,
      ttls,
      partnerPerTtl: partnerAtD.length / ttls,
      partnerIntervalMedianS: median(intervals(partnerAt)),
      partner401: c.vehicles.byStatus["401"] ?? 0,
      reconnects: r.reconnects,
      failures: r.failures,
      notices: w.notices().map((n) => `+${((n.atMs - t0) / 1000).toFixed(2)} s ${n.line}`),
    };
  } finally {
    clearInterval(poll);
    sb.setTokenTtl(300);
    await w.dispose();
  }
}

// ---- Output ----

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "n/a");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
const ms = (x: number) => (Number.isFinite(x) ? (x < 10 ? x.toFixed(2) : x.toFixed(1)) : "n/a");

function table(head: string[], rows: string[][]): { text: string; md: string } {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  const text = [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
  const md = [
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
  return { text, md };
}

interface Target {
  name: string;
  goal: string;
  value: string;
  pass: boolean;
}

// ---- Main ----

async function main(): Promise<void> {
  const started = new Date();
  const machine = {
    nproc: NCPU,
    cpu: cpus()[0]?.model ?? "unknown",
    lscpu: sh("lscpu", []).split("\n").slice(0, 10).join("\n"),
    loadAtStart: loadAverage(),
    loadAtEnd: "",
    pinned: PIN
      ? "bench + workerd + sandbox on core 0, load generator on core 1"
      : "not pinned (no taskset or one core)",
    node: process.version,
  };
  const git = {
    commit: sh("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]),
    dirtySrc: sh("git", ["-C", ROOT, "status", "--porcelain", "src", "wrangler.toml"]).split("\n").filter(Boolean),
  };
  console.log(
    `bench ${QUICK ? "(quick) " : ""}on ${machine.nproc} cores, load ${machine.loadAtStart}; ${machine.pinned}`,
  );

  const outdir = mkdtempSync(join(tmpdir(), "sharenow-bench-"));
  let sb: Sandbox | undefined;
  let w: Workerd | undefined;
  try {
    console.log("building the gateway bundle (wrangler deploy --dry-run)...");
    const bundle = await buildGateway(outdir);
    console.log(`  ${bundle.wranglerLine}; gzip -9 ${(bundle.gzipBytes / 1024).toFixed(1)} KiB`);

    console.log("CPU of the pure parts (bench/cpu.ts)...");
    const cpuFigures = await cpuBench();

    sb = await startSandbox({ port: 0, host: "127.0.0.1", fleetSize: 2000, seed: 1, tickMs: 0 });
    w = await startWorkerd({
      bundle,
      gatewayBindings: gatewayBindings(sb),
      extras: {
        naiveBindings: {
          TOKEN_URL: sb.tokenUrl,
          VEHICLES_URL: sb.vehiclesUrl,
          CLIENT_ID: sb.clients.post.id,
          CLIENT_SECRET: sb.clients.post.secret,
        },
      },
    });
    const g = w.urls.gateway;
    const b = w.urls.baseline!;
    // The baseline serves exactly the bytes the gateway serves: the full fleet, and one vehicle.
    const fullBody = await (await fetch(`${g}/v1/vehicles`)).text();
    const vin = (JSON.parse(fullBody) as { vehicles: { vin: string }[] }).vehicles[0]!.vin;
    const vinBody = await (await fetch(`${g}/v1/vehicles/${vin}`)).text();
    await fetch(`${b}/full`, { method: "PUT", body: fullBody });
    await fetch(`${b}/vin`, { method: "PUT", body: vinBody });
    for (const [path, body] of [
      ["/full", fullBody],
      ["/full/constant", fullBody],
      ["/vin", vinBody],
      ["/full/cache", fullBody],
    ] as const) {
      const got = await (await fetch(`${b}${path}`)).text();
      if (got !== body) throw new Error(`baseline ${path} differs from the gateway's answer`);
    }

    const memory = /^gateway-memory; hit/;
    const cache = { headers: { "x-gateway-bypass": "memory" }, expect: /^gateway-cache; hit/ };
    const object = { headers: { "x-gateway-bypass": "memory,cache" }, expect: /^gateway-object/ };
    const cases: Case[] = [
      { id: "baseline", label: "baseline: bare Worker, same bytes", url: `${b}/full` },
      {
        id: "baseline-constant",
        label: "· bare Worker, one long-lived string",
        url: `${b}/full/constant`,
        profile: true,
      },
      { id: "baseline-vin", label: "· bare Worker, one vehicle's bytes", url: `${b}/vin`, profile: true },
      {
        id: "baseline-cache",
        label: "· bare Worker, Cache API hit, same bytes",
        url: `${b}/full/cache`,
        profile: true,
      },
      { id: "memory-full", label: "memory: full fleet", url: `${g}/v1/vehicles`, expect: memory },
      { id: "memory-bbox", label: "memory: bbox", url: `${g}/v1/vehicles?bbox=${BBOX}`, expect: memory },
      { id: "memory-near", label: "memory: near, 1.5 km", url: `${g}/v1/vehicles?${NEAR}`, expect: memory },
      { id: "memory-vin", label: "memory: /v1/vehicles/{vin}", url: `${g}/v1/vehicles/${vin}`, expect: memory },
      { id: "cache-full", label: "Cache API: full fleet", url: `${g}/v1/vehicles`, ...cache },
      { id: "cache-vin", label: "· Cache API: one vehicle", url: `${g}/v1/vehicles/${vin}`, ...cache, profile: true },
      { id: "object-full", label: "Durable Object: full fleet", url: `${g}/v1/vehicles`, ...object },
      {
        id: "object-vin",
        label: "· Durable Object: one vehicle",
        url: `${g}/v1/vehicles/${vin}`,
        ...object,
        profile: true,
      },
      { id: "naive", label: "naive proxy (token+partner each)", url: w.urls.naive! },
    ];
    await checkCases(cases);
    console.log(`throughput: ${T.rounds} interleaved rounds x ${T.run} s per case, ${T.connections} connections`);
    const results = await runCases(w, sb, cases);
    await w.dispose();
    w = undefined;

    console.log(`stampede: ${STAMPEDE} concurrent requests on a cold start...`);
    const st = await stampede(bundle, sb);
    console.log(
      `sustained: ${SUSTAINED.rate} req/s for ${T.sustained} s, tokens of ${SUSTAINED.tokenTtlS} s, TTL ${SUSTAINED.vehiclesTtlS} s...`,
    );
    const su = await sustained(bundle, sb);
    machine.loadAtEnd = loadAverage();

    // ---- Report ----
    const byId = (id: string) => results.find((r) => r.id === id)!;
    const head = [
      "case",
      "req/s",
      "x base",
      `p50 ms`,
      `p99 ms`,
      "at req/s",
      "workerd CPU µs/req",
      "1-core ceiling req/s",
      "partner calls / client requests",
    ];
    const rows = results.map((r) => [
      r.label,
      f0(r.rps),
      f2(r.ratio),
      r.latency ? ms(r.latency.p50) : "",
      r.latency ? ms(r.latency.p99) : "",
      r.latency ? f0(r.latency.rate) : "",
      f0(r.serverCpuUs),
      f0(1e6 / r.serverCpuUs),
      `${r.tokenRequests} tok + ${r.partnerRequests} api / ${r.requests} req`,
    ]);
    rows.push([
      `stampede: ${STAMPEDE} at once, cold`,
      f0(st.requests / st.durationS),
      "",
      ms(st.p50),
      ms(st.p99),
      "",
      f0((st.serverCpuS / Math.max(1, st.requests)) * 1e6),
      "",
      `${st.tokenRequests} tok + ${st.partnerRequests} api / ${st.requests} req`,
    ]);
    rows.push([
      `sustained: ${su.rate}/s, ${f0(su.durationS)} s`,
      f0(su.requests / su.durationS),
      "",
      ms(su.p50),
      ms(su.p99),
      f0(su.rate),
      "",
      "",
      `${su.tokenRequests} tok + ${su.partnerRequests} api / ${su.requests} req`,
    ]);
    const main = table(head, rows);

    const cpuRows = cpuFigures.map((c) => [
      c.name,
      c.medianUs.toFixed(1),
      `${c.minUs.toFixed(1)}–${c.maxUs.toFixed(1)}`,
      c.note,
    ]);
    const cpuTable = table(["in-process CPU (Node, V8)", "median µs", "batch range µs", "what"], cpuRows);

    // Where workerd's CPU goes, by difference between cases that differ in one step.
    const cpuOf = (id: string) => byId(id).serverCpuUs;
    const nodeUs = (name: string) => cpuFigures.find((c) => c.name === name)?.medianUs ?? Number.NaN;
    const profileRows: [string, number, string][] = [
      ["bare Worker, one vehicle (the runtime's floor per request)", cpuOf("baseline-vin"), "baseline-vin"],
      [
        "gateway's own work for a small answer",
        cpuOf("memory-vin") - cpuOf("baseline-vin"),
        "memory-vin − baseline-vin",
      ],
      [
        "sending the full fleet (816 KB) from a bare Worker",
        cpuOf("baseline") - cpuOf("baseline-vin"),
        "baseline − baseline-vin",
      ],
      ["gateway's extra for the full fleet", cpuOf("memory-full") - cpuOf("baseline"), "memory-full − baseline"],
      [
        "same bytes, one long-lived string instead of a new one",
        cpuOf("baseline-constant") - cpuOf("baseline"),
        "baseline-constant − baseline",
      ],
      [
        "local Cache API hit, bare Worker (the L2 floor here)",
        cpuOf("baseline-cache") - cpuOf("baseline"),
        "baseline-cache − baseline",
      ],
      ["L2: local Cache API read + buildSnapshot", cpuOf("cache-vin") - cpuOf("memory-vin"), "cache-vin − memory-vin"],
      ["L3: Durable Object RPC + buildSnapshot", cpuOf("object-vin") - cpuOf("memory-vin"), "object-vin − memory-vin"],
      ["· of which buildSnapshot (2,000), in Node", nodeUs("buildSnapshot (2,000): an L1 miss"), "bench/cpu.ts"],
    ];
    const profileTable = table(
      ["where workerd's CPU goes (per request)", "µs", "from"],
      profileRows.map(([what, us, from]) => [what, f0(us), from]),
    );

    const bbox20k = cpuFigures.find((c) => c.name === "bbox query (20,000)");
    const wranglerGzipKiB = Number(/gzip:\s*([\d.]+)\s*KiB/.exec(bundle.wranglerLine)?.[1] ?? Number.NaN);
    const tokenMax = 1 + Math.ceil(su.durationS / (0.7 * su.tokenTtlS));
    const targets: Target[] = [
      {
        name: "memory tier (full fleet) vs baseline",
        goal: ">= 0.9 x throughput",
        value: `${f2(byId("memory-full").ratio)} x (CPU/req ratio ${f2(byId("baseline").serverCpuUs / byId("memory-full").serverCpuUs)} x)`,
        pass: byId("memory-full").ratio >= 0.9,
      },
      {
        name: "Cache API tier (full fleet) vs baseline, locally",
        goal: ">= 0.5 x throughput",
        value: `${f2(byId("cache-full").ratio)} x (a bare Worker's Cache API hit: ${f2(byId("baseline-cache").ratio)} x)`,
        pass: byId("cache-full").ratio >= 0.5,
      },
      {
        name: "bbox query over 20,000 vehicles",
        goal: "< 1 ms CPU median",
        value: bbox20k ? `${(bbox20k.medianUs / 1000).toFixed(3)} ms (${bbox20k.note})` : "n/a",
        pass: bbox20k !== undefined && bbox20k.medianUs < 1000,
      },
      {
        name: "token requests: stampede",
        goal: "exactly 1",
        value: `${st.tokenRequests} for ${STAMPEDE} concurrent requests (${st.ok} ok)`,
        pass: st.tokenRequests === 1 && st.ok === STAMPEDE,
      },
      {
        name: "token requests: sustained",
        goal: `one per lifetime (renewed 20-30 % early: <= ${tokenMax})`,
        value: `${su.tokenRequests} in ${f0(su.durationS)} s = ${f2(su.tokenPerLifetime)} per ${su.tokenTtlS} s lifetime; every ${f2(su.tokenIntervalMedianS)} s (min ${f2(su.tokenIntervalMinS)})`,
        pass: su.tokenRequests <= tokenMax && su.tokenIntervalMinS >= su.tokenTtlS / 2 && su.partner401 === 0,
      },
      {
        name: "partner requests: stampede",
        goal: "exactly 1",
        value: `${st.partnerRequests}`,
        pass: st.partnerRequests === 1,
      },
      {
        name: "partner requests: sustained",
        goal: "about 1 per TTL (<= 1.25)",
        value: `${su.partnerRequests} in ${f0(su.durationS)} s = ${f2(su.partnerPerTtl)} per ${su.vehiclesTtlS} s TTL; every ${f2(su.partnerIntervalMedianS)} s; ${su.errors} errors`,
        pass: su.partnerPerTtl <= 1.25 && su.partnerPerTtl >= 0.5 && su.errors === 0,
      },
      {
        name: "bundle (wrangler, minified)",
        goal: "< 50 KB gzip",
        value: `${wranglerGzipKiB} KiB gzip (${(bundle.bytes / 1024).toFixed(1)} KiB raw; gzip -9 ${(bundle.gzipBytes / 1024).toFixed(1)} KiB)`,
        pass: Number.isFinite(wranglerGzipKiB) ? wranglerGzipKiB * 1024 < 50_000 : bundle.gzipBytes < 50_000,
      },
    ];
    const targetTable = table(
      ["target", "goal", "measured", ""],
      targets.map((t) => [t.name, t.goal, t.value, t.pass ? "PASS" : "MISS"]),
    );

    console.log(`\n${main.text}\n`);
    console.log(
      "req/s: closed loop, median of rounds; p50/p99: at the fixed rate shown; workerd CPU: the whole process\n" +
        "(HTTP, runtime, handler, Cache API, Durable Object) / requests, median of rounds; ceiling: 1 s / that.\n",
    );
    console.log(`${profileTable.text}\n`);
    console.log(`${cpuTable.text}\n`);
    console.log(`${targetTable.text}\n`);
    console.log(
      `load average: ${machine.loadAtStart} at start, ${machine.loadAtEnd} at end; ${machine.pinned}; ` +
        `median client (load generator) busy ${f2(median(results.map((r) => r.clientBusy)))} core`,
    );

    for (const [name, run] of [
      ["stampede", st],
      ["sustained", su],
    ] as const) {
      for (const f of run.failures) console.log(`${name}: failure ${JSON.stringify(f)}`);
      const slow = run.notices.filter((n) => n.includes('"level":"info"'));
      if (slow.length > 0) console.log(`${name}: ${slow.length} requests took 1 s or more (in latest.json)`);
      for (const n of run.notices.filter((x) => !slow.includes(x)).slice(0, 10))
        console.log(`${name}: gateway said ${n}`);
    }

    const resultsDir = join(ROOT, "bench/results");
    mkdirSync(resultsDir, { recursive: true });
    const json = {
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      quick: QUICK,
      durations: T,
      machine,
      git,
      bundle: { ...bundle, scriptPath: undefined, wranglerGzipKiB },
      cases: results,
      stampede: st,
      sustained: su,
      cpu: cpuFigures,
      profile: profileRows.map(([what, us, from]) => ({ what, us, from })),
      targets,
    };
    writeFileSync(join(resultsDir, "latest.json"), `${JSON.stringify(json, null, 2)}\n`);
    writeFileSync(
      join(resultsDir, "latest.md"),
      `${main.md}\n\n${profileTable.md}\n\n${cpuTable.md}\n\n${targetTable.md}\n\nLoad average ${machine.loadAtStart} at start, ${machine.loadAtEnd} at end.\n`,
    );
    console.log("wrote bench/results/latest.json and latest.md");
  } finally {
    await w?.dispose().catch(() => {});
    await sb?.close().catch(() => {});
    rmSync(outdir, { recursive: true, force: true });
  }
}

if (import.meta.main) await main();
