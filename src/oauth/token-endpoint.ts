/**
 * The OAuth 2.0 client-credentials grant (RFC 6749 §4.4) against the partner's Keycloak, split
 * into "send" (buildTokenRequest, requestToken) and "validate" (parseTokenResponse), as
 * oauth4webapi splits clientCredentialsGrantRequest from processClientCredentialsResponse.
 *
 * Nothing here keeps state; the broker (token-broker.ts) decides when to call it.
 * No error built here carries the response body, the access token or the client secret.
 */
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import { fetchUpstream, mediaType, parseRetryAfter, UpstreamError, type UpstreamResponse } from "../http/upstream.ts";
import type { Clock, FetchFn } from "../ports.ts";
import { isUsable } from "./refresh-timing.ts";

/** The settings that shape a token request. */
export type TokenRequestConfig = Pick<Config, "tokenUrl" | "clientId" | "clientSecret" | "clientAuth" | "scope">;

/** The settings `requestToken` needs: the request's shape plus its deadline and default lifetime. */
export type TokenEndpointConfig = TokenRequestConfig & Pick<Config, "tokenTimeoutMs" | "tokenDefaultLifetimeS">;

/** A validated token response (RFC 6749 §5.1). */
export interface TokenGrant {
  /** The access token. Never logged, never put in an error. */
  value: string;
  /** Epoch ms at which the grant was requested (the base of `expires_in`, see parseTokenResponse). */
  obtainedAt: number;
  /** Epoch ms: obtainedAt + the granted lifetime. */
  expiresAt: number;
  /** The lifetime used, in seconds (`expires_in`, or the configured default when absent). */
  lifetimeS: number;
}

/** Largest token response we read. A Keycloak JWT answer is a few KiB; anything near this is not a token. */
export const TOKEN_RESPONSE_MAX_BYTES = 64 * 1024;

/** Longest access token we accept (a Keycloak JWT is 1-3 KiB). */
const ACCESS_TOKEN_MAX_CHARS = 16 * 1024;

/**
 * Longest lifetime we trust, in seconds. A larger `expires_in` is clamped, not refused: refreshing
 * earlier than the server requires is always safe, and it keeps `expiresAt` a sane number.
 */
const MAX_LIFETIME_S = 86_400;

/** Longest `Retry-After` we honour from the token endpoint, in seconds (one default token lifetime). */
const TOKEN_RETRY_AFTER_MAX_S = 300;

/** RFC 6749 §5.2: `error` and `error_description` are limited to these characters. */
const OAUTH_ERROR_CODE = /^[\x20-\x21\x23-\x5B\x5D-\x7E]+$/;

/**
 * The error codes a token endpoint may answer with, as registered: RFC 6749 §5.2, plus the
 * §4.1.2.1 codes servers use for transient trouble (both in the OAuth Extensions Error Registry,
 * §11.4). Only these reach a client's `detail`: any other `error` is the server's own text (a
 * token endpoint answering `{"error":"Account suspended - call ..."}` would otherwise put its
 * message into every client answer for the negative-cache window), so it becomes
 * UNREGISTERED_OAUTH_ERROR on the wire and goes to the log only (see oauthErrorText).
 */
const REGISTERED_OAUTH_ERRORS: ReadonlySet<string> = new Set([
  "invalid_request",
  "invalid_client",
  "invalid_grant",
  "unauthorized_client",
  "unsupported_grant_type",
  "invalid_scope",
  "temporarily_unavailable",
  "server_error",
]);

/** The fixed `detail` that stands for an `error` code that is not registered. */
export const UNREGISTERED_OAUTH_ERROR = "unregistered OAuth error code";

/** Longest unregistered `error` text kept for the log. */
const OAUTH_ERROR_LOG_CHARS = 100;

