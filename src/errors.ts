/**
 * Typed errors with stable codes, and the one place that maps them to RFC 9457
 * problem+json. Internal detail (causes, upstream bodies) goes to logs, never on the wire.
 */

/** Stable error codes. Clients may switch on these; never rename one. */
export const ERROR_STATUS = {
  // client errors
  invalid_parameter: 400,
  invalid_vin: 400,
  body_not_allowed: 413,
  query_too_large: 414,
  unauthorized: 401,
  not_found: 404,
  vehicle_not_found: 404,
  method_not_allowed: 405,
  rate_limited: 429,
  // our own faults
  config_invalid: 500,
  internal: 500,
  // the token endpoint
  token_client_rejected: 502, // invalid_client / unauthorized_client (RFC 6749 §5.2)
  token_response_invalid: 502,
  token_endpoint_error: 502,
  token_endpoint_unavailable: 503,
  token_endpoint_timeout: 504,
  // the partner API
  partner_unauthorized: 502,
  partner_response_invalid: 502,
  partner_redirect: 502,
  partner_error: 502,
  partner_unavailable: 503,
  partner_rate_limited: 503,
  partner_circuit_open: 503,
  partner_timeout: 504,
  gateway_unavailable: 503,
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof ERROR_STATUS;

const TITLES: Record<ErrorCode, string> = {
  invalid_parameter: "Invalid query parameter",
  invalid_vin: "Invalid VIN",
  body_not_allowed: "Request body not allowed",
  query_too_large: "Query string too large",
  unauthorized: "Missing or unknown API key",
  not_found: "Not found",
  vehicle_not_found: "Vehicle not found",
  method_not_allowed: "Method not allowed",
  rate_limited: "Too many requests",
  config_invalid: "Gateway misconfigured",
  internal: "Internal error",
  token_client_rejected: "Partner rejected the gateway's client credentials",
  token_response_invalid: "Invalid answer from the partner's token endpoint",
  token_endpoint_error: "The partner's token endpoint failed",
  token_endpoint_unavailable: "The partner's token endpoint is unavailable",
  token_endpoint_timeout: "The partner's token endpoint timed out",
  partner_unauthorized: "The partner API refused the gateway's access token",
  partner_response_invalid: "Invalid answer from the partner API",
  partner_redirect: "The partner API answered with a redirect",
  partner_error: "The partner API failed",
  partner_unavailable: "The partner API is unavailable",
  partner_rate_limited: "The partner API asked us to slow down",
  partner_circuit_open: "The partner API is failing; calls are paused",
  partner_timeout: "The partner API timed out",
  gateway_unavailable: "The gateway is temporarily unavailable",
};

/** Plain-data form of an error: what crosses a Durable Object RPC boundary (custom Error fields do not). */
export interface ErrorInfo {
  code: ErrorCode;
  status: number;
  /** Seconds a client should wait before retrying (RFC 9110 §10.2.3), where it applies. */
  retryAfterS?: number;
  /** A safe, human-readable detail for the wire. Never a token, secret or upstream body. */
  detail?: string;
  /** Extra safe members for the problem document (e.g. `parameter`, `settings`). */
  extra?: Record<string, unknown>;
}

/** The one error type the gateway throws on purpose. `cause` is for logs only. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryAfterS: number | undefined;
  readonly detail: string | undefined;
  readonly extra: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    opts: { detail?: string; retryAfterS?: number; extra?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(opts.detail ? `${code}: ${opts.detail}` : code, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "AppError";
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.retryAfterS = opts.retryAfterS;
    this.detail = opts.detail;
    this.extra = opts.extra;
  }

  toInfo(): ErrorInfo {
    const info: ErrorInfo = { code: this.code, status: this.status };
    if (this.retryAfterS !== undefined) info.retryAfterS = this.retryAfterS;
    if (this.detail !== undefined) info.detail = this.detail;
    if (this.extra !== undefined) info.extra = this.extra;
    return info;
  }

  static fromInfo(info: ErrorInfo): AppError {
    const opts: ConstructorParameters<typeof AppError>[1] = {};
    if (info.detail !== undefined) opts.detail = info.detail;
    if (info.retryAfterS !== undefined) opts.retryAfterS = info.retryAfterS;
    if (info.extra !== undefined) opts.extra = info.extra;
    return new AppError(info.code, opts);
  }
}

/**
 * An error's name only, for a log line: the message of a storage or runtime error may carry what
 * it was given, which is not ours to log.
 */
export function errorName(err: unknown): string {
  return err instanceof Error ? err.name : typeof err;
}

/** Any thrown value as plain, wire-safe data: unknown errors become a generic 500. */
export function toErrorInfo(err: unknown): ErrorInfo {
  if (err instanceof AppError) return err.toInfo();
  return { code: "internal", status: 500 };
}

export const PROBLEM_CONTENT_TYPE = "application/problem+json";

/**
 * The one mapping from an error to an RFC 9457 problem document.
 * `type` is a stable URN per code (RFC 9457 §3.1.1 allows non-dereferenceable URIs).
 * `headers`: whatever `new Headers()` takes (Bun's types have no global `HeadersInit`).
 */
export function problemResponse(
  err: unknown,
  init: { instance?: string; headers?: ConstructorParameters<typeof Headers>[0] } = {},
): Response {
  const info = toErrorInfo(err);
  const body: Record<string, unknown> = {
    type: `urn:sharenow-gateway:problem:${info.code}`,
    title: TITLES[info.code],
    status: info.status,
    code: info.code,
  };
  if (info.detail) body.detail = info.detail;
  if (init.instance) body.instance = init.instance;
  if (info.extra) for (const [k, v] of Object.entries(info.extra)) if (!(k in body)) body[k] = v;
  const headers = new Headers(init.headers);
  headers.set("content-type", PROBLEM_CONTENT_TYPE);
  headers.set("cache-control", "no-store");
  headers.set("x-content-type-options", "nosniff");
  if (info.retryAfterS !== undefined) headers.set("retry-after", String(Math.max(0, Math.ceil(info.retryAfterS))));
  return new Response(JSON.stringify(body), { status: info.status, headers });
}
