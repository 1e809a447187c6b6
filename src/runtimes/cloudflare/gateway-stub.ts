/**
 * The Worker's view of the gateway object. Retries are the runtime's: it already retries a call
 * that failed with `.retryable` before reaching the object (up to five attempts, never an
 * `.overloaded` one; Cloudflare's "Automatic retries" page), so a retry here would multiply those.
 * One policy: an error that reaches us is final for this request, mapped to `gateway_unavailable`
 * with a Retry-After that backs off longer when the object says it is overloaded.
 */

import { AppError } from "../../errors.ts";
import type { GatewayStatus, SnapshotResult, WarmResult } from "../../gateway/types.ts";
import type { SnapshotSource } from "../../ports.ts";
import type { PartnerGateway } from "./gateway-object.ts";

/** The one object's name: one token and one partner fetch for the whole world. */
export const GATEWAY_NAME = "partner-gateway";

type Flags = { retryable?: boolean; overloaded?: boolean };

export function gatewayStub(ns: DurableObjectNamespace<PartnerGateway>, locationHint?: string): SnapshotSource {
  const stub = () =>
    ns.getByName(GATEWAY_NAME, locationHint ? { locationHint: locationHint as DurableObjectLocationHint } : undefined);

  async function call<T>(fn: (s: DurableObjectStub<PartnerGateway>) => Promise<T>): Promise<T> {
    try {
      return await fn(stub());
    } catch (err) {
      const f = (err ?? {}) as Flags;
      throw new AppError("gateway_unavailable", { retryAfterS: f.overloaded ? 5 : 1, cause: err });
    }
  }

  return {
    getSnapshot: async (opts) => {
      try {
        return (await call((s) => s.getSnapshot(opts))) as SnapshotResult;
      } catch (err) {
        const e = err instanceof AppError ? err : new AppError("gateway_unavailable");
        return { ok: false, error: e.toInfo() };
      }
    },
    status: async () => (await call((s) => s.status())) as GatewayStatus,
    warm: async (opts) => (await call((s) => s.warm(opts))) as WarmResult,
  };
}
