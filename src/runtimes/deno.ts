/**
 * Deno entry: `deno run --allow-net --allow-env --allow-read=public src/runtimes/deno.ts` (read:
 * the map page's static files). Settings come from the environment (the Worker's names); PORT
 * (default 8787), HOST. L2 is Deno's Cache API (a bounded memory cache if it cannot be opened).
 * Checked with Deno's own types (deno.json, `npm run typecheck:deno`); everything it imports is
 * the runtime-free core. Replicas share the token and the snapshot through Deno KV with
 * GATEWAY_STORE=kv:<path> (add `--unstable-kv --allow-read=<dir> --allow-write=<dir>` for a
 * self-hosted file; `kv:` alone on Deno Deploy).
 */
import { assetReader } from "../map/static-files.ts";
import { DenoKvCoordinator } from "./deno-kv-coordinator.ts";
import { createGatewayServer, listenOptions, logListening, openCoordinator, stopper } from "./server.ts";

const settings = Deno.env.toObject();
const coordinator = await openCoordinator(settings, "deno", { kv: (path) => DenoKvCoordinator.open(path) });
const server = createGatewayServer(settings, {
  assets: assetReader((url) => Deno.readFile(url)),
  ...(coordinator ? { coordinator } : {}),
});
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
