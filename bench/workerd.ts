/// <reference types="node" />
/**
 * workerd driven directly through Miniflare used as a library (not the `wrangler dev` proxy,
 * which alone costs several times the throughput): the gateway bundle as wrangler builds it for
 * deploy, the baseline and the naive proxy as plain module Workers, each on its own direct
 * socket (no Miniflare entry Worker in front), with the process id of workerd so its CPU time
 * can be read from /proc.
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { stripTypeScriptTypes } from "node:module";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { Miniflare, supportedCompatibilityDate, type WorkerOptions } from "miniflare";

const run = promisify(execFile);
const ROOT = new URL("..", import.meta.url).pathname;

export interface Bundle {
  scriptPath: string;
  bytes: number;
  /** gzip -9 of the bundle, as measured here. */
  gzipBytes: number;
  /** wrangler's own "Total Upload: … / gzip: …" line. */
  wranglerLine: string;
  /** The date the Workers run with here: wrangler.toml's, or the newest this workerd supports. */
  compatibilityDate: string;
}

/**
 * `wrangler deploy --dry-run --outdir` (wrangler.toml has minify on): the bytes that would be
 * uploaded. `projectDir`: another checkout of the project (A/B comparisons of a change).
 */
export async function buildGateway(outdir: string, projectDir = ROOT): Promise<Bundle> {
  const { stdout, stderr } = await run(
    join(ROOT, "node_modules/.bin/wrangler"),
    // BENCH_NO_MINIFY=1: readable function names in CPU profiles (bench/profile.ts).
    ["deploy", "--dry-run", "--outdir", outdir, ...(process.env.BENCH_NO_MINIFY === "1" ? ["--minify=false"] : [])],
    { cwd: projectDir, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" }, maxBuffer: 16 << 20 },
  );
  const scriptPath = join(outdir, "worker.js");
  const code = readFileSync(scriptPath);
  const wranglerLine = `${stdout}\n${stderr}`.split("\n").find((l) => l.includes("Total Upload")) ?? "";
  const toml = readFileSync(join(projectDir, "wrangler.toml"), "utf8");
  const wanted = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)?.[1] ?? supportedCompatibilityDate;
  // The local workerd may be older than the date in wrangler.toml: run with the newest it knows.
  const compatibilityDate = [wanted, supportedCompatibilityDate].sort()[0] as string;
  return {
    scriptPath,
    bytes: code.length,
    gzipBytes: gzipSync(code, { level: 9 }).length,
    wranglerLine: wranglerLine.trim(),
    compatibilityDate,
  };
}

/** A bench Worker written in TypeScript with no imports: types stripped, run as one ES module. */
function benchWorker(file: string): { modules: true; script: string; scriptPath: string } {
  const path = join(ROOT, "bench", file);
  return { modules: true, script: stripTypeScriptTypes(readFileSync(path, "utf8")), scriptPath: path };
}

export interface WorkerdOptions {
  bundle: Bundle;
  /** Settings of the gateway (strings, as wrangler vars and secrets arrive). */
  gatewayBindings: Record<string, string>;
  /** Also run the baseline and the naive proxy (bindings of the latter). */
  extras?: { naiveBindings: Record<string, string> };
  /**
   * Also run bench/object-probe-worker.ts, bound to the gateway's object class (bench/fanout.ts);
   * `method`: the object's RPC method it calls (default getSnapshot).
   */
  probe?: { method?: string };
}

export interface Workerd {
  mf: Miniflare;
  pid: number;
  urls: { gateway: string; baseline?: string; naive?: string; probe?: string };
  /** CPU seconds (user + system, every thread) workerd has used so far. */
  cpuSeconds(): number;
  /**
   * Log lines workerd printed that are not `"level":"info"` (warnings, errors, anything else), and
   * request lines that took a second or more, with when they were printed (performance.now() ms).
   */
  notices(): { atMs: number; line: string }[];
  dispose(): Promise<void>;
}

const CLK_TCK = 100;

