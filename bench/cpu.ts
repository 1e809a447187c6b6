/// <reference types="node" />
/**
 * CPU time of the pure parts of a request, in process (Node runs the same TypeScript the Worker
 * bundles, on the same engine, V8): workerd cannot report CPU per request, so the handler's own
 * work is timed here with `process.cpuUsage` over many iterations, as the median over batches.
 *
 * The data: the sandbox's fleet generator (2,000 vehicles as served, 20,000 and 50,000), redacted and
 * serialized as the gateway object does, then `buildSnapshot` as every isolate does on an L1
 * miss. Steady state: the per-vehicle JSON memo of the snapshot is warm, as in a live isolate.
 *
 * `node bench/cpu.ts` prints a table; `--json` prints the figures as one JSON line.
 */
import { createFleet } from "../sandbox/fleet.ts";
import type { SnapshotEnvelope } from "../src/deps.ts";
import { parseVehicleQuery } from "../src/vehicles/query.ts";
import { redactVehicles } from "../src/vehicles/schema.ts";
import { buildSnapshot, queryVehicles, type Snapshot, serializeVehicles } from "../src/vehicles/snapshot.ts";

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
export function snapshotOf(size: number): { envelope: SnapshotEnvelope; snapshot: Snapshot } {
  const items = createFleet(1, size).at(0);
  const { vehicles, dropped } = redactVehicles(items, Number.POSITIVE_INFINITY);
  const body = JSON.stringify(vehicles);
  const envelope: SnapshotEnvelope = { body, fetchedAt: Date.now(), etag: '"bench"', count: vehicles.length, dropped };
  return { envelope, snapshot: buildSnapshot(envelope) };
}

const encoder = new TextEncoder();

export function runCpuBench(): CpuFigure[] {
  const out: CpuFigure[] = [];
  const q = (s: string) => parseVehicleQuery(new URLSearchParams(s), { maxLimit: MAX_LIMIT });

  for (const size of [2000, 20000]) {
    const { envelope, snapshot } = snapshotOf(size);
    const tag = size.toLocaleString("en");
    const cases: [string, string][] =
      size === 2000
        ? [
            ["full", ""],
            ["bbox", `bbox=${BBOX}`],
            ["near", NEAR],
          ]
        : [["bbox", `bbox=${BBOX}`]];
    for (const [name, search] of cases) {
      const query = q(search);
      const result = queryVehicles(snapshot, query);
      const body = serializeVehicles(snapshot, result, { stale: false, query });
      const matched = `${result.total} of ${size} vehicles`;
      out.push(measure(`${name} query (${tag})`, () => queryVehicles(snapshot, query), matched));
      out.push(
        measure(
          `${name} query + serialize (${tag})`,
          () => serializeVehicles(snapshot, queryVehicles(snapshot, query), { stale: false, query }),
          `${body.length} bytes`,
        ),
      );
      // The runtime encodes the string to UTF-8 to send it: the same step the baseline pays.
      out.push(
        measure(
          `${name} query + serialize + UTF-8 (${tag})`,
          () => encoder.encode(serializeVehicles(snapshot, queryVehicles(snapshot, query), { stale: false, query })),
          "what leaves the isolate",
        ),
      );
    }
    if (size === 2000) {
      const vin = (snapshot.vehicles[0] as { vin: string }).vin;
      out.push(
        measure(
          "vin lookup + serialize (2,000)",
          () => JSON.stringify({ vehicle: snapshot.byVin.get(vin), fetchedAt: "", stale: false }),
          "one vehicle",
        ),
      );
      out.push(measure("UTF-8 of the full body (baseline's own work)", () => encoder.encode(snapshot.body), ""));
    }
    out.push(
      measure(`buildSnapshot (${tag}): an L1 miss`, () => buildSnapshot(envelope), `${envelope.body.length} bytes`, 9),
    );
  }
  // The L1 build at the largest fleet size the bench runs (issue 10): the build only, it is the
  // figure the per-size profile compares with.
  const { envelope } = snapshotOf(50000);
  out.push(
    measure("buildSnapshot (50,000): an L1 miss", () => buildSnapshot(envelope), `${envelope.body.length} bytes`, 5),
  );
  return out;
}

if (import.meta.main) {
  const figures = runCpuBench();
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
