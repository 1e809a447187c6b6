/**
 * Deno entry: `deno run --allow-net --allow-env --allow-read=public src/runtimes/deno.ts` (read:
 * the map page's static files). Settings come from the environment (the Worker's names); PORT
 * (default 8787), HOST. L2 is Deno's Cache API (a bounded memory cache if it cannot be opened).
 * Checked with Deno's own types (deno.json, `npm run typecheck:deno`); everything it imports is
 * the runtime-free core.
 */
import { assetReader } from "../map/static-files.ts";
import { createGatewayServer, listenOptions, logListening, stopper } from "./server.ts";

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
