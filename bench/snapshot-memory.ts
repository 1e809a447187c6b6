/// <reference types="node" />
/**
 * Memory of one snapshot in an isolate: the V8 heap (and the memory outside it that typed arrays
 * and other ArrayBuffers hold) that the loaded snapshot keeps alive, measured in Node (the same
 * engine and the same TypeScript the Worker bundles) with `--expose-gc`.
 *
 * `node --expose-gc bench/snapshot-memory.ts --fleet 2000,20000,50000 [--json]`
 *
 * Method, per measurement: a fresh copy of the envelope (`structuredClone`, as an RPC or a Cache
 * API read hands the isolate a copy of its own), the loader run on it, the envelope dropped, two
 * full GCs; the figure is the memory still in use minus the memory in use before the copy. So
 * whatever the loaded form keeps of the envelope (a body string it splices from, typed arrays it
 * views) counts, and what the loader only used on the way does not. The median of `repeats`.
 * The peak during the load (before the GC: the transient garbage too) is reported beside it.
 *
 * The loader is the one place to change when the isolate's form of the snapshot changes: see
 * `LOADER` below (`loadPrepared`, the L1 fill of every isolate).
 */
import type { SnapshotEnvelope } from "../src/gateway/types.ts";
import { loadPrepared } from "../src/vehicles/prepared.ts";
import { snapshotOf } from "./cpu.ts";

/** What an isolate does with the envelope it received: the result is what stays in L1. */
export type SnapshotLoader<E> = (envelope: E) => unknown;

/** The isolate: `loadPrepared` of the prepared snapshot received through the feed or from the Cache API. */
export const LOADER: {
  name: string;
  envelopeOf: (size: number) => Promise<SnapshotEnvelope>;
  load: SnapshotLoader<SnapshotEnvelope>;
} = {
  name: "loadPrepared",
  envelopeOf: async (size) => (await snapshotOf(size)).envelope,
  load: (envelope) => loadPrepared(envelope),
};

export interface SnapshotMemory {
  size: number;
  loader: string;
  /** V8 heap the loaded snapshot keeps alive, bytes (median). */
  heapBytes: number;
  /** ArrayBuffer and other off-heap memory it keeps alive, bytes (median; typed-array columns live here). */
  externalBytes: number;
  /** heapBytes + externalBytes: what counts against an isolate's 128 MB. */
  totalBytes: number;
  /** Heap + external in use at the end of the load, before any GC, above the start (includes garbage). */
  peakBytes: number;
  /** The envelope copy itself, as it arrived (heap + external), bytes. */
  envelopeBytes: number;
  /** Each measurement's totalBytes. */
  samples: number[];
}

type Gc = () => void;

function gcOrThrow(): Gc {
  const gc = (globalThis as { gc?: Gc }).gc;
  if (!gc) throw new Error("run node with --expose-gc");
  return () => {
    gc();
    gc();
  };
}

function used(): { heap: number; external: number } {
  const m = process.memoryUsage();
  // `external` includes `arrayBuffers` (Node's docs): counted once.
  return { heap: m.heapUsed, external: m.external };
}

/** Keeps each loaded snapshot reachable until it has been measured. */
const alive: unknown[] = [];

/**
 * The memory one loaded snapshot keeps alive. `envelope` is the template (kept alive by the caller
 * throughout, so it is not counted); each measurement loads a fresh structured clone of it.
 */
export function measureSnapshotMemory<E>(
  size: number,
  envelope: E,
  loader: SnapshotLoader<E>,
  opts: { name?: string; repeats?: number } = {},
): SnapshotMemory {
  const gc = gcOrThrow();
  const repeats = opts.repeats ?? 3;
  const heap: number[] = [];
  const external: number[] = [];
  const peak: number[] = [];
  const env: number[] = [];
  for (let i = 0; i < repeats; i++) {
    alive.length = 0;
    gc();
    const before = used();
    let copy: E | undefined = structuredClone(envelope);
    gc();
    const withCopy = used();
    env.push(withCopy.heap - before.heap + (withCopy.external - before.external));
    alive.push(loader(copy));
    const atEnd = used();
    peak.push(atEnd.heap - before.heap + (atEnd.external - before.external));
    copy = undefined;
    gc();
    const after = used();
    heap.push(after.heap - before.heap);
    external.push(after.external - before.external);
  }
  alive.length = 0;
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] as number;
  const samples = heap.map((h, i) => h + (external[i] as number));
  return {
    size,
    loader: opts.name ?? "loader",
    heapBytes: median(heap),
    externalBytes: median(external),
    totalBytes: median(samples),
    peakBytes: median(peak),
    envelopeBytes: median(env),
    samples,
  };
}

/** `--fleet 2000,20000` or `--fleet=2000,20000`. */
export function fleetArg(argv: string[], fallback: number[]): number[] {
  const i = argv.findIndex((a) => a === "--fleet" || a.startsWith("--fleet="));
  if (i < 0) return fallback;
  const raw = argv[i]!.includes("=") ? argv[i]!.slice("--fleet=".length) : (argv[i + 1] ?? "");
  const sizes = raw.split(",").map((s) => Number(s.replace(/_/g, "").trim()));
  if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 1_000_000))
    throw new Error(`--fleet: comma-separated whole numbers from 1 to 1000000, got "${raw}"`);
  return sizes;
}

if (import.meta.main) {
  const sizes = fleetArg(process.argv, [2000, 20000, 50000]);
  const out: SnapshotMemory[] = [];
  for (const size of sizes) {
    const envelope = await LOADER.envelopeOf(size);
    out.push(measureSnapshotMemory(size, envelope, LOADER.load, { name: LOADER.name }));
  }
  if (process.argv.includes("--json")) {
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } else {
    const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
    for (const m of out) {
      console.log(
        `${String(m.size).padStart(6)} vehicles (${m.loader}): keeps ${mb(m.totalBytes)} (heap ${mb(m.heapBytes)}, ` +
          `outside the heap ${mb(m.externalBytes)}); peak during the load ${mb(m.peakBytes)}; envelope ${mb(m.envelopeBytes)}`,
      );
    }
  }
}
