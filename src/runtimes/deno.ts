/**
 * Deno entry: `deno run --allow-net --allow-env --allow-read=public src/runtimes/deno.ts`. Settings come
 * from the environment (the Worker's names); PORT (default 8787), HOST. L2 is Deno's Cache API.
 */
import { assetReader } from "../map/static-files.ts";
import { createGatewayServer, listenOptions, logListening, stopper } from "./server.ts";

/** The part of the `Deno` global used here (typed locally: the core type check knows no runtime). */
interface DenoLike {
  env: { toObject(): Record<string, string> };
  readFile(path: URL): Promise<Uint8Array<ArrayBuffer>>;
  serve(
    options: { port: number; hostname?: string; onListen(addr: { hostname: string; port: number }): void },
    handler: (request: Request) => Promise<Response>,
  ): { shutdown(): Promise<void> };
  addSignalListener(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
  exit(code: number): never;
}
const { Deno } = globalThis as unknown as { Deno: DenoLike };

const settings = Deno.env.toObject();
const server = createGatewayServer(settings, { assets: assetReader((url) => Deno.readFile(url)) });
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
