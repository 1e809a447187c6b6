/// <reference types="node" />
/**
 * `npm start`: the gateway under `wrangler dev` on http://127.0.0.1:8787.
 *
 * - No `.dev.vars` (or one without PARTNER_CLIENT_ID): starts the local partner sandbox
 *   (sandbox/, a real OAuth 2.0 token endpoint and the vehicles API) on 127.0.0.1:8788, or a
 *   free port when that one is taken, and points the gateway at it with `--var NAME:VALUE`
 *   overrides (they win over wrangler.toml and .dev.vars). Its state lives in a temporary
 *   directory: every start is a cold start against a fresh sandbox.
 * - `.dev.vars` with PARTNER_CLIENT_ID: plain `wrangler dev`, so the real partner settings in
 *   .dev.vars are used (see .dev.vars.example). When there is no .dev.vars wrangler reads `.env`,
 *   so the same rule applies to it.
 *
 * Ctrl-C (SIGINT) or SIGTERM stops both: wrangler runs in its own process group (with workerd
 * under it), and the whole group is signalled, then killed if it lingers. `kill <npm pid>`
 * works too: npm's shell dies without passing the signal on, and we stop when our parent goes.
 *
 * Options: `--port 8787` (gateway), `--sandbox-port 8788`. Also importable: `startLocal()`
 * (the browser test starts a gateway on free ports with it).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type Sandbox, sandboxFleetSize, startSandbox } from "../sandbox/index.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DEFAULT_PORT = 8787;
const DEFAULT_SANDBOX_PORT = 8788;
/** How long wrangler may take to answer its first request. */
const READY_TIMEOUT_MS = 60_000;
/** How long wrangler and workerd get to exit after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;

/** Minimal dotenv reading (what wrangler accepts in .dev.vars): KEY=value, quotes, # comments. */
export function parseDotEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (!m?.[1]) continue;
    let value = m[2] ?? "";
    const quoted = /^(["'`])([\s\S]*)\1$/.exec(value);
    if (quoted) value = quoted[1] === '"' ? (quoted[2] ?? "").replace(/\\n/g, "\n") : (quoted[2] ?? "");
    else value = value.replace(/\s+#.*$/, "");
    out[m[1]] = value;
  }
  return out;
}

/** The settings file wrangler dev will read (.dev.vars first; .env only when there is no .dev.vars). */
function localSettings(): { file: string; vars: Record<string, string> } | undefined {
  for (const name of [".dev.vars", ".env"]) {
    const file = join(ROOT, name);
    if (existsSync(file)) return { file: name, vars: parseDotEnv(readFileSync(file, "utf8")) };
  }
  return undefined;
}

/** PARTNER_API_URL as wrangler.toml sets it (for the one line we print). */
function tomlVar(name: string): string | undefined {
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  return new RegExp(`^\\s*${name}\\s*=\\s*"([^"]*)"`, "m").exec(toml)?.[1];
}

function portIsFree(port: number, host: string): Promise<boolean> {
  return new Promise((done) => {
    const s = createServer();
    s.once("error", () => done(false));
    s.listen(port, host, () => s.close(() => done(true)));
  });
}

/** A port that was free a moment ago (the OS hands out ephemeral ports in turn, so a reuse race is unlikely). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const s = createServer();
  await new Promise<void>((done, fail) => {
    s.once("error", fail);
    s.listen(0, host, () => done());
  });
  const address = s.address();
  await new Promise((done) => s.close(done));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** wrangler's CLI script, run with this Node (24) rather than whatever `node` is on PATH. */
function wranglerBin(): string {
  const require = createRequire(join(ROOT, "package.json"));
  const pkgPath = require.resolve("wrangler/package.json");
  const pkg = JSON.parse(readFileSync(pkgPath, "utf8")) as { bin: Record<string, string> };
  return join(dirname(pkgPath), pkg.bin.wrangler ?? "bin/wrangler.js");
}

/** Signals wrangler's whole process group (wrangler, esbuild, workerd). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

export interface StartOptions {
  /** Gateway port; default 8787; 0 picks a free one. */
  port?: number | undefined;
  /** Sandbox port; default 8788, or a free one when taken. */
  sandboxPort?: number | undefined;
  /** Force the sandbox even when .dev.vars names a real partner (tests). */
  sandbox?: boolean;
  /** wrangler's output: inherited (npm start), or kept (its tail is shown when start fails) for tests. */
  quiet?: boolean;
}

export interface Local {
  /** Where the gateway listens, e.g. http://127.0.0.1:8787. */
  url: string;
  /** Who it talks to: the sandbox's origin or the real partner API URL. */
  partner: string;
  /** The sandbox, when it runs one. */
  sandbox: Sandbox | undefined;
  /** Settles when wrangler exits (by itself or through stop()). */
  exited: Promise<number | null>;
  /** Stops wrangler (the whole group) and the sandbox; idempotent. */
  stop(): Promise<void>;
}