/**
 * RFC 6750 §2.1: the token travels as `Authorization: Bearer b64token`, so it must be a
 * b64token; anything else (spaces, CR/LF, non-ASCII) could not be sent or would split the header.
 */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * application/x-www-form-urlencoded encoding of one value: the same serializer that encodes the
 * form body (WHATWG URL: UTF-8, space as `+`, all but `*-._` and alphanumerics percent-encoded).
 */
function formUrlEncode(value: string): string {
  return new URLSearchParams([["v", value]]).toString().slice(2);
}

/**
 * The `Authorization` header value for `client_secret_basic`.
 * RFC 6749 §2.3.1: the client id and secret are each encoded with application/x-www-form-urlencoded
 * (Appendix B) FIRST, and only then joined with ":" and Base64-encoded (RFC 7617). Skipping the
 * form-encoding breaks secrets holding "+" (Keycloak decodes a raw "+" to a space), "%" or ":".
 * @returns `"Basic " + base64(formEncode(id) + ":" + formEncode(secret))`
 */
export function basicCredentials(clientId: string, clientSecret: string): string {
  // After form-encoding the string is pure ASCII, so btoa (Latin-1 only) is safe here.
  return `Basic ${btoa(`${formUrlEncode(clientId)}:${formUrlEncode(clientSecret)}`)}`;
}

/**
 * The token request (RFC 6749 §4.4.2): a form-encoded POST of `grant_type=client_credentials`,
 * `scope` only when configured, and the client credentials in the body (`client_secret_post`,
 * RFC 6749 §2.3.1, the partner's documented way) or in `Authorization` (`client_secret_basic`).
 */
export function buildTokenRequest(config: TokenRequestConfig): Request {
  const form = new URLSearchParams();
  form.set("grant_type", "client_credentials");
  // RFC 6749 §4.4.2: scope is OPTIONAL; an empty one would be a different request.
  if (config.scope !== undefined && config.scope !== "") form.set("scope", config.scope);
  const headers = new Headers({
    "content-type": "application/x-www-form-urlencoded",
    accept: "application/json",
  });
  if (config.clientAuth === "client_secret_basic") {
    headers.set("authorization", basicCredentials(config.clientId, config.clientSecret));
  } else {
    // RFC 6749 §2.3.1: client_secret_post puts both in the request body.
    form.set("client_id", config.clientId);
    form.set("client_secret", config.clientSecret);
  }
  return new Request(config.tokenUrl, {
    method: "POST",
    headers,
    body: form.toString(),
    // RFC 6749 §3.2: the endpoint is fixed; a redirect must never carry our credentials elsewhere.
    redirect: "manual",
  });
}

function isJson(headers: Headers): boolean {
  const t = mediaType(headers);
  return t === "application/json" || (t.startsWith("application/") && t.endsWith("+json"));
}

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The §5.2 `error` member when it is a well-formed string (registered or not), else undefined. */
function oauthErrorCode(body: Record<string, unknown> | undefined): string | undefined {
  const e = body?.error;
  return typeof e === "string" && e.length <= OAUTH_ERROR_LOG_CHARS && OAUTH_ERROR_CODE.test(e) ? e : undefined;
}

/**
 * The server's own text of an AppError built here for an unregistered `error` code, for the log
 * only (never `detail`, never `extra`). Undefined for any other error.
 */
export function oauthErrorText(err: unknown): string | undefined {
  if (!(err instanceof AppError)) return undefined;
  const cause = err.cause as { unregisteredOAuthError?: unknown } | undefined;
  return typeof cause?.unregisteredOAuthError === "string" ? cause.unregisteredOAuthError : undefined;
}

function invalid(detail: string): AppError {
  return new AppError("token_response_invalid", { detail });
}

/**
 * Maps an RFC 6749 §5.2 error code to our error. A registered code is a fixed token, not server
 * prose, so it may go into the detail; anything else is replaced by UNREGISTERED_OAUTH_ERROR and
 * kept (cut short, the client secret masked) on the error's `cause` for the log.
 */
