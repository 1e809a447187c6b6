/**
 * Bun entry: `bun src/runtimes/bun.ts`. Settings come from the environment (the Worker's names);
 * PORT (default 8787), HOST. Bun has no Cache API: L2 is a bounded memory cache. Checked with
 * Bun's own types (tsconfig.bun.json, `npm run typecheck:bun`); everything it imports is the
 * runtime-free core.
 */
import { assetReader } from "../map/static-files.ts";
import { createGatewayServer, listenOptions, logListening, stopper } from "./server.ts";

const settings = { ...Bun.env };
const server = createGatewayServer(settings, { assets: assetReader((url) => Bun.file(url).bytes()) });
const { port, hostname } = listenOptions(settings);
const http = Bun.serve({ port, ...(hostname ? { hostname } : {}), fetch: server.fetch });
// Bun types both as optional: they are undefined only on a unix socket, which this entry never asks for.
logListening(server, "bun", http.hostname ?? hostname ?? "localhost", http.port ?? port);
const stop = stopper(
  server,
  () => http.stop(),
  (code) => process.exit(code),
);
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
