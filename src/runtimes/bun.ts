/**
 * Bun entry: `bun src/runtimes/bun.ts`. Settings come from the environment (the Worker's names);
 * PORT (default 8787), HOST. Bun has no Cache API: L2 is a bounded memory cache. Replicas share
 * the token and the snapshot through Redis with GATEWAY_STORE=redis://host:port (Bun's client).
 */
import { RedisCoordinator } from "./redis-coordinator.ts";
import { createGatewayServer, listenOptions, logListening, openCoordinator, stopper } from "./server.ts";

/** The parts of the `Bun` and `process` globals used here (typed locally: the core type check knows no runtime). */
interface BunLike {
  env: Record<string, string | undefined>;
  serve(options: { port: number; hostname?: string; fetch(request: Request): Promise<Response> }): {
    hostname: string;
    port: number;
    stop(): Promise<void>;
  };
}
interface ProcessLike {
  once(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
  exit(code: number): never;
}
const { Bun, process } = globalThis as unknown as { Bun: BunLike; process: ProcessLike };

const settings = { ...Bun.env };
const coordinator = await openCoordinator(settings, "bun", { redis: (url) => RedisCoordinator.fromBun(url) });
const server = createGatewayServer(settings, coordinator ? { coordinator } : {});
const { port, hostname } = listenOptions(settings);
const http = Bun.serve({ port, ...(hostname ? { hostname } : {}), fetch: server.fetch });
logListening(server, "bun", http.hostname, http.port);
const stop = stopper(
  server,
  () => http.stop(),
  (code) => process.exit(code),
);
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
