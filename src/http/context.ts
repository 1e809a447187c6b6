/**
 * What the app and its routes share about a request: the Hono environment (`c.env.deps`, the
 * variables the app's middleware sets) and helpers over the request context. Its own module so
 * imports run one way: app.ts → routes → this, never a route back to app.ts.
 */

import type { Config } from "../config.ts";
import type { Deps } from "../ports.ts";

export interface AppEnv {
  Bindings: { deps: Deps };
  Variables: { config: Config; requestId: string; logFields: Record<string, unknown> };
}

/** waitUntil where the runtime has one, else let the promise run (Deno and Bun keep the process alive). */
export function waitUntilOf(c: {
  executionCtx: { waitUntil(p: Promise<unknown>): void };
}): (p: Promise<unknown>) => void {
  try {
    const ctx = c.executionCtx;
    return (p) => ctx.waitUntil(p);
  } catch {
    return (p) => {
      p.catch(() => {});
    };
  }
}
