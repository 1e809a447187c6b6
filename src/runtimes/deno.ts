/**
 * Deno entry: `deno run --allow-net --allow-env --allow-read src/runtimes/deno.ts`. Settings come
 * from the environment (the Worker's names); PORT (default 8787), HOST. L2 is Deno's Cache API.
 * Replicas share the token and the snapshot through Deno KV with GATEWAY_STORE=kv:<path> (add
 * `--unstable-kv --allow-read --allow-write` for a self-hosted file; `kv:` alone on Deno Deploy).
 */
import { DenoKvCoordinator } from "./deno-kv-coordinator.ts";
import { createGatewayServer, listenOptions, logListening, openCoordinator, stopper } from "./server.ts";

/** The part of the `Deno` global used here (typed locally: the core type check knows no runtime). */
interface DenoLike {
  env: { toObject(): Record<string, string> };
  serve(
    options: { port: number; hostname?: string; onListen(addr: { hostname: string; port: number }): void },
    handler: (request: Request) => Promise<Response>,
  ): { shutdown(): Promise<void> };
  addSignalListener(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
  exit(code: number): never;
}
const { Deno } = globalThis as unknown as { Deno: DenoLike };

const settings = Deno.env.toObject();
const coordinator = await openCoordinator(settings, "deno", { kv: (path) => DenoKvCoordinator.open(path) });
const server = createGatewayServer(settings, coordinator ? { coordinator } : {});
const { port, hostname } = listenOptions(settings);
const http = Deno.serve(
  { port, ...(hostname ? { hostname } : {}), onListen: (a) => logListening(server, "deno", a.hostname, a.port) },
  server.fetch,
);
const stop = stopper(
  server,
  () => http.shutdown(),
  (code) => Deno.exit(code),
);
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