function errorFromOAuthCode(code: string, clientSecret: string): AppError {
  // Not token-endpoint codes in §5.2, but servers use the §4.1.2.1 codes for transient trouble.
  if (code === "temporarily_unavailable") return new AppError("token_endpoint_unavailable", { detail: code });
  if (code === "server_error") return new AppError("token_endpoint_error", { detail: code });
  // invalid_client / unauthorized_client are the credentials themselves. The other §5.2 codes
  // (invalid_request, invalid_grant, invalid_scope, unsupported_grant_type, or an unknown one) are
  // just as permanent: the same request gets the same answer, so they are negative-cached alike.
  if (REGISTERED_OAUTH_ERRORS.has(code)) return new AppError("token_client_rejected", { detail: code });
  // An endpoint could echo what we sent: the secret never reaches a log line either.
  const text = (clientSecret === "" ? code : code.replaceAll(clientSecret, "[secret]")).slice(0, OAUTH_ERROR_LOG_CHARS);
  return new AppError("token_client_rejected", {
    detail: UNREGISTERED_OAUTH_ERROR,
    cause: { unregisteredOAuthError: text },
  });
}

/**
 * Validates a token endpoint answer (RFC 6749 §5.1 success, §5.2 error) into a TokenGrant, or
 * throws AppError:
 * - 3xx: `token_endpoint_error` "redirect refused" (we never follow one, see buildTokenRequest);
 * - 429 / 503: `token_endpoint_unavailable`, `retryAfterS` from `Retry-After`;
 * - other 5xx, 408: `token_endpoint_error` (transient);
 * - a §5.2 error (any 4xx, or a 200 that carries `error`): `token_client_rejected` with the code
 *   as detail (permanent), except `temporarily_unavailable` / `server_error` (transient);
 * - 401 without a readable error: `token_client_rejected` (RFC 6749 §5.2 uses 401 for invalid_client);
 * - anything else that is not a JSON §5.1 answer: `token_response_invalid`.
 *
 * @param nowMs when the request was *sent*: `expires_in` counts from when the server answered
 *   (RFC 6749 §5.1), so counting from before the request errs on the early side by the latency.
 * @param defaultLifetimeS the lifetime assumed when `expires_in` is absent (it is RECOMMENDED, not REQUIRED).
 */
export function parseTokenResponse(
  res: UpstreamResponse,
  nowMs: number,
  defaultLifetimeS: number,
  clientSecret = "",
): TokenGrant {
  const { status, headers } = res;
  // With redirect: "manual" a browser-like fetch may report an opaque redirect as status 0.
  if (status === 0 || (status >= 300 && status < 400)) {
    throw new AppError("token_endpoint_error", { detail: "redirect refused" });
  }
  const body = isJson(headers) ? parseJsonObject(res.text) : undefined;
  const code = oauthErrorCode(body);

  if (status === 429 || status === 503) {
    const retryAfterS = parseRetryAfter(headers.get("retry-after"), nowMs, TOKEN_RETRY_AFTER_MAX_S);
    const opts: { detail: string; retryAfterS?: number } = { detail: `HTTP ${status}` };
    if (retryAfterS !== undefined) opts.retryAfterS = retryAfterS;
    throw new AppError("token_endpoint_unavailable", opts);
  }
  if (status >= 500 || status === 408) throw new AppError("token_endpoint_error", { detail: `HTTP ${status}` });
  if (status >= 400) {
    if (code !== undefined) throw errorFromOAuthCode(code, clientSecret);
    // RFC 6749 §5.2: 401 is how the endpoint says the client failed to authenticate.
    if (status === 401) throw new AppError("token_client_rejected", { detail: "HTTP 401" });
    // A 4xx that is not a §5.2 answer (a wrong URL's 404, a WAF page) follows no protocol we know.
    throw invalid(`HTTP ${status} without an OAuth error`);
  }
  if (status !== 200) throw invalid(`unexpected status ${status}`); // RFC 6749 §5.1: 200 OK.

  // RFC 6749 §5.1: the parameters are in an application/json body.
  if (!isJson(headers)) throw invalid("not a JSON response");
  if (body === undefined) throw invalid("body is not a JSON object");
  // A 200 carrying `error` is an error answer in the wrong status, never a token.
  if (body.error !== undefined) {
    throw code === undefined ? invalid("malformed error member") : errorFromOAuthCode(code, clientSecret);
  }

  const token = body.access_token;
  if (typeof token !== "string" || token === "") throw invalid("access_token missing");
  if (token.length > ACCESS_TOKEN_MAX_CHARS || !B64TOKEN.test(token)) throw invalid("access_token malformed");

  // RFC 6749 §5.1 / §7.1: token_type is REQUIRED and case-insensitive; we only speak Bearer (RFC 6750).
  const type = body.token_type;
  if (typeof type !== "string") throw invalid("token_type missing");
  if (type.toLowerCase() !== "bearer") throw invalid("token_type is not Bearer");

  const lifetimeS = parseExpiresIn(body.expires_in, defaultLifetimeS);
  return { value: token, obtainedAt: nowMs, expiresAt: nowMs + lifetimeS * 1000, lifetimeS };
}

