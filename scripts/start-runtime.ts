/// <reference types="node" />
/**
 * `npm run start:deno` / `npm run start:bun` (`node scripts/start-runtime.ts deno|bun`): the
 * gateway on Deno or Bun. With no PARTNER_* setting in the environment it first starts the
 * partner sandbox (here, in Node) and gives the runtime the sandbox's URLs and its
 * client_secret_post client; with settings, it runs the runtime with the environment as it is.
 * Ctrl-C or SIGTERM stops the runtime (gracefully, then by force), then the sandbox.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Sandbox, sandboxFleetSize, startSandbox } from "../sandbox/index.ts";
import { vendorMap } from "./vendor-map.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
/** The runtime commands; Deno gets network and environment access, and reads public/ (the map's files) only. */
const COMMANDS: Record<string, [string, string[]]> = {
  deno: ["deno", ["run", "--allow-net", "--allow-env", "--allow-read=public", "src/runtimes/deno.ts"]],
  bun: ["bun", ["src/runtimes/bun.ts"]],
};
/** The sandbox's usual port; taken (another `npm start`), any free one. */
const SANDBOX_PORT = 8788;
/** How long the runtime may take to stop after a signal before it is killed. */
const STOP_GRACE_MS = 10_000;

const runtime = process.argv[2] ?? "";
const command = COMMANDS[runtime];
if (!command) {
  console.error("usage: node scripts/start-runtime.ts deno|bun");
  process.exit(2);
}
const [name, args] = command;
// The project's pinned binary (node_modules/.bin), else whatever PATH has.
const local = join(ROOT, "node_modules", ".bin", name);
const bin = existsSync(local) ? local : name;

// The /map page's Leaflet files (wrangler's [build] command does this for the Worker).
await vendorMap();

let sandbox: Sandbox | undefined;
const env: NodeJS.ProcessEnv = { ...process.env };
if (!Object.keys(process.env).some((k) => k.startsWith("PARTNER_"))) {
  try {
    sandbox = await startSandbox({ port: SANDBOX_PORT, fleetSize: sandboxFleetSize() });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    sandbox = await startSandbox({ port: 0, fleetSize: sandboxFleetSize() });
  }
  const { post } = sandbox.clients;
  Object.assign(env, {
    PARTNER_TOKEN_URL: sandbox.tokenUrl,
    PARTNER_API_URL: sandbox.apiUrl,
    PARTNER_CLIENT_ID: post.id,
    PARTNER_CLIENT_SECRET: post.secret,
    PARTNER_CLIENT_AUTH: "client_secret_post",
    // Local development: loopback only, unless HOST says otherwise.
    HOST: process.env.HOST ?? "127.0.0.1",
  });
  console.log(
    `start: partner sandbox at ${sandbox.url} (fleet ${sandbox.fleetSize}, client ${post.id}, control ${sandbox.controlUrl}); ` +
      `gateway on ${runtime}, PORT ${env.PORT ?? 8787}`,
  );
} else {
  console.log(`start: gateway on ${runtime} with the PARTNER_* settings of the environment`);
}

const child: ChildProcess = spawn(bin, args, { cwd: ROOT, env, stdio: "inherit" });

let finishing = false;
async function finish(code: number): Promise<never> {
  if (!finishing) {
    finishing = true;
    await sandbox?.close();
  }
  process.exit(code);
}

child.once("error", (err) => {
  console.error(`start: cannot run ${bin}: ${err.message}`);
  void finish(127);
});
child.once("exit", (code, signal) => {
  void finish(code ?? (signal ? 1 : 0));
});

// Ctrl-C reaches the whole foreground process group, the runtime included; a signal sent to this
// process alone is passed on. The runtime ignores a second one, and is killed if it hangs.
let stopping = false;
const stop = (signal: NodeJS.Signals) => {
  if (stopping) return;
  stopping = true;
  if (child.exitCode === null && child.signalCode === null) {
    child.kill(signal);
    setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS).unref();
  }
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
