/// <reference types="node" />
/**
 * What a partner body costs the gateway object in memory and CPU, measured in Node with the
 * gateway's own code (the body guard, `parsePartnerBody`): V8 heap deltas with `--expose-gc`.
 *
 *   node --expose-gc scripts/partner-body-memory.ts [--runs 7]
 *
 * For each body: its bytes; the live memory (V8 heap + external) of the text as the gateway reads it, of the `JSON.parse` tree and of the
 * validated, redacted vehicles (each measured after a full GC while it is held); the peak live
 * set of parse + validate (text + tree + vehicles: all three are alive at the end of
 * `parsePartnerBody`, transient garbage excluded); and the median CPU of the guard, `JSON.parse`
 * and `parsePartnerBody`. Bodies: the sandbox fleet at 20,000 and 50,000 vehicles, the 16 MiB
 * `[{},{},…]` the guard exists for, and the most costly shapes the guard still accepts at
 * PARTNER_MAX_VEHICLES = 50,000. Figures go to docs/RELIABILITY.md ("Partner body size").
 */
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";
import { createFleet } from "../sandbox/fleet.ts";
import { fetchUpstream } from "../src/http/upstream.ts";
import { bodyLimits, checkBodyShape } from "../src/partner/body-guard.ts";
import { parsePartnerBody } from "../src/vehicles/schema.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("run with: node --expose-gc scripts/partner-body-memory.ts");
  process.exit(2);
}
const { values: args } = parseArgs({
  options: { runs: { type: "string", default: "7" }, only: { type: "string" } },
});
const RUNS = Math.max(1, Number(args.runs));
const MAX_VEHICLES = 50_000;
const MiB = 1024 * 1024;

/** Live bytes after a full GC: the V8 heap plus external memory (Node keeps large decoded strings there). */
async function heap(): Promise<number> {
  // Let stream internals drop their last chunks (they hold them until a later turn), then collect.
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    gc?.();
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

function timeMs(fn: () => unknown, runs: number): number {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    out.push(performance.now() - t0);
  }
  return median(out);
}

const seq = (n: number, f: (i: number) => string): string => Array.from({ length: n }, (_, i) => f(i)).join(",");
const { maxValues, maxContainers } = bodyLimits(MAX_VEHICLES);

interface Body {
  name: string;
  make: () => string;
  /** Also validate (parsePartnerBody): only for bodies of vehicles. */
  validate: boolean;
  /** Time JSON.parse this many times (a 16 MiB body of empty objects takes seconds). */
  parseRuns?: number;
}

const bodies: Body[] = [
  { name: "sandbox fleet, 20,000 vehicles", make: () => createFleet(1, 20_000).body(0).toString(), validate: true },
  { name: "sandbox fleet, 50,000 vehicles", make: () => createFleet(1, 50_000).body(0).toString(), validate: true },
  {
    name: "16 MiB of [{},{},…] (5,592,400 items)",
    make: () => `[${seq(5_592_400, () => "{}")}]`,
    validate: false,
    parseRuns: 1,
  },
  {
    name: `accepted worst case: ${maxValues - 2} numbers in one array`,
    make: () => `[[${seq(maxValues - 2, (i) => `${i}.5`)}]]`,
    validate: false,
  },
  {
    name: `accepted worst case: ${maxValues - 2} distinct short strings`,
    make: () => `[[${seq(maxValues - 2, (i) => `"s${i}"`)}]]`,
    validate: false,
  },
  {
    name: `accepted worst case: ${maxContainers - 2} objects of 5 members, one key set`,
    make: () => `[${seq(maxContainers - 2, (o) => `{${seq(5, (k) => `"k${k}":${o}.${k}5`)}}`)}]`,
    validate: false,
  },
  {
    name: `accepted worst case: ${maxContainers - 2} objects of 5 members, every key distinct`,
    make: () => `[${seq(maxContainers - 2, (o) => `{${seq(5, (k) => `"k${o * 5 + k}":1`)}}`)}]`,
    validate: false,
    parseRuns: 1,
  },
];

/** The body through `fetchUpstream` (deadline, byte cap, chunked TextDecoder), as the partner client reads it. */
async function readAsGateway(body: string): Promise<string> {
  const bytes = new TextEncoder().encode(body);
  const CHUNK = 64 * 1024;
  let at = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) controller.close();
      else {
        controller.enqueue(bytes.slice(at, at + CHUNK));
        at += CHUNK;
      }
    },
  });
  const res = await fetchUpstream(async () => new Response(stream), new Request("http://127.0.0.1/vehicles"), {
    timeoutMs: 60_000,
    maxBytes: 64 * MiB,
  });
  return res.text;
}