/**
 * RFC 6749 §5.1 `expires_in`: optional; some servers send it as a numeric string.
 * 0 and negative values are refused rather than read as "default": the server says the token is
 * already dead, and a token we could never hand out (refresh-timing's safety remainder) would only
 * make every caller request another one, a hot loop against the endpoint. Under one second the
 * same holds, so the floor is 1 s.
 */
function parseExpiresIn(raw: unknown, defaultLifetimeS: number): number {
  if (raw === undefined || raw === null) return Math.min(defaultLifetimeS, MAX_LIFETIME_S);
  let n: number;
  if (typeof raw === "number") n = raw;
  else if (typeof raw === "string" && /^\s*\d+(\.\d+)?\s*$/.test(raw)) n = Number(raw);
  else throw invalid("expires_in is not a number");
  if (!Number.isFinite(n) || n < 1) throw invalid("expires_in is not a positive lifetime");
  return Math.min(n, MAX_LIFETIME_S);
}

/**
 * Sends one token request through `fetchUpstream` (deadline over headers and body, size cap,
 * manual redirects) and validates the answer. Transport failures map to: timeout ->
 * `token_endpoint_timeout`, network -> `token_endpoint_unavailable`, too large -> `token_response_invalid`.
 * A grant that is no longer usable when its answer has arrived (a slow endpoint, a short
 * `expires_in`: 3 s to answer `expires_in: 2`) is `token_response_invalid` too: it would reach
 * the partner expired, and so would its 401 replay.
 * @param clock read just before sending (the base of `expires_in`, see parseTokenResponse) and
 *   again once the answer is read.
 */
export async function requestToken(fetchFn: FetchFn, config: TokenEndpointConfig, clock: Clock): Promise<TokenGrant> {
  const nowMs = clock.now();
  let res: UpstreamResponse;
  try {
    res = await fetchUpstream(fetchFn, buildTokenRequest(config), {
      timeoutMs: config.tokenTimeoutMs,
      maxBytes: TOKEN_RESPONSE_MAX_BYTES,
    });
  } catch (err) {
    if (err instanceof UpstreamError) {
      if (err.kind === "timeout") throw new AppError("token_endpoint_timeout", { cause: err });
      if (err.kind === "too_large")
        throw new AppError("token_response_invalid", { detail: "response too large", cause: err });
      throw new AppError("token_endpoint_unavailable", { detail: "network error", cause: err });
    }
    // fetchUpstream wraps every failure; anything else (a bad tokenUrl in new Request) is ours.
    throw new AppError("internal", { cause: err });
  }
  const grant = parseTokenResponse(res, nowMs, config.tokenDefaultLifetimeS, config.clientSecret);
  // Usable means with its safety remainder left (refresh-timing.ts), the rule every send obeys.
  if (!isUsable(grant, clock.now())) throw invalid("token expired before it arrived");
  return grant;
}
