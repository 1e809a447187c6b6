/// <reference types="node" />
/**
 * `node bench/stampede.ts [--fleet 20000] [--runs 3] [--path /v1/vehicles]`: only the cold
 * stampede of `npm run bench` (500 concurrent requests on a fresh workerd), repeated, with when
 * the partner was asked: for iterating on the stampede's latency and memory without the whole
 * bench. Same pinning as the bench (workerd and the sandbox on core 0, the load on core 1).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startSandbox } from "../sandbox/index.ts";
import { runPinned, stampede } from "./run.ts";
import { fleetArg } from "./snapshot-memory.ts";
import { buildGateway } from "./workerd.ts";

runPinned(import.meta.url);
const { values } = parseArgs({
  options: {
    fleet: { type: "string" },
    runs: { type: "string", default: "3" },
    path: { type: "string", default: "/v1/vehicles" },
  },
});
const [fleet = 20000] = fleetArg(process.argv, [20000]);
const runs = Number(values.runs);
const path = values.path;
const outdir = mkdtempSync(join(tmpdir(), "stampede-"));
try {
  const bundle = await buildGateway(outdir);
  const sb = await startSandbox({ port: 0, host: "127.0.0.1", fleetSize: fleet, seed: 1, tickMs: 0 });
  try {
    for (let i = 0; i < runs; i++) {
      const st = await stampede(bundle, sb, path);
      const c = st.isolate ?? {};
      console.log(
        [
          `run ${i + 1}: ${st.ok}/${st.requests} ok`,
          `p50 ${st.p50.toFixed(0)} ms, p99 ${st.p99.toFixed(0)} ms, max ${st.max.toFixed(0)} ms`,
          `first byte min ${st.ttfb.min.toFixed(0)} ms, p50 ${st.ttfb.p50.toFixed(0)} ms, p99 ${st.ttfb.p99.toFixed(0)} ms`,
          `workerd CPU ${st.serverCpuS.toFixed(2)} s, client CPU ${st.clientCpuS.toFixed(2)} s, ${st.durationS.toFixed(2)} s in all`,
          `RSS peak ${(st.rssPeakBytes / 2 ** 20).toFixed(0)} MiB (VmHWM ${(st.hwmBytes / 2 ** 20).toFixed(0)})`,
          `token ${st.tokenRequests} + partner ${st.partnerRequests}`,
          `gatewayCalls ${c.gatewayCalls}, fills ${c.fills}, joined ${c.joined}`,
        ].join(" · "),
      );
    }
  } finally {
    await sb.close();
  }
} finally {
  rmSync(outdir, { recursive: true, force: true });
}
