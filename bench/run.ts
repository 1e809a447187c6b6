/// <reference types="node" />
/**
 * `npm run bench`: the gateway beside the runtime's own limit and beside a naive proxy, on
 * loopback only, at every fleet size asked for (`--fleet 2000,20000,50000`, the default; each
 * size gets a fresh partner sandbox with that fleet and a fresh workerd), bounded in time (about
 * 4 minutes per size; `--quick` for a short check of the harness, at 2,000 vehicles unless
 * `--fleet` says otherwise). Prints the sizes side by side, PASS/MISS against the targets of
 * issue 10, and writes bench/results/latest.json and latest.md (the tables for BENCHMARKS.md).
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
 * runtime, the handler, the Cache API and the Durable Object, mean over each run). The cold
 * stampede samples workerd's resident memory (/proc/<pid>/status) and reads the isolate's
 * counters from /health afterwards. The memory of one loaded snapshot is measured in Node
 * (bench/snapshot-memory.ts, a child process per size).
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Sandbox, startSandbox } from "../sandbox/index.ts";
import { DEFAULTS } from "../src/config.ts";
import { MAX_RADIUS_M } from "../src/vehicles/query.ts";
import type { CpuFigure } from "./cpu.ts";
import { BBOX, NEAR } from "./cpu.ts";
import type { LoadResult, LoadSpec } from "./load.ts";
import { fleetArg, type SnapshotMemory } from "./snapshot-memory.ts";
import { type Bundle, buildGateway, startWorkerd, type Workerd } from "./workerd.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const QUICK = process.argv.includes("--quick");
/** Fleet sizes, each measured on its own sandbox and workerd. */
const FLEETS = fleetArg(process.argv, QUICK ? [2000] : [2000, 20000, 50000]);
/**
 * A cold stampede that drives workerd's resident memory past this is stopped (workerd killed) and
 * reported as such: the machine is shared, and the issue measured 5.6 GiB at 20,000 vehicles.
 * BENCH_RSS_LIMIT_MB overrides it (default: 40 % of RAM, at most 8 GiB).
 */
const RSS_LIMIT_BYTES =
  Number(process.env.BENCH_RSS_LIMIT_MB ?? 0) * 2 ** 20 || Math.min(8 * 2 ** 30, Math.floor(totalmem() * 0.4));

// ---- Pinning: re-run this script on core 0; load children go to core 1. ----
const NCPU = cpus().length;
const HAS_TASKSET = process.platform === "linux" && spawnSync("taskset", ["-V"]).status === 0;
export const PIN = HAS_TASKSET && NCPU >= 2;

/**
 * Re-runs the script at `scriptUrl` on core 0 (with workerd, which it starts) and exits with its
 * status; load children go to core 1. A no-op once pinned, or where pinning is not possible.
 */
export function runPinned(scriptUrl: string): void {
  if (!PIN || process.env.BENCH_PINNED === "1") return;
  // (Node's stripTypeScriptTypes, used for the two bench Workers, warns that it is experimental.)
  const node = [process.execPath, "--disable-warning=ExperimentalWarning", fileURLToPath(scriptUrl)];
  const r = spawnSync("taskset", ["-c", "0", ...node, ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { ...process.env, BENCH_PINNED: "1" },
  });
  process.exit(r.status ?? 1);
}
if (import.meta.main) runPinned(import.meta.url);

/** Durations in seconds. Full: about 4 minutes per fleet size on the machine BENCHMARKS.md names. */
const T = QUICK
  ? { warm: 0.3, run: 1, rounds: 1, latency: 1, sustained: 8, connections: 8, rate: 500 }
  : // Several sizes: 2 s rounds instead of 2.5, so that three sizes stay well under 15 minutes.
    { warm: 0.5, run: FLEETS.length > 1 ? 2 : 2.5, rounds: 3, latency: 4, sustained: 24, connections: 8, rate: 500 };
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
export function load(spec: LoadSpec): Promise<LoadResult> {
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

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : (s[Math.floor((s.length - 1) / 2)] as number);
};

export interface PartnerCap {
  /** Bytes of the partner's vehicles body at this fleet size (the sandbox's fleet as served). */
  bodyBytes: number;
  /** The gateway's default PARTNER_MAX_BYTES (src/config.ts). */
  defaultMaxBytes: number;
  /** PARTNER_MAX_BYTES set for this run, when the default does not hold the body (or BENCH_PARTNER_MAX_BYTES). */
  maxBytes: number | undefined;
}

const caps = new WeakMap<Sandbox, PartnerCap>();

