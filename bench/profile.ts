/// <reference types="node" />
/**
 * `node bench/profile.ts [--fleet 20000] [--path /v1/vehicles] [--connections 500]`: a V8 CPU
 * profile of the gateway's isolate (the Worker and, locally, its Durable Object) during one cold
 * stampede, summed by function (self time): where workerd's CPU goes in the stampede, which
 * /proc only gives as a total. Same pinning as the bench. `--duration S` profiles a closed loop
 * (8 connections, after a 1 s warm-up) instead; `--header "name: value"` is sent with each request.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startSandbox } from "../sandbox/index.ts";
import { gatewayBindings, load, runPinned } from "./run.ts";
import { fleetArg } from "./snapshot-memory.ts";
import { buildGateway, startWorkerd } from "./workerd.ts";

runPinned(import.meta.url);
const { values } = parseArgs({
  options: {
    fleet: { type: "string" },
    path: { type: "string", default: "/v1/vehicles" },
    connections: { type: "string", default: "500" },
    /** Profile a second burst, after a first one filled the isolate (per-request costs only). */
    warm: { type: "boolean", default: false },
    /** `name: value`, sent with every request (e.g. `x-gateway-bypass: memory` for the Cache API tier). */
    header: { type: "string", multiple: true, default: [] },
    /** Profile a closed loop of this many seconds instead of one burst. */
    duration: { type: "string" },
  },
});
const [fleet = 20000] = fleetArg(process.argv, [20000]);
const path = values.path;
const connections = Number(values.connections);
const warm = values.warm;
const headers = Object.fromEntries(
  values.header.map((h) => {
    const at = h.indexOf(":");
    return [h.slice(0, at).trim(), h.slice(at + 1).trim()];
  }),
);
const durationS = values.duration === undefined ? undefined : Number(values.duration);
const port = 9300 + Math.floor(Math.random() * 500);
process.env.BENCH_INSPECTOR_PORT = String(port);

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const outdir = mkdtempSync(join(tmpdir(), "profile-"));
try {
  const bundle = await buildGateway(outdir);
  const sb = await startSandbox({ port: 0, host: "127.0.0.1", fleetSize: fleet, seed: 1, tickMs: 0 });
  const w = await startWorkerd({ bundle, gatewayBindings: gatewayBindings(sb) });
  try {
    const targets = (await (await fetch(`http://127.0.0.1:${port}/json`)).json()) as {
      id: string;
      title?: string;
      webSocketDebuggerUrl: string;
    }[];
    const target = targets.find((t) => /gateway/.test(`${t.title} ${t.id} ${t.webSocketDebuggerUrl}`)) ?? targets[0];
    if (!target) throw new Error("no inspector target");
    const ws = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((r, j) => {
      ws.onopen = r;
      ws.onerror = j;
    });
    let id = 0;
    const waiting = new Map<number, (v: unknown) => void>();
    ws.onmessage = (e) => {
      const m = JSON.parse(String(e.data)) as { id?: number; result?: unknown };
      if (m.id !== undefined) waiting.get(m.id)?.(m.result);
    };
    const send = (method: string, params: object = {}) =>
      new Promise<unknown>((resolve) => {
        const n = ++id;
        waiting.set(n, resolve);
        ws.send(JSON.stringify({ id: n, method, params }));
      });
    // `VIN` in the path: the first vehicle's (one request, before the profile; it fills nothing
    // the bypassed tiers would use).
    const vin = path.includes("VIN")
      ? ((await (await fetch(`${w.urls.gateway}/v1/vehicles?limit=1`)).json()) as { vehicles: { vin: string }[] })
          .vehicles[0]?.vin
      : undefined;
    const spec = {
      url: `${w.urls.gateway}${vin === undefined ? path : path.replace("VIN", vin)}`,
      headers,
      ...(durationS === undefined
        ? { connections, burst: true, timeoutS: 30 }
        : { connections: Math.min(connections, 8), durationS }),
    };
    if (warm || durationS !== undefined) await load({ ...spec, ...(durationS === undefined ? {} : { durationS: 1 }) });
    await send("Profiler.enable");
    await send("Profiler.setSamplingInterval", { interval: 200 });
    await send("Profiler.start");
    const cpu0 = w.cpuSeconds();
    const r = await load(spec);
    const cpu = w.cpuSeconds() - cpu0;
    const { profile } = (await send("Profiler.stop")) as { profile: Profile };
    ws.close();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const self = new Map<string, number>();
    let total = 0;
    profile.samples.forEach((sid, i) => {
      const n = byId.get(sid);
      const dt = profile.timeDeltas[i] ?? 0;
      if (!n) return;
      const key = `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber}`;
      self.set(key, (self.get(key) ?? 0) + dt);
      total += dt;
    });
    console.log(
      `${r.ok}/${r.requests} ok, p50 ${r.p50.toFixed(0)} ms, p99 ${r.p99.toFixed(0)} ms; workerd CPU ${cpu.toFixed(2)} s (all threads); profile span ${(total / 1e6).toFixed(2)} s`,
    );
    const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, 40);
    for (const [k, us] of rows) console.log(`${(us / 1000).toFixed(1).padStart(9)} ms  ${k}`);
  } finally {
    await w.dispose().catch(() => {});
    await sb.close();
  }
} finally {
  rmSync(outdir, { recursive: true, force: true });
}
