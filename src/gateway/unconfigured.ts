/**
 * The gateway of a deployment whose settings are invalid, for every runtime (the Durable Object on
 * Workers, the in-process gateway on Deno and Bun): every answer says so, as plain data where the
 * answer is data. The app names the settings (never their values) before it asks the gateway.
 */

import { AppError, type ErrorInfo } from "../errors.ts";
import type { SnapshotSource } from "../ports.ts";

const CONFIG_INVALID: ErrorInfo = { code: "config_invalid", status: 500 };

export const unconfiguredGateway: SnapshotSource = {
  getSnapshot: async () => ({ ok: false, error: { ...CONFIG_INVALID } }),
  status: async () => {
    throw new AppError("config_invalid");
  },
  warm: async () => ({ tokenSecondsLeft: undefined, snapshotFetchedAt: undefined, error: { ...CONFIG_INVALID } }),
};