/**
 * Whether the partner's body at this fleet size fits the gateway's default byte cap. When it does
 * not (the sandbox's 50,000 vehicles are about 22 MB, the default cap 16 MiB), the bench raises
 * PARTNER_MAX_BYTES for the run so that the size can be measured at all, and reports the miss as a
 * figure of its own. BENCH_PARTNER_MAX_BYTES sets it explicitly.
 */
export function partnerCap(sb: Sandbox): PartnerCap {
  let cap = caps.get(sb);
  if (!cap) {
    const bodyBytes = Buffer.byteLength(JSON.stringify(sb.fleet()));
    const defaultMaxBytes = Number((DEFAULTS as Record<string, unknown>).PARTNER_MAX_BYTES ?? Number.NaN);
    const explicit = Number(process.env.BENCH_PARTNER_MAX_BYTES ?? 0);
    const raised = Math.min(100 * 2 ** 20, Math.ceil((bodyBytes * 1.25) / 2 ** 20) * 2 ** 20);
    const maxBytes = explicit > 0 ? explicit : bodyBytes < defaultMaxBytes ? undefined : raised;
    cap = { bodyBytes, defaultMaxBytes, maxBytes };
    caps.set(sb, cap);
  }
  return cap;
}

export function gatewayBindings(sb: Sandbox, extra: Record<string, string> = {}): Record<string, string> {
  const { maxBytes } = partnerCap(sb);
  return {
    ...(maxBytes === undefined ? {} : { PARTNER_MAX_BYTES: String(maxBytes) }),
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
    // As wrangler.toml too (the Workers deployment's setting; the code's default, for Deno and
    // Bun, is `all`): `BENCH_LOG_REQUESTS=all npm run bench` measures with a line per request.
    LOG_REQUESTS: process.env.BENCH_LOG_REQUESTS ?? "errors",
    // Benchmarks only: lets `x-gateway-bypass` reach the lower tiers.
    ALLOW_TIER_BYPASS: "true",
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
    const text = await res.text();
    const status = res.headers.get("cache-status") ?? "";
    if (res.status !== 200) {
      // A problem answer's stable code says why (RFC 9457; never a secret).
      const code = /"code"\s*:\s*"([^"]+)"/.exec(text)?.[1] ?? "";
      throw new Error(`${c.label}: status ${res.status}${code ? ` (${code})` : ""}`);
    }
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
  /** Time to first byte, ms: the first answer's is the cold path (token, partner, fills). */
  ttfb: LoadResult["ttfb"];
  durationS: number;
  tokenRequests: number;
  partnerRequests: number;
  serverCpuS: number;
  /** CPU seconds of the load generator (on its own core): is the client what limits the burst? */
  clientCpuS: number;
  /** workerd's resident memory: the highest VmRSS sampled (every 50 ms) during the stampede, bytes. */
  rssPeakBytes: number;
  /** workerd's VmHWM at the end: the peak resident memory of the process's life (it started cold). */
  hwmBytes: number;
  /** Set when workerd went past RSS_LIMIT_BYTES and was stopped. */
  aborted?: string;
  /**
   * The numeric counters of the isolate that answered /health after the stampede (`isolate` in
   * /health: today memoryHits, cacheHits, gatewayCalls, ...; `cacheReads` and `fills` once the
   * gateway reports them). Locally all requests of one Worker run in one isolate.
   */
  isolate: Record<string, number> | undefined;
  failures: LoadResult["failures"];
  notices: string[];
}

