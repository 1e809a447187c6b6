import type { Env as WorkerEnv } from "../../src/runtimes/cloudflare/env.ts";

declare global {
  namespace Cloudflare {
    interface GlobalProps {
      mainModule: typeof import("../../src/runtimes/cloudflare/worker.ts");
      durableNamespaces: "PartnerGateway";
    }
    interface Env extends WorkerEnv {
      /** Test-only: the partner sandbox's origin (its control API is under /__sandbox). */
      SANDBOX_URL: string;
      SANDBOX_BASIC_ID: string;
      SANDBOX_BASIC_SECRET: string;
    }
  }
}
