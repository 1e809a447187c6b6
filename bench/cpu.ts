/// <reference types="node" />
/**
 * CPU time of the pure parts of a request, in process (Node runs the same TypeScript the Worker
 * bundles, on the same engine, V8): workerd cannot report CPU per request, so the handler's own
 * work is timed here with `process.cpuUsage` over many iterations, as the median over batches.
 *
 * The data: the sandbox's fleet generator (2,000 vehicles as served, 20,000 and 50,000), redacted and
 * prepared as the gateway object does (`prepareSnapshot`, once per partner answer), then
 * `loadPrepared` as every isolate does on an L1 fill. Answers are bytes: what `serialize` returns
 * is what leaves the isolate, with no UTF-8 step of its own.
 *
 * `node bench/cpu.ts` prints a table; `--json` prints the figures as one JSON line.
 */
import { createFleet } from "../sandbox/fleet.ts";
import type { SnapshotEnvelope } from "../src/gateway/types.ts";
import { findVin, loadPrepared, type Prepared, prepareSnapshot } from "../src/vehicles/prepared.ts";
import { parseVehicleQuery } from "../src/vehicles/query.ts";
import { redactVehicles } from "../src/vehicles/schema.ts";
import { queryVehicles, serializeVehicle, serializeVehicles } from "../src/vehicles/snapshot.ts";

/** A Berlin box (about 13.6 x 14.5 km) and a point at its centre, as an app would ask. */
export const BBOX = "13.30,52.45,13.50,52.58";
export const NEAR = "near=52.52,13.405&radius=1500";
const MAX_LIMIT = 5000;

export interface CpuFigure {
  name: string;
  /** Median CPU microseconds per operation, over batches. */
  medianUs: number;
  /** Spread: the lowest and highest batch median. */
  minUs: number;
  maxUs: number;
  iterations: number;
  /** What the operation returns, for context (vehicles matched, bytes). */
  note: string;
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** Median CPU per call of `fn`, over `batches` batches each long enough (~10 ms) for the clock. */
export function measure(name: string, fn: () => unknown, note: string, batches = 15): CpuFigure {
  // Warm up (JIT) and calibrate the batch size.
  let k = 1;
  const warmUntil = cpuUs() + 50_000;
  while (cpuUs() < warmUntil) fn();
  for (;;) {
    const t = cpuUs();
    for (let i = 0; i < k; i++) fn();
    if (cpuUs() - t >= 10_000 || k >= 1 << 20) break;
    k *= 2;
  }
  const per: number[] = [];
  for (let b = 0; b < batches; b++) {
    const t = cpuUs();
    for (let i = 0; i < k; i++) fn();
    per.push((cpuUs() - t) / k);
  }
  per.sort((a, b) => a - b);
  return {
    name,
    medianUs: per[Math.floor(per.length / 2)] as number,
    minUs: per[0] as number,
    maxUs: per[per.length - 1] as number,
    iterations: k * batches,
    note,
  };
}

/** The snapshot an isolate holds for a fleet of `size`, built as in production. */
export async function snapshotOf(size: number): Promise<{ envelope: SnapshotEnvelope; snapshot: Prepared }> {
  const items = createFleet(1, size).at(0);
  const { vehicles, dropped } = redactVehicles(items, Number.POSITIVE_INFINITY);
  const envelope = await prepareSnapshot(vehicles, { fetchedAt: Date.now(), dropped });
  return { envelope, snapshot: loadPrepared(envelope) };
}

const encoder = new TextEncoder();

export async function runCpuBench(): Promise<CpuFigure[]> {
  const out: CpuFigure[] = [];
  const q = (s: string) => parseVehicleQuery(new URLSearchParams(s), { maxLimit: MAX_LIMIT });

  for (const size of [2000, 20000, 50000]) {
    const { envelope, snapshot } = await snapshotOf(size);
    const tag = size.toLocaleString("en");
    const cases: [string, string][] =
      size === 2000
        ? [
            ["full page", ""],
            ["bbox", `bbox=${BBOX}`],
            ["near", NEAR],
          ]
        : [
            ["full page", ""],
            ["bbox", `bbox=${BBOX}`],
            ["near, 50 km, limit 5,000", "near=52.52,13.405&radius=50000"],
            ["bbox of the world", "bbox=-180,-90,180,90"],
          ];
    for (const [name, search] of cases) {
      const query = q(search);
      const result = queryVehicles(snapshot, query);
      const body = serializeVehicles(snapshot, result, { stale: false });
      const matched = `${result.total} of ${size} vehicles`;
      out.push(measure(`${name} query (${tag})`, () => queryVehicles(snapshot, query), matched));
      out.push(
        measure(
          `${name} query + serialize (${tag})`,
          () => serializeVehicles(snapshot, queryVehicles(snapshot, query), { stale: false }),
          `${body.length} bytes (what leaves the isolate)`,
        ),
      );
    }
    if (size === 2000) {
      const vin = (
        JSON.parse(new TextDecoder().decode(serializeVehicle(snapshot, 0, { stale: false }))) as {
          vehicle: { vin: string };
        }
      ).vehicle.vin;
      out.push(
        measure(
          "vin lookup + serialize (2,000)",
          () => serializeVehicle(snapshot, findVin(snapshot, vin), { stale: false }),
          "one vehicle",
        ),
      );
      const text = new TextDecoder().decode(snapshot.text);
      out.push(measure("UTF-8 of the full body (baseline's own work)", () => encoder.encode(text), ""));
    }
    out.push(
      measure(
        `loadPrepared (${tag}): an L1 fill`,
        () => loadPrepared(envelope),
        `${envelope.data.byteLength} bytes`,
        9,
      ),
    );
  }
  return out;
}

if (import.meta.main) {
  const figures = await runCpuBench();
  if (process.argv.includes("--json")) {
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } else {
    for (const f of figures) {
      console.log(
        `${f.name.padEnd(48)} ${f.medianUs.toFixed(1).padStart(9)} µs  (${f.minUs.toFixed(1)}–${f.maxUs.toFixed(1)})  ${f.note}`,
      );
    }
  }
}