const mb = (bytes: number): string => (bytes / MiB).toFixed(1);
if (args.only !== undefined) {
  // Warm-up: the first read and parse allocate lazily initialised state that is not the body's.
  JSON.parse(await readAsGateway(createFleet(1, 100).body(0).toString()));
  parsePartnerBody(createFleet(1, 100).body(0).toString(), MAX_VEHICLES);
  const b = bodies[Number(args.only)];
  if (b) await measure(b);
  process.exit(0);
}

console.log(
  `node ${process.version}, PARTNER_MAX_VEHICLES ${MAX_VEHICLES}, median of ${RUNS} runs, one process per body\n`,
);
console.log(
  "| body | bytes (MiB) | guard | text (MiB) | JSON.parse tree (MiB) | validated (MiB) | peak live, parse + validate (MiB) | guard CPU (ms) | JSON.parse CPU (ms) | parse + validate CPU (ms) |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|");
for (let i = 0; i < bodies.length; i++) {
  // A fresh process per body: nothing of one body's garbage or caches counts against the next.
  const row = execFileSync(process.execPath, [
    "--expose-gc",
    import.meta.filename,
    "--only",
    String(i),
    "--runs",
    String(RUNS),
  ]);
  process.stdout.write(row);
}
await guardVersusParse();

async function measure(b: Body): Promise<void> {
  const h0 = await heap();
  // Read as the gateway reads a partner body: fetchUpstream over a stream of 64 KiB chunks.
  let text: string | undefined = await readAsGateway(b.make());
  const hText = (await heap()) - h0;
  const verdict = checkBodyShape(text, MAX_VEHICLES);
  const guardMs = timeMs(() => checkBodyShape(text as string, MAX_VEHICLES), RUNS);

  const h1 = await heap();
  let tree: unknown = JSON.parse(text);
  const hTree = (await heap()) - h1;
  tree = undefined;
  const parseMs = timeMs(() => JSON.parse(text as string), b.parseRuns ?? RUNS);

  let hValid = Number.NaN;
  let validateMs = Number.NaN;
  if (b.validate) {
    const h2 = await heap();
    let result: unknown = parsePartnerBody(text, MAX_VEHICLES);
    hValid = (await heap()) - h2;
    result = undefined;
    validateMs = timeMs(() => parsePartnerBody(text as string, MAX_VEHICLES), RUNS);
    void result;
  }
  const peak = hText + hTree + (Number.isNaN(hValid) ? 0 : hValid);
  const guard = verdict.ok ? "accepted" : `refused (${verdict.reason})`;
  console.log(
    `| ${b.name} | ${mb(text.length)} | ${guard} | ${mb(hText)} | ${mb(hTree)} | ${Number.isNaN(hValid) ? "-" : mb(hValid)} | ${mb(peak)} | ${guardMs.toFixed(1)} | ${parseMs.toFixed(1)} | ${Number.isNaN(validateMs) ? "-" : validateMs.toFixed(1)} |`,
  );
  text = undefined;
  void tree;
}

/**
 * The guard's CPU next to the parse it guards, on the 20,000-vehicle body (8.5 MB): alternated
 * runs, so load from other processes hits both alike; min and median of 15 each.
 */
async function guardVersusParse(): Promise<void> {
  const text = await readAsGateway(createFleet(1, 20_000).body(0).toString());
  const guard: number[] = [];
  const parse: number[] = [];
  for (let i = 0; i < 15; i++) {
    let t0 = performance.now();
    checkBodyShape(text, MAX_VEHICLES);
    guard.push(performance.now() - t0);
    t0 = performance.now();
    JSON.parse(text);
    parse.push(performance.now() - t0);
  }
  const min = (xs: number[]) => Math.min(...xs).toFixed(1);
  console.log(
    `\nguard vs JSON.parse, ${mb(text.length)} MiB (20,000 vehicles), 15 alternated runs: guard min ${min(guard)} / median ${median(guard).toFixed(1)} ms, JSON.parse min ${min(parse)} / median ${median(parse).toFixed(1)} ms`,
  );
}
