/**
 * Bun entry: `bun src/runtimes/bun.ts`. Settings come from the environment (the Worker's names);
 * PORT (default 8787), HOST. Bun has no Cache API: L2 is a bounded memory cache.
 */
import { assetReader } from "../map/static-files.ts";
import { createGatewayServer, listenOptions, logListening, stopper } from "./server.ts";

/** The parts of the `Bun` and `process` globals used here (typed locally: the core type check knows no runtime). */
interface BunLike {
  env: Record<string, string | undefined>;
  file(path: URL): { bytes(): Promise<Uint8Array<ArrayBuffer>> };
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
const server = createGatewayServer(settings, { assets: assetReader((url) => Bun.file(url).bytes()) });
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