/** VmRSS and VmHWM of a process, bytes (0 when it is gone). */
export function residentMemory(pid: number): { rss: number; hwm: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

/** The numeric members of /health's `isolate`, or undefined when /health does not answer with them. */
async function isolateCounters(gateway: string): Promise<Record<string, number> | undefined> {
  try {
    const res = await fetch(`${gateway}/health`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { isolate?: Record<string, unknown> };
    if (!body.isolate || typeof body.isolate !== "object") return undefined;
    return Object.fromEntries(
      Object.entries(body.isolate).filter((e): e is [string, number] => typeof e[1] === "number"),
    );
  } catch {
    return undefined;
  }
}

export async function stampede(bundle: Bundle, sb: Sandbox, path = "/v1/vehicles"): Promise<Stampede> {
  const w = await startWorkerd({ bundle, gatewayBindings: gatewayBindings(sb) });
  let rssPeak = residentMemory(w.pid).rss;
  // Also sampled: a workerd stopped by the limit below has no /proc entry left to read at the end.
  let hwm = 0;
  let aborted: string | undefined;
  const sampler = setInterval(() => {
    const { rss, hwm: h } = residentMemory(w.pid);
    rssPeak = Math.max(rssPeak, rss);
    hwm = Math.max(hwm, h);
    if (rss > RSS_LIMIT_BYTES && !aborted) {
      aborted = `workerd stopped at ${(rss / 2 ** 20).toFixed(0)} MiB resident (limit ${(RSS_LIMIT_BYTES / 2 ** 20).toFixed(0)} MiB, BENCH_RSS_LIMIT_MB)`;
      process.kill(w.pid, "SIGKILL");
    }
  }, 50);
  try {
    sb.resetCounters();
    const cpu0 = w.cpuSeconds();
    const r = await load({ url: `${w.urls.gateway}${path}`, connections: STAMPEDE, burst: true, timeoutS: 30 });
    clearInterval(sampler);
    const c = sb.counters();
    const mem = residentMemory(w.pid);
    return {
      requests: r.requests,
      ok: r.ok,
      errors: r.non2xx + r.errors + r.timeouts,
      p50: r.p50,
      p99: r.p99,
      max: r.max,
      ttfb: r.ttfb,
      durationS: r.durationS,
      tokenRequests: c.token.total,
      partnerRequests: c.vehicles.total,
      serverCpuS: aborted ? Number.NaN : w.cpuSeconds() - cpu0,
      clientCpuS: r.clientCpuS,
      rssPeakBytes: Math.max(rssPeak, mem.rss),
      hwmBytes: Math.max(hwm, mem.hwm),
      ...(aborted ? { aborted } : {}),
      isolate: aborted ? undefined : await isolateCounters(w.urls.gateway),
      failures: r.failures,
      notices: w.notices().map((n) => n.line),
    };
  } finally {
    clearInterval(sampler);
    await w.dispose().catch(() => {});
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

// ---- Snapshot memory (Node, a child process per size) ----

function snapshotMemory(size: number): Promise<SnapshotMemory | undefined> {
  const script = join(ROOT, "bench/snapshot-memory.ts");
  const node = [process.execPath, "--expose-gc", "--disable-warning=ExperimentalWarning", script];
  const [cmd, args] = PIN ? ["taskset", ["-c", "1", ...node]] : [node[0]!, node.slice(1)];
  return new Promise((resolve) => {
    const child = spawn(cmd, [...(args as string[]), "--fleet", String(size), "--json"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve((JSON.parse(out) as SnapshotMemory[])[0]);
      else {
        console.log(`  bench/snapshot-memory.ts failed at ${size} (exit ${code}): figure left out`);
        resolve(undefined);
      }
    });
  });
}

// ---- One fleet size ----

interface SizeRun {
  size: number;
  /** Bytes of the full page (`GET /v1/vehicles`, limit = VEHICLES_MAX_LIMIT). */
  fullPageBytes: number;
  cases: CaseResult[];
  stampede: Stampede;
  sustained: Sustained;
  memory: SnapshotMemory | undefined;
  cap: PartnerCap;
  wallS: number;
  loadAtEnd: string;
}

const MAX_LIMIT = 5000;

/** A fresh sandbox with `size` vehicles, the cases, then the stampede and the sustained run. */
async function runSize(bundle: Bundle, size: number): Promise<SizeRun> {
  const t0 = performance.now();
  const tag = size.toLocaleString("en");
  console.log(`\n== ${tag} vehicles ==`);
  console.log("snapshot memory (bench/snapshot-memory.ts, Node --expose-gc)...");
  const memory = await snapshotMemory(size);
  const sb = await startSandbox({ port: 0, host: "127.0.0.1", fleetSize: size, seed: 1, tickMs: 0 });
  let w: Workerd | undefined;
  try {
    w = await startWorkerd({
      bundle,
      // A TTL longer than the size's run: no partner refresh (the object's once-per-snapshot
      // validate, redact and prepare, about a second of CPU at 20,000 vehicles, in this same
      // workerd process) lands inside a measured round and is charged to that round's requests.
      // Per-request CPU is what these cases measure; refreshes are the sustained case's subject.
      gatewayBindings: gatewayBindings(sb, { VEHICLES_TTL_S: "3600" }),
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
    // The baseline serves exactly the bytes the gateway serves: the full page, and one vehicle.
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

    const memoryTier = /^gateway-memory; hit/;
    // L1 skipped: the rendered answer passed through from the Cache API (the response cache)...
    const cache = {
      headers: { "x-gateway-bypass": "memory" },
      expect: /^gateway-cache; hit; ttl=-?\d+; detail=response, gateway-memory; fwd=bypass$/,
    };
    // ...or, rendered answers skipped too, L1 filled from the snapshot in the Cache API on every request.
    const cacheFill = {
      headers: { "x-gateway-bypass": "memory,responses" },
      expect: /^gateway-cache; hit; ttl=-?\d+, gateway-memory; fwd=bypass$/,
    };
    // Both kinds of L2 entry skipped: the gateway object.
    const object = { headers: { "x-gateway-bypass": "memory,cache" }, expect: /^gateway-object/ };
    const cases: Case[] = [
      { id: "baseline", label: "baseline: bare Worker, same bytes", url: `${b}/full` },
      {
        id: "baseline-constant",
        label: "· bare Worker, one long-lived string",
        url: `${b}/full/constant`,
        profile: true,
      },
      { id: "baseline-blob", label: "· bare Worker, one Blob it holds", url: `${b}/full/blob`, profile: true },
      { id: "baseline-vin", label: "· bare Worker, one vehicle's bytes", url: `${b}/vin`, profile: true },
      {
        id: "baseline-cache",
        label: "· bare Worker, Cache API hit, same bytes",
        url: `${b}/full/cache`,
        profile: true,
      },
      { id: "memory-full", label: "memory: full page", url: `${g}/v1/vehicles`, expect: memoryTier },
      { id: "memory-bbox", label: "memory: bbox", url: `${g}/v1/vehicles?bbox=${BBOX}`, expect: memoryTier },
      { id: "memory-near", label: "memory: near, 1.5 km", url: `${g}/v1/vehicles?${NEAR}`, expect: memoryTier },
      { id: "memory-vin", label: "memory: /v1/vehicles/{vin}", url: `${g}/v1/vehicles/${vin}`, expect: memoryTier },
      // Candidates for the most expensive query (issue 10 item 4): each selects as much as a query can.
      {
        id: "query-near-max",
        label: `· memory: near, radius ${MAX_RADIUS_M / 1000} km, limit=${MAX_LIMIT}`,
        url: `${g}/v1/vehicles?near=52.52,13.405&radius=${MAX_RADIUS_M}&limit=${MAX_LIMIT}`,
        expect: memoryTier,
        profile: true,
      },
      {
        id: "query-bbox-world",
        label: `· memory: bbox of the world, limit=${MAX_LIMIT}`,
        url: `${g}/v1/vehicles?bbox=-180,-90,180,90&limit=${MAX_LIMIT}`,
        expect: memoryTier,
        profile: true,
      },
      { id: "cache-full", label: "Cache API: full page", url: `${g}/v1/vehicles`, ...cache },
      {
        id: "cache-vin",
        label: "· Cache API: one vehicle",
        url: `${g}/v1/vehicles/${vin}`,
        ...cacheFill,
        profile: true,
      },
      { id: "object-full", label: "Durable Object: full page", url: `${g}/v1/vehicles`, ...object },
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
    if (st.aborted) console.log(`  ${st.aborted}`);
    console.log(
      `sustained: ${SUSTAINED.rate} req/s for ${T.sustained} s, tokens of ${SUSTAINED.tokenTtlS} s, TTL ${SUSTAINED.vehiclesTtlS} s...`,
    );
    const su = await sustained(bundle, sb);
    const wallS = (performance.now() - t0) / 1000;
    console.log(`${tag} vehicles done in ${wallS.toFixed(0)} s`);
    return {
      size,
      fullPageBytes: fullBody.length,
      cases: results,
      stampede: st,
      sustained: su,
      memory,
      cap: partnerCap(sb),
      wallS,
      loadAtEnd: loadAverage(),
    };
  } finally {
    await w?.dispose().catch(() => {});
    await sb.close().catch(() => {});
  }
}

// ---- Output ----

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "n/a");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
const ms = (x: number) => (Number.isFinite(x) ? (x < 10 ? x.toFixed(2) : x.toFixed(1)) : "n/a");
const mb = (bytes: number) => (Number.isFinite(bytes) ? `${(bytes / 1e6).toFixed(1)} MB` : "n/a");
const kb = (bytes: number) => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(0)} KB`);
const tagOf = (size: number) => size.toLocaleString("en");

function table(head: string[], rows: string[][]): { text: string; md: string } {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  // Numbers right-aligned, words (goals, figures with their verdict) left-aligned.
  const numeric = (c: string) => /^[\d.,\s/x%µs-]*$/.test(c) || c === "n/a";
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 || !numeric(c) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
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

/** One figure of issue 10 at one size: its value, and PASS/MISS where the target applies (null: no target there). */
interface SizeFigure {
  value: string;
  pass: boolean | null;
}

interface SizeTarget {
  name: string;
  goal: string;
  bySize: Record<number, SizeFigure>;
}

const NO_COUNTER = "n/a";

/** The figures of issue 10's targets table (and the count targets), at one size. */
function sizeFigures(run: SizeRun): { name: string; goal: string; fig: SizeFigure }[] {
  const { size, stampede: st, sustained: su } = run;
  const byId = (id: string) => run.cases.find((r) => r.id === id)!;
  const cpuOf = (id: string) => byId(id).serverCpuUs;
  const at20k = size === 20000;
  const out: { name: string; goal: string; fig: SizeFigure }[] = [];
  const add = (name: string, goal: string, value: string, pass: boolean | null) =>
    out.push({ name, goal, fig: { value, pass } });

  const { cap } = run;
  add(
    "partner body fits the default PARTNER_MAX_BYTES",
    "fits (every size)",
    `${mb(cap.bodyBytes)} vs ${mb(cap.defaultMaxBytes)}${cap.maxBytes === undefined ? "" : ` (run with ${mb(cap.maxBytes)})`}`,
    cap.bodyBytes < cap.defaultMaxBytes,
  );
  const answered = `${st.ok}/${STAMPEDE} answered, p99 ${ms(st.p99 / 1000)} s${st.aborted ? " (workerd stopped: memory)" : ""}`;
  add(
    "cold stampede, 500 concurrent",
    "500/500, p99 < 2 s (at 20,000)",
    answered,
    at20k ? st.ok === STAMPEDE && st.p99 < 2000 : null,
  );
  const counter = (k: string) => (st.isolate && k in st.isolate ? String(st.isolate[k]) : NO_COUNTER);
  const calls = st.isolate?.gatewayCalls;
  const fills = st.isolate?.fills;
  add(
    "object calls per isolate in the stampede (/health)",
    "1 call, and 1 L1 build where counted (every size)",
    `gatewayCalls ${counter("gatewayCalls")}, cacheReads ${counter("cacheReads")}, fills ${counter("fills")}`,
    calls === undefined ? null : calls === 1 && (fills === undefined || fills === 1),
  );
  const fillObject = (cpuOf("object-vin") - cpuOf("memory-vin")) / 1000;
  const fillCache = (cpuOf("cache-vin") - cpuOf("memory-vin")) / 1000;
  add(
    "an isolate's first request (L1 fill) from the object, CPU",
    "< 10 ms (at 20,000)",
    `${ms(fillObject)} ms`,
    at20k ? fillObject < 10 : null,
  );
  add(
    "an isolate's first request (L1 fill) from the Cache API, CPU",
    "< 10 ms (at 20,000)",
    `${ms(fillCache)} ms`,
    at20k ? fillCache < 10 : null,
  );
  const m = run.memory;
  const memLimit = size === 20000 ? 40e6 : size === 50000 ? 100e6 : undefined;
  add(
    "memory for one snapshot in an isolate (Node, V8 heap + off-heap)",
    "< 40 MB at 20,000, < 100 MB at 50,000",
    m
      ? `${mb(m.totalBytes)} (heap ${mb(m.heapBytes)}, off-heap ${mb(m.externalBytes)}; load peak ${mb(m.peakBytes)})`
      : "n/a",
    memLimit !== undefined && m ? m.totalBytes < memLimit : null,
  );
  add(
    "workerd resident memory in the cold stampede",
    "< 1 GiB (at 20,000)",
    `${(st.rssPeakBytes / 2 ** 20).toFixed(0)} MiB peak (VmHWM ${(st.hwmBytes / 2 ** 20).toFixed(0)} MiB)`,
    at20k ? !st.aborted && Math.max(st.rssPeakBytes, st.hwmBytes) < 2 ** 30 : null,
  );
  const fullRatio = cpuOf("memory-full") / cpuOf("baseline");
  add(
    "full page from memory, CPU per request vs a bare Worker (same bytes)",
    "<= 1.5 x (at 20,000)",
    `${f2(fullRatio)} x (${f0(cpuOf("memory-full"))} vs ${f0(cpuOf("baseline"))} µs, ${kb(run.fullPageBytes)}; a bare Worker's Blob ${f0(cpuOf("baseline-blob"))} µs)`,
    at20k ? fullRatio <= 1.5 : null,
  );
  const candidates = ["memory-full", "query-near-max", "query-bbox-world"].map(byId);
  const worst = candidates.reduce((a, c) => (c.serverCpuUs > a.serverCpuUs ? c : a));
  add(
    "most expensive query (workerd CPU per request)",
    "measured and stated (at 50,000)",
    `${worst.label.replace(/^· /, "")}: ${f0(worst.serverCpuUs)} µs, ${kb(worst.bytes)} (of ${candidates
      .map((c) => `${c.id.replace(/^(query|memory)-/, "")} ${f0(c.serverCpuUs)}`)
      .join(", ")} µs)`,
    null,
  );
  add(
    "memory tier (full page) vs baseline, throughput",
    ">= 0.9 x (at 2,000)",
    `${f2(byId("memory-full").ratio)} x (CPU/req ${f2(cpuOf("baseline") / cpuOf("memory-full"))} x; bare Worker sending a Blob ${f2(byId("baseline-blob").ratio)} x)`,
    size === 2000 ? byId("memory-full").ratio >= 0.9 : null,
  );
  add(
    "Cache API tier (full page) vs baseline, throughput",
    ">= 0.5 x (at 2,000)",
    `${f2(byId("cache-full").ratio)} x (bare Worker's Cache API hit ${f2(byId("baseline-cache").ratio)} x)`,
    size === 2000 ? byId("cache-full").ratio >= 0.5 : null,
  );
  add(
    "token requests: stampede",
    "exactly 1 (every size)",
    `${st.tokenRequests} for ${STAMPEDE} concurrent (${st.ok} ok)`,
    st.tokenRequests === 1,
  );
  add("partner requests: stampede", "exactly 1 (every size)", `${st.partnerRequests}`, st.partnerRequests === 1);
  const tokenMax = 1 + Math.ceil(su.durationS / (0.7 * su.tokenTtlS));
  add(
    "token requests: sustained",
    `one per lifetime (renewed 20-30 % early: <= ${tokenMax})`,
    `${su.tokenRequests} in ${f0(su.durationS)} s = ${f2(su.tokenPerLifetime)} per ${su.tokenTtlS} s; min interval ${f2(su.tokenIntervalMinS)} s`,
    su.tokenRequests <= tokenMax && su.tokenIntervalMinS >= su.tokenTtlS / 2 && su.partner401 === 0,
  );
  add(
    "partner requests: sustained",
    "about 1 per TTL (<= 1.25)",
    `${su.partnerRequests} in ${f0(su.durationS)} s = ${f2(su.partnerPerTtl)} per ${su.vehiclesTtlS} s TTL; ${su.errors} errors`,
    su.partnerPerTtl <= 1.25 && su.partnerPerTtl >= 0.5 && su.errors === 0,
  );
  return out;
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
    rssLimitMiB: Math.round(RSS_LIMIT_BYTES / 2 ** 20),
  };
  const git = {
    commit: sh("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]),
    dirtySrc: sh("git", ["-C", ROOT, "status", "--porcelain", "src", "wrangler.toml"]).split("\n").filter(Boolean),
  };
  console.log(
    `bench ${QUICK ? "(quick) " : ""}at ${FLEETS.map(tagOf).join(", ")} vehicles on ${machine.nproc} cores, ` +
      `load ${machine.loadAtStart}; ${machine.pinned}`,
  );

  const outdir = mkdtempSync(join(tmpdir(), "sharenow-bench-"));
  try {
    console.log("building the gateway bundle (wrangler deploy --dry-run)...");
    const bundle = await buildGateway(outdir);
    console.log(`  ${bundle.wranglerLine}; gzip -9 ${(bundle.gzipBytes / 1024).toFixed(1)} KiB`);

    console.log("CPU of the pure parts (bench/cpu.ts)...");
    const cpuFigures = await cpuBench();

    const runs: SizeRun[] = [];
    // A size the gateway cannot serve (e.g. a partner body over PARTNER_MAX_BYTES) is reported, not fatal.
    const failed: { size: number; error: string }[] = [];
    for (const size of FLEETS) {
      try {
        runs.push(await runSize(bundle, size));
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        failed.push({ size, error });
        console.log(`${tagOf(size)} vehicles not measured: ${error}`);
      }
    }
    machine.loadAtEnd = loadAverage();
    if (runs.length === 0) throw new Error("no fleet size could be measured");

    // ---- Report: the sizes side by side ----
    const tags = runs.map((r) => tagOf(r.size));
    const caseIds = runs[0]!.cases.map((c) => c.id);
    const caseOf = (run: SizeRun, id: string) => run.cases.find((c) => c.id === id)!;

    const throughputHead = ["case", ...tags.flatMap((t) => [`${t}: req/s`, "x base", "workerd CPU µs/req"])];
    const throughputRows = caseIds.map((id) => [
      caseOf(runs[0]!, id).label,
      ...runs.flatMap((run) => {
        const r = caseOf(run, id);
        return [f0(r.rps), f2(r.ratio), f0(r.serverCpuUs)];
      }),
    ]);
    throughputRows.push([
      `stampede: ${STAMPEDE} at once, cold`,
      ...runs.flatMap(({ stampede: st }) => [
        f0(st.requests / st.durationS),
        "",
        f0((st.serverCpuS / Math.max(1, st.requests)) * 1e6),
      ]),
    ]);
    throughputRows.push([
      `sustained: ${SUSTAINED.rate}/s, ${T.sustained} s`,
      ...runs.flatMap(({ sustained: su }) => [f0(su.requests / su.durationS), "", ""]),
    ]);
    const throughput = table(throughputHead, throughputRows);

    const latencyHead = [
      "case",
      ...tags.flatMap((t) => [`${t}: p50 / p99 ms`, "at req/s", "partner calls / requests"]),
    ];
    const latencyRows = caseIds
      .filter((id) => !caseOf(runs[0]!, id).label.startsWith("·"))
      .map((id) => [
        caseOf(runs[0]!, id).label,
        ...runs.flatMap((run) => {
          const r = caseOf(run, id);
          return [
            r.latency ? `${ms(r.latency.p50)} / ${ms(r.latency.p99)}` : "",
            r.latency ? f0(r.latency.rate) : "",
            `${r.tokenRequests} tok + ${r.partnerRequests} api / ${r.requests}`,
          ];
        }),
      ]);
    latencyRows.push([
      `stampede: ${STAMPEDE} at once, cold`,
      ...runs.flatMap(({ stampede: st }) => [
        `${ms(st.p50)} / ${ms(st.p99)}`,
        "",
        `${st.tokenRequests} tok + ${st.partnerRequests} api / ${st.requests}`,
      ]),
    ]);
    latencyRows.push([
      `sustained: ${SUSTAINED.rate}/s, ${T.sustained} s`,
      ...runs.flatMap(({ sustained: su }) => [
        `${ms(su.p50)} / ${ms(su.p99)}`,
        f0(su.rate),
        `${su.tokenRequests} tok + ${su.partnerRequests} api / ${su.requests}`,
      ]),
    ]);
    const latency = table(latencyHead, latencyRows);

    // Where workerd's CPU goes, by difference between cases that differ in one step.
    const nodeUs = (name: string) => cpuFigures.find((c) => c.name === name)?.medianUs ?? Number.NaN;
    const profileLines: [string, string, (run: SizeRun) => number][] = [
      ["bare Worker, one vehicle (the runtime's floor per request)", "baseline-vin", (r) => cpuOf(r, "baseline-vin")],
      [
        "gateway's own work for a small answer",
        "memory-vin − baseline-vin",
        (r) => cpuOf(r, "memory-vin") - cpuOf(r, "baseline-vin"),
      ],
      [
        "sending the full page from a bare Worker",
        "baseline − baseline-vin",
        (r) => cpuOf(r, "baseline") - cpuOf(r, "baseline-vin"),
      ],
      [
        "gateway's extra for the full page",
        "memory-full − baseline",
        (r) => cpuOf(r, "memory-full") - cpuOf(r, "baseline"),
      ],
      [
        "same bytes, one long-lived string instead of a new one",
        "baseline-constant − baseline",
        (r) => cpuOf(r, "baseline-constant") - cpuOf(r, "baseline"),
      ],
      [
        "local Cache API hit, bare Worker (the L2 floor here)",
        "baseline-cache − baseline",
        (r) => cpuOf(r, "baseline-cache") - cpuOf(r, "baseline"),
      ],
      [
        "L2 fill: local Cache API read + L1 build",
        "cache-vin − memory-vin",
        (r) => cpuOf(r, "cache-vin") - cpuOf(r, "memory-vin"),
      ],
      [
        "L3 fill: Durable Object RPC (both ends) + L1 build",
        "object-vin − memory-vin",
        (r) => cpuOf(r, "object-vin") - cpuOf(r, "memory-vin"),
      ],
      [
        "· of which loadPrepared, in Node (bench/cpu.ts)",
        "bench/cpu.ts",
        (r) => nodeUs(`loadPrepared (${tagOf(r.size)}): an L1 fill`),
      ],
    ];
    function cpuOf(run: SizeRun, id: string): number {
      return caseOf(run, id).serverCpuUs;
    }
    const profile = table(
      ["where workerd's CPU goes (µs per request)", ...tags, "from"],
      profileLines.map(([what, from, fn]) => [what, ...runs.map((r) => f0(fn(r))), from]),
    );

    const cpuTable = table(
      ["in-process CPU (Node, V8)", "median µs", "batch range µs", "what"],
      cpuFigures.map((c) => [c.name, c.medianUs.toFixed(1), `${c.minUs.toFixed(1)}–${c.maxUs.toFixed(1)}`, c.note]),
    );

    // Issue 10's targets, the sizes side by side.
    const sizeTargets: SizeTarget[] = [];
    for (const run of runs) {
      for (const { name, goal, fig } of sizeFigures(run)) {
        let t = sizeTargets.find((x) => x.name === name);
        if (!t) {
          t = { name, goal, bySize: {} };
          sizeTargets.push(t);
        }
        t.bySize[run.size] = fig;
      }
    }
    const verdict = (f: SizeFigure | undefined) =>
      f ? `${f.value}${f.pass === null ? "" : f.pass ? " · PASS" : " · MISS"}` : "";
    const targetsBySize = table(
      ["figure", "target", ...tags],
      sizeTargets.map((t) => [t.name, t.goal, ...runs.map((r) => verdict(t.bySize[r.size]))]),
    );

    const bbox20k = cpuFigures.find((c) => c.name === "bbox query (20,000)");
    const wranglerGzipKiB = Number(/gzip:\s*([\d.]+)\s*KiB/.exec(bundle.wranglerLine)?.[1] ?? Number.NaN);
    const wholeRun: Target[] = [
      {
        name: "bbox query over 20,000 vehicles (Node)",
        goal: "< 1 ms CPU median",
        value: bbox20k ? `${(bbox20k.medianUs / 1000).toFixed(3)} ms (${bbox20k.note})` : "n/a",
        pass: bbox20k !== undefined && bbox20k.medianUs < 1000,
      },
      {
        name: "bundle (wrangler, minified)",
        goal: "< 50 KB gzip",
        value: `${wranglerGzipKiB} KiB gzip (${(bundle.bytes / 1024).toFixed(1)} KiB raw; gzip -9 ${(bundle.gzipBytes / 1024).toFixed(1)} KiB)`,
        pass: Number.isFinite(wranglerGzipKiB) ? wranglerGzipKiB * 1024 < 50_000 : bundle.gzipBytes < 50_000,
      },
    ];
    const wholeTable = table(
      ["target", "goal", "measured", ""],
      wholeRun.map((t) => [t.name, t.goal, t.value, t.pass ? "PASS" : "MISS"]),
    );
    const missing = [20000, 50000, 2000].filter((n) => !FLEETS.includes(n));
    const note =
      `Load average ${machine.loadAtStart} at start, ${machine.loadAtEnd} at end; ${machine.pinned}. ` +
      `Whole run ${f0((Date.now() - started.getTime()) / 1000)} s; sizes: ${runs.map((r) => `${tagOf(r.size)} in ${f0(r.wallS)} s (load ${r.loadAtEnd})`).join("; ")}.` +
      (failed.length ? ` Failed: ${failed.map((f) => `${tagOf(f.size)} vehicles (${f.error})`).join("; ")}.` : "") +
      (missing.length ? ` Not measured: ${missing.map(tagOf).join(", ")} (targets at those sizes not evaluated).` : "");

    console.log(`\n${throughput.text}\n`);
    console.log(
      "req/s: closed loop, median of rounds; workerd CPU: the whole process (HTTP, runtime, handler, Cache API,\n" +
        "Durable Object) / requests, median of rounds.\n",
    );
    console.log(`${latency.text}\n`);
    console.log(`${profile.text}\n`);
    console.log(`${cpuTable.text}\n`);
    console.log(`${targetsBySize.text}\n`);
    console.log(`${wholeTable.text}\n`);
    console.log(note);

    for (const run of runs) {
      for (const [name, r] of [
        ["stampede", run.stampede],
        ["sustained", run.sustained],
      ] as const) {
        const where = `${tagOf(run.size)} ${name}`;
        for (const f of r.failures) console.log(`${where}: failure ${JSON.stringify(f)}`);
        const slow = r.notices.filter((n) => n.includes('"level":"info"'));
        if (slow.length > 0) console.log(`${where}: ${slow.length} requests took 1 s or more (in latest.json)`);
        for (const n of r.notices.filter((x) => !slow.includes(x)).slice(0, 10))
          console.log(`${where}: gateway said ${n}`);
      }
    }

    const resultsDir = join(ROOT, "bench/results");
    mkdirSync(resultsDir, { recursive: true });
    const json = {
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      quick: QUICK,
      fleets: FLEETS,
      failed,
      durations: T,
      machine,
      git,
      bundle: { ...bundle, scriptPath: undefined, wranglerGzipKiB },
      cpu: cpuFigures,
      sizes: runs.map((r) => ({
        ...r,
        profile: profileLines.map(([what, from, fn]) => ({ what, from, us: fn(r) })),
      })),
      targets: sizeTargets,
      wholeRun,
    };
    writeFileSync(join(resultsDir, "latest.json"), `${JSON.stringify(json, null, 2)}\n`);
    writeFileSync(
      join(resultsDir, "latest.md"),
      `${[throughput.md, latency.md, profile.md, cpuTable.md, targetsBySize.md, wholeTable.md, note].join("\n\n")}\n`,
    );
    console.log("wrote bench/results/latest.json and latest.md");
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

if (import.meta.main) await main();
