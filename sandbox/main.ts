/// <reference types="node" />
/**
 * CLI: `node sandbox/main.ts [--port 8788] [--host 127.0.0.1] [--fleet-size 2000] [--seed 1]
 * [--token-ttl 300] [--tick-ms 10000]`. Prints one line with the URLs and the sandbox client,
 * runs until SIGINT or SIGTERM, then closes every connection and exits.
 */
import { parseArgs } from "node:util";
import { type SandboxOptions, startSandbox } from "./index.ts";

const USAGE =
  "usage: node sandbox/main.ts [--port 8788] [--host 127.0.0.1] [--fleet-size 2000] [--seed 1] [--token-ttl 300] [--tick-ms 10000]";

function int(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^-?\d+$/.test(raw)) {
    console.error(`sandbox: --${name} must be a whole number\n${USAGE}`);
    process.exit(2);
  }
  return Number(raw);
}

let values: Record<string, string | boolean | undefined>;
try {
  ({ values } = parseArgs({
    options: {
      port: { type: "string" },
      host: { type: "string" },
      "fleet-size": { type: "string" },
      seed: { type: "string" },
      "token-ttl": { type: "string" },
      "tick-ms": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  }));
} catch (err) {
  console.error(`sandbox: ${(err as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

const str = (name: string) => values[name] as string | undefined;
const opts: SandboxOptions = {
  port: int("port", str("port")),
  host: str("host"),
  fleetSize: int("fleet-size", str("fleet-size")),
  seed: int("seed", str("seed")),
  tokenTtlS: int("token-ttl", str("token-ttl")),
  tickMs: int("tick-ms", str("tick-ms")),
};

const sandbox = await startSandbox(opts);
const { post } = sandbox.clients;
// One line, for a human and for scripts/start.ts to read. The secret is the sandbox's own
// well-known test secret (JSON-quoted: it holds characters a shell or .dev.vars would eat).
console.log(
  `sandbox: token ${sandbox.tokenUrl} api ${sandbox.apiUrl} control ${sandbox.controlUrl} ` +
    `client ${post.id} (client_secret_post) secret ${JSON.stringify(post.secret)} (sandbox-only) ` +
    `fleet ${sandbox.fleetSize} seed ${sandbox.seed}`,
);

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  sandbox.close().then(
    () => process.exit(0),
    (err) => {
      console.error(`sandbox: close after ${signal} failed`, err);
      process.exit(1);
    },
  );
};
process.once("SIGINT", () => stop("SIGINT"));
process.once("SIGTERM", () => stop("SIGTERM"));
