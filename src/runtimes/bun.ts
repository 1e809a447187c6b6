/**
 * Bun entry: `bun src/runtimes/bun.ts`. Settings come from the environment (the Worker's names);
 * PORT (default 8787), HOST. Bun has no Cache API: L2 is a bounded memory cache. Checked with
 * Bun's own types (tsconfig.bun.json, `npm run typecheck:bun`); everything it imports is the
 * runtime-free core. Replicas share the token and the snapshot through Redis with
 * GATEWAY_STORE=redis://host:port (Bun's client).
 */
import { assetReader } from "../map/static-files.ts";
import { RedisCoordinator } from "./redis-coordinator.ts";
import { createGatewayServer, listenOptions, logListening, openCoordinator, stopper } from "./server.ts";

const settings = { ...Bun.env };
const coordinator = await openCoordinator(settings, "bun", { redis: (url) => RedisCoordinator.fromBun(url) });
const server = createGatewayServer(settings, {
  assets: assetReader((url) => Bun.file(url).bytes()),
  ...(coordinator ? { coordinator } : {}),
});
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
