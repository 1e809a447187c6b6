/**
 * The cron warm-up: the token stays valid past the next tick and the gateway's snapshot is fresh;
 * then the snapshot feed is asked once. Never throws; failures are logged and counted, and a
 * failing partner is protected by the gateway's own backoff and breaker, so a tick cannot storm.
 *
 * On Workers it does not fill isolate memory or the Cache API (`fillTiers` false): Cloudflare runs
 * cron triggers on underused machines, not in the data centres users reach, so those copies would
 * warm nobody. The feed call is cheap and may help: with Workers Cache on it fills the cron
 * location's tiers, and the upper tier is shared with other data centres. A Deno or Bun server
 * warms itself, in the process that serves its users: there the tiers are filled.
 */
import { ConfigError } from "./config.ts";
import { AppError } from "./errors.ts";
import type { Deps } from "./ports.ts";
import { warmTiers } from "./vehicles/tiers.ts";

export interface WarmUpReport {
  ok: boolean;
  tokenSecondsLeft: number | undefined;
  snapshotFetchedAt: number | undefined;
  error: string | undefined;
}

/** Slack past the next tick: a tick may run late. */
const TICK_SLACK_S = 30;

export async function warmUp(
  deps: Deps,
  opts: {
    waitUntil: (p: Promise<unknown>) => void;
    intervalS: number;
    scheduledTime?: number;
    /** Fill this process's isolate memory and cache too (a long-lived server's own warm-up). */
    fillTiers?: boolean;
  },
): Promise<WarmUpReport> {
  const report: WarmUpReport = {
    ok: false,
    tokenSecondsLeft: undefined,
    snapshotFetchedAt: undefined,
    error: undefined,
  };
  const config = deps.config;
  if (config instanceof ConfigError) {
    report.error = "config_invalid";
    deps.log.log("error", "warmup_failed", { code: report.error, settings: config.settings });
    return report;
  }
  try {
    const warm = await deps.gateway.warm({ tokenValidForS: opts.intervalS + TICK_SLACK_S });
    report.tokenSecondsLeft = warm.tokenSecondsLeft;
    report.snapshotFetchedAt = warm.snapshotFetchedAt;
    if (warm.error) report.error = warm.error.code;
    else if (opts.fillTiers) {
      await warmTiers({ deps, config, waitUntil: opts.waitUntil });
      report.ok = true;
    } else {
      const fed = await deps.gateway.getSnapshot();
      if (fed.ok) report.ok = true;
      else report.error = fed.error.code;
    }
  } catch (err) {
    report.error = err instanceof AppError ? err.code : "internal";
  }
  deps.log.log(report.ok ? "info" : "warn", report.ok ? "warmup_done" : "warmup_failed", {
    code: report.error,
    tokenSecondsLeft: report.tokenSecondsLeft,
    snapshotAgeS:
      report.snapshotFetchedAt === undefined
        ? undefined
        : Math.round((deps.clock.now() - report.snapshotFetchedAt) / 1000),
  });
  return report;
}
