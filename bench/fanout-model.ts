/**
 * The fan-out model of issue 11 item 4, as pure functions (bench/fanout.ts measures the cost of
 * one object call and prints these): object calls, bytes and object CPU per TTL for a number of
 * data centres, without the tiered feed (one call per data centre per TTL) and with Workers Cache
 * in front of a feed entrypoint (one call per upper tier per TTL).
 */
export interface CallCost {
  size: number;
  /** Payload of one call, bytes (bench/object-probe-worker.ts `?bytes=1`). */
  bytes: number;
  /** workerd CPU per object call, µs: probe /call minus /floor, medians over rounds. */
  cpuUs: number;
  callCpuUsRounds: number[];
  floorCpuUsRounds: number[];
  /** Calls per second one connection achieved, and the latency of one call (p50, ms). */
  callsPerS: number;
  p50Ms: number;
  calls: number;
  /** Partner requests during the measurement (the object serves its snapshot: expect 0 or 1 per TTL). */
  partnerRequests: number;
  /** PARTNER_MAX_BYTES of this run when the default could not hold the partner's body. */
  partnerMaxBytes: number | undefined;
}

export interface FanoutRow {
  vehicles: number;
  dataCentres: number;
  mbPerCall: number;
  cpuMsPerCall: number;
  without: { calls: number; mbPerTtl: number; cpuSPerTtl: number; busy: number; mbPerS: number };
  tiered: { calls: number; mbPerTtl: number; cpuSPerTtl: number; busy: number; mbPerS: number };
}

/** The model: object calls, bytes and object CPU per TTL, per data-centre count and fleet size. */
export function fanout(
  costs: Pick<CallCost, "size" | "bytes" | "cpuUs">[],
  dcs: number[],
  ttlS: number,
  upperTiers: number,
): FanoutRow[] {
  const rows: FanoutRow[] = [];
  for (const c of costs) {
    for (const d of dcs) {
      const per = (calls: number) => ({
        calls,
        mbPerTtl: (calls * c.bytes) / 1e6,
        cpuSPerTtl: (calls * c.cpuUs) / 1e6,
        // Share of the object's one thread the fills take (>= 1: it cannot keep up).
        busy: (calls * c.cpuUs) / 1e6 / ttlS,
        mbPerS: (calls * c.bytes) / 1e6 / ttlS,
      });
      rows.push({
        vehicles: c.size,
        dataCentres: d,
        mbPerCall: c.bytes / 1e6,
        cpuMsPerCall: c.cpuUs / 1000,
        without: per(d),
        tiered: per(Math.min(d, upperTiers)),
      });
    }
  }
  return rows;
}

export function fanoutMarkdown(rows: FanoutRow[], ttlS: number, upperTiers: number): string {
  const pct = (x: number) => `${(x * 100).toFixed(x < 0.1 ? 1 : 0)} %`;
  const mbs = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const head = [
    "vehicles",
    "data centres",
    "one call: MB / CPU ms",
    `no tiered feed: calls per ${ttlS} s`,
    "MB per TTL (MB/s)",
    "object CPU s per TTL (busy)",
    `tiered feed (<= ${upperTiers} upper tiers): calls`,
    "MB per TTL (MB/s)",
    "object CPU s per TTL (busy)",
  ];
  const lines = rows.map((r) =>
    [
      r.vehicles.toLocaleString("en"),
      String(r.dataCentres),
      `${r.mbPerCall.toFixed(2)} / ${r.cpuMsPerCall.toFixed(1)}`,
      String(r.without.calls),
      `${mbs(r.without.mbPerTtl)} (${r.without.mbPerS.toFixed(1)})`,
      `${r.without.cpuSPerTtl.toFixed(2)} (${pct(r.without.busy)})`,
      String(r.tiered.calls),
      `${mbs(r.tiered.mbPerTtl)} (${r.tiered.mbPerS.toFixed(1)})`,
      `${r.tiered.cpuSPerTtl.toFixed(2)} (${pct(r.tiered.busy)})`,
    ].join(" | "),
  );
  return [
    `| ${head.join(" | ")} |`,
    `|---|${head
      .slice(1)
      .map(() => "---:")
      .join("|")}|`,
    ...lines.map((l) => `| ${l} |`),
  ].join("\n");
}