/** Starts the sandbox (unless real credentials are configured) and wrangler dev; resolves when the gateway answers. */
export async function startLocal(opts: StartOptions = {}): Promise<Local> {
  const host = "127.0.0.1";
  const port = opts.port === 0 ? await freePort(host) : (opts.port ?? DEFAULT_PORT);
  if (!(await portIsFree(port, host))) {
    throw new Error(`port ${port} on ${host} is taken (another npm start or wrangler dev?); use --port`);
  }
  const settings = localSettings();
  const real = !opts.sandbox && Boolean(settings?.vars.PARTNER_CLIENT_ID);

  let sandbox: Sandbox | undefined;
  let persistDir: string | undefined;
  const args = [wranglerBin(), "dev", "--ip", host, "--port", String(port), "--show-interactive-dev-session=false"];
  // /__scheduled runs the cron warm-up by hand (wrangler dev does not fire crons itself).
  args.push("--test-scheduled");
  let partner: string;
  if (real) {
    partner = settings?.vars.PARTNER_API_URL || tomlVar("PARTNER_API_URL") || "(PARTNER_API_URL unset)";
  } else {
    const wanted = opts.sandboxPort ?? DEFAULT_SANDBOX_PORT;
    sandbox = await startSandbox({
      port: (await portIsFree(wanted, host)) ? wanted : 0,
      host,
      fleetSize: sandboxFleetSize(),
    });
    const { post } = sandbox.clients;
    persistDir = await mkdtemp(join(tmpdir(), "sharenow-gateway-dev-"));
    // `--var NAME:VALUE` splits at the first colon only, so the sandbox secret's `:` survives;
    // spawn passes argv without a shell, so its `#`, `&` and `?` do too.
    const vars = {
      PARTNER_TOKEN_URL: sandbox.tokenUrl,
      PARTNER_API_URL: sandbox.apiUrl,
      PARTNER_CLIENT_ID: post.id,
      PARTNER_CLIENT_SECRET: post.secret,
      PARTNER_CLIENT_AUTH: "client_secret_post",
    };
    for (const [name, value] of Object.entries(vars)) args.push("--var", `${name}:${value}`);
    args.push("--persist-to", persistDir);
    partner = sandbox.url;
  }

  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    // Its own process group: a terminal's Ctrl-C reaches only us, and we stop the whole group.
    detached: true,
    stdio: ["ignore", opts.quiet ? "pipe" : "inherit", opts.quiet ? "pipe" : "inherit"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_HIDE_BANNER: "true" },
  });
  const tail: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding("utf8");
    stream?.on("data", (chunk: string) => {
      tail.push(chunk);
      if (tail.length > 40) tail.shift();
    });
  }
  // Should this process die without stop() (an uncaught error), take wrangler down with it.
  const onExit = () => signalGroup(child, "SIGKILL");
  process.once("exit", onExit);
  const exited = new Promise<number | null>((done) => {
    child.once("exit", (code) => done(code));
    child.once("error", () => done(null));
  });

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        signalGroup(child, "SIGTERM");
        const timer = setTimeout(() => signalGroup(child, "SIGKILL"), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      // workerd may outlive wrangler for a moment: make sure nothing of the group is left.
      signalGroup(child, "SIGKILL");
      process.off("exit", onExit);
      await sandbox?.close();
      if (persistDir) await rm(persistDir, { recursive: true, force: true });
    })();
    return stopping;
  };

  const url = `http://${host}:${port}`;
  try {
    await waitForGateway(url, exited);
  } catch (err) {
    await stop();
    if (opts.quiet && tail.length) (err as Error).message += `\n--- wrangler output (tail) ---\n${tail.join("")}`;
    throw err;
  }
  return { url, partner, sandbox, exited, stop };
}

/** Polls /health until wrangler answers at all (any status: a misconfigured gateway still says so). */
async function waitForGateway(url: string, exited: Promise<number | null>): Promise<void> {
  let gone = false;
  exited.then(() => {
    gone = true;
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (gone) throw new Error("wrangler dev exited before the gateway answered");
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      await res.body?.cancel();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`the gateway did not answer on ${url} within ${READY_TIMEOUT_MS / 1000} s`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { port: { type: "string" }, "sandbox-port": { type: "string" } } });
  const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));
  const started = performance.now();
  const local = await startLocal({ port: num(values.port), sandboxPort: num(values["sandbox-port"]) });
  const ms = Math.round(performance.now() - started);
  const who = local.sandbox
    ? `the local partner sandbox at ${local.partner} (client ${local.sandbox.clients.post.id}, client_secret_post; no .dev.vars credentials)`
    : `${local.partner} (credentials from ${localSettings()?.file ?? ".dev.vars"})`;
  console.log(
    `\nnpm start: gateway on ${local.url} (try ${local.url}/v1/vehicles?limit=3, docs at ${local.url}/docs, map at ${local.url}/map) talking to ${who}; ready in ${ms} ms; Ctrl-C stops it\n`,
  );

  let signalled = false;
  const shutdown = (signal: string) => {
    if (signalled) return;
    signalled = true;
    console.log(`npm start: ${signal}, stopping wrangler and ${local.sandbox ? "the sandbox" : "nothing else"}`);
    local.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error("npm start: stop failed", err);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGHUP", () => shutdown("SIGHUP"));
  // `kill <npm pid>`: npm passes SIGTERM to its `sh -c`, which dies without passing it on, and
  // we would be left behind (adopted by init). Notice that and stop as if signalled.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) shutdown("parent exited");
  }, 250).unref();
  const code = await local.exited;
  if (!signalled) {
    console.error(`npm start: wrangler dev exited (${code}); stopping`);
    await local.stop();
    process.exit(code ?? 1);
  }
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    console.error(`npm start: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