/** user + system CPU of a process, seconds (all its threads), from /proc/<pid>/stat. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at state (field 3).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function childrenNamed(name: string): Set<number> {
  const found = new Set<number>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (comm === name && ppid === process.pid) found.add(Number(d));
    } catch {
      // The process ended meanwhile.
    }
  }
  return found;
}

export async function startWorkerd(opts: WorkerdOptions): Promise<Workerd> {
  const direct = [{ host: "127.0.0.1", port: 0 }];
  const workers: WorkerOptions[] = [
    {
      name: "gateway",
      modules: true,
      scriptPath: opts.bundle.scriptPath,
      // Module names are paths relative to this root; the bundle lives in a temporary directory.
      modulesRoot: dirname(opts.bundle.scriptPath),
      compatibilityDate: opts.bundle.compatibilityDate,
      bindings: opts.gatewayBindings,
      durableObjects: { GATEWAY: { className: "PartnerGateway", useSQLite: true } },
      cache: true,
      unsafeDirectSockets: direct,
    },
  ];
  if (opts.extras) {
    workers.push(
      {
        name: "baseline",
        ...benchWorker("baseline-worker.ts"),
        compatibilityDate: opts.bundle.compatibilityDate,
        cache: true,
        unsafeDirectSockets: direct,
      },
      {
        name: "naive",
        ...benchWorker("naive-proxy-worker.ts"),
        compatibilityDate: opts.bundle.compatibilityDate,
        bindings: opts.extras.naiveBindings,
        unsafeDirectSockets: direct,
      },
    );
  }
  if (opts.probe) {
    workers.push({
      name: "probe",
      ...benchWorker("object-probe-worker.ts"),
      compatibilityDate: opts.bundle.compatibilityDate,
      bindings: opts.probe.method ? { METHOD: opts.probe.method } : {},
      // The gateway Worker's own object (same class, same name, same storage): calls reach the
      // instance that holds the snapshot.
      durableObjects: { GATEWAY: { className: "PartnerGateway", scriptName: "gateway", useSQLite: true } },
      unsafeDirectSockets: direct,
    });
  }
  const before = childrenNamed("workerd");
  const notices: { atMs: number; line: string }[] = [];
  const mf = new Miniflare({
    host: "127.0.0.1",
    port: 0,
    workers,
    logRequests: false,
    // BENCH_INSPECTOR_PORT: the DevTools protocol for CPU profiles of the Workers (bench/profile.ts).
    ...(process.env.BENCH_INSPECTOR_PORT ? { inspectorPort: Number(process.env.BENCH_INSPECTOR_PORT) } : {}),
    // The gateway logs one JSON line per request (its real cost in workerd is kept): info lines
    // are dropped here unless slow (1 s or more), anything else is kept (bounded) to say what
    // went wrong in a run.
    handleRuntimeStdio(stdout: Readable, stderr: Readable) {
      for (const stream of [stdout, stderr]) {
        let rest = "";
        stream.on("data", (d: Buffer) => {
          const lines = (rest + d.toString()).split("\n");
          rest = lines.pop() ?? "";
          for (const line of lines) {
            if (line.trim() === "") continue;
            if (line.includes('"level":"info"') && Number(/"durationMs":(\d+)/.exec(line)?.[1] ?? 0) < 1000) continue;
            if (notices.length < 200) notices.push({ atMs: performance.now(), line: line.slice(0, 500) });
          }
        });
      }
    },
  });
  await mf.ready;
  const pids = [...childrenNamed("workerd")].filter((p) => !before.has(p));
  if (pids.length !== 1) throw new Error(`expected one new workerd process, found ${pids.length}`);
  const pid = pids[0] as number;
  const urls: Workerd["urls"] = { gateway: (await mf.unsafeGetDirectURL("gateway")).href.replace(/\/$/, "") };
  if (opts.extras) {
    urls.baseline = (await mf.unsafeGetDirectURL("baseline")).href.replace(/\/$/, "");
    urls.naive = (await mf.unsafeGetDirectURL("naive")).href.replace(/\/$/, "");
  }
  if (opts.probe) urls.probe = (await mf.unsafeGetDirectURL("probe")).href.replace(/\/$/, "");
  return {
    mf,
    pid,
    urls,
    cpuSeconds: () => processCpuSeconds(pid),
    notices: () => [...notices],
    dispose: () => mf.dispose(),
  };
}
