/// <reference types="node" />
/**
 * Runs the gateway as a real Deno or Bun process (the same commands as scripts/start-runtime.ts)
 * with a clean environment, waits for its "listening" line, and stops it with a signal.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Sandbox } from "../../sandbox/index.ts";

export type Runtime = "deno" | "bun";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = (name: string) => {
  const local = join(ROOT, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
};
/** As scripts/start-runtime.ts: Deno gets network and environment access, and reads public/ only. */
const COMMANDS: Record<Runtime, [string, string[]]> = {
  deno: [bin("deno"), ["run", "--allow-net", "--allow-env", "--allow-read=public", "src/runtimes/deno.ts"]],
  bun: [bin("bun"), ["src/runtimes/bun.ts"]],
};

export interface RuntimeProcess {
  /** Origin the gateway listens on, from its "listening" log line. */
  readonly url: string;
  /** Everything it wrote so far, stdout and stderr. */
  output(): string;
  /** Sends `signal` (SIGTERM), waits for the exit (SIGKILL after `graceMs`); idempotent. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<{ code: number | null; signal: string | null; ms: number }>;
}

/** The Worker's settings, pointing at the sandbox and its client_secret_post client. */
export function sandboxSettings(sandbox: Sandbox): Record<string, string> {
  return {
    PARTNER_TOKEN_URL: sandbox.tokenUrl,
    PARTNER_API_URL: sandbox.apiUrl,
    PARTNER_CLIENT_ID: sandbox.clients.post.id,
    PARTNER_CLIENT_SECRET: sandbox.clients.post.secret,
    PARTNER_CLIENT_AUTH: "client_secret_post",
  };
}

/**
 * Starts the runtime on a free port (PORT=0; the port comes back in the "listening" line, so no
 * race with another process for a port picked beforehand). Rejects with the output if the
 * process exits or stays silent for `timeoutMs`.
 */
export async function startRuntime(
  runtime: Runtime,
  settings: Record<string, string>,
  timeoutMs = 20_000,
  /** Runtime flags before the script (Deno KV: `--unstable-kv`, `--allow-read=…`). */
  flags: string[] = [],
): Promise<RuntimeProcess> {
  // Deno's Cache API is on disk under DENO_DIR and outlives the process: a private one per run,
  // so no run reads another's snapshot and nothing piles up.
  const denoDir = runtime === "deno" ? mkdtempSync(join(tmpdir(), "gateway-deno-")) : undefined;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? tmpdir(),
    NO_COLOR: "1",
    HOST: "127.0.0.1",
    PORT: "0",
    ...(denoDir ? { DENO_DIR: denoDir } : {}),
    ...settings,
  };
  const [command, args] = COMMANDS[runtime];
  const argv = flags.length > 0 ? [...args.slice(0, -1), ...flags, ...args.slice(-1)] : args;
  const child = spawn(command, argv, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    output += chunk;
  });

  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  const cleanup = () => {
    if (denoDir) rmSync(denoDir, { recursive: true, force: true });
  };
  void exited.then(cleanup);

  const url = await new Promise<string>((resolve, reject) => {
    let pending = "";
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${runtime}: ${why}\n${output}`));
    };
    const timer = setTimeout(() => fail(`no "listening" line within ${timeoutMs} ms`), timeoutMs);
    child.once("error", (err) => fail(`cannot start: ${err.message}`));
    void exited.then(({ code, signal }) => fail(`exited (${code ?? signal}) before listening`));
    child.stdout.on("data", (chunk: string) => {
      output += chunk;
      pending += chunk;
      let nl = pending.indexOf("\n");
      while (nl >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        nl = pending.indexOf("\n");
        try {
          const entry = JSON.parse(line) as { event?: string; url?: string };
          if (entry.event === "listening" && typeof entry.url === "string") {
            clearTimeout(timer);
            resolve(entry.url);
          }
        } catch {
          // Not a log line of ours.
        }
      }
    });
  });

  let stopping: Promise<{ code: number | null; signal: string | null; ms: number }> | undefined;
  return {
    url,
    output: () => output,
    stop(signal = "SIGTERM", graceMs = 5_000) {
      stopping ??= (async () => {
        const t0 = Date.now();
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        const kill = setTimeout(() => child.kill("SIGKILL"), graceMs);
        const result = await exited;
        clearTimeout(kill);
        return { ...result, ms: Date.now() - t0 };
      })();
      return stopping;
    },
  };
}
