import type { PartnerGateway } from "./gateway-object.ts";

/** Bindings and settings of the Worker (wrangler.toml [vars], secrets, bindings). */
export interface Env {
  GATEWAY: DurableObjectNamespace<PartnerGateway>;
  RATE_LIMITER?: RateLimit;
  PARTNER_TOKEN_URL?: string;
  PARTNER_API_URL?: string;
  PARTNER_CLIENT_ID?: string;
  PARTNER_CLIENT_SECRET?: string;
  PARTNER_CLIENT_AUTH?: string;
  PARTNER_SCOPE?: string;
  VEHICLES_TTL_S?: string;
  VEHICLES_STALE_S?: string;
  VEHICLES_MAX_LIMIT?: string;
  CORS_ORIGINS?: string;
  API_KEYS?: string;
  GATEWAY_LOCATION_HINT?: string;
  ALLOW_TIER_BYPASS?: string;
  WARMUP_INTERVAL_S?: string;
  LOG_REQUESTS?: string;
  MAP_TILES_URL?: string;
  MAP_TILES_ATTRIBUTION?: string;
}
