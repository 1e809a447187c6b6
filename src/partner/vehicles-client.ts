/**
 * The partner vehicles call: one bearer GET, a single replay after a 401 with a fresh token, one
 * retry after a 5xx or a network error, `Retry-After` honoured through the breaker, and the body
 * handed to an injected validator (which also redacts) before anything leaves this module.
 *
 * Send and validate are separate steps: `fetchUpstream` sends (deadline over headers and body,
 * size cap, manual redirects), `classify` judges the answer, `parsePartnerBody` validates the JSON.
 */
import type { Config } from "../config.ts";
import { AppError } from "../errors.ts";
import type { AccessToken } from "../gateway/types.ts";
import { fetchUpstream, mediaType, parseRetryAfter, UpstreamError, type UpstreamResponse } from "../http/upstream.ts";
import type { Clock, FetchFn, KeyValueStore, Logger, TokenSource } from "../ports.ts";
import { parsePartnerBody } from "../vehicles/schema.ts";
import { checkBodyShape } from "./body-guard.ts";
import { CircuitBreaker } from "./circuit-breaker.ts";

/** Path of the vehicles resource under `config.apiUrl`. */
const VEHICLES_PATH = "/api/rental/partner/vehicles";
/** Window assumed when a 429/503 carries no (readable) `Retry-After`. */
export const DEFAULT_RETRY_AFTER_S = 30;
/** Longest `Retry-After` we accept; a longer one is clamped (a typo upstream must not pause us for a day). */
const MAX_RETRY_AFTER_S = 3600;
/** The one retry after a 5xx or a network error waits a uniform delay in [min, max). */
export const RETRY_DELAY_MIN_MS = 100;
export const RETRY_DELAY_MAX_MS = 300;

/** What the partner call needs from the configuration. */
type PartnerClientConfig = Pick<Config, "apiUrl" | "partnerTimeoutMs" | "partnerMaxBytes" | "partnerMaxVehicles">;

/** Validates and redacts the partner's JSON text; throws AppError `partner_response_invalid`. */
export type ParseBody = (text: string) => { vehicles: unknown[]; dropped: number };

export interface PartnerClientDeps {
  config: PartnerClientConfig;
  fetch: FetchFn;
  tokens: TokenSource;
  clock: Clock;
  log: Logger;
  /** Stands in for `parsePartnerBody(text, config.partnerMaxVehicles)` (tests). */
  parseBody?: ParseBody | undefined;
  breaker: CircuitBreaker;
  /** Uniform in [0, 1); for the retry jitter. */
  random?: (() => number) | undefined;
  sleep?: ((ms: number) => Promise<void>) | undefined;
}

export interface PartnerVehicles {
  /** Validated, redacted vehicles (allow-listed fields only). */
  vehicles: unknown[];
  /** Partner items dropped as malformed. */
  dropped: number;
  /** Time spent getting tokens and talking to the partner (all attempts). */
  timings: { tokenMs: number; partnerMs: number };
}

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A token-source failure, kept apart so it propagates as it is and gives the breaker no verdict. */
class TokenFailure {
  readonly err: unknown;
  constructor(err: unknown) {
    this.err = err;
  }
}

/** What to do with one partner answer. */
type Verdict =
  | { kind: "ok"; response: UpstreamResponse }
  | { kind: "replay" } // 401: new token, once
  | { kind: "retry"; error: AppError } // 5xx / network: once
  | { kind: "fail"; error: AppError };

/**
 * Fetches the partner's vehicles. Throws AppError: a `partner_*` code, or the token source's own
 * error as it is. Never sends the token anywhere but `{apiUrl}/api/rental/partner/vehicles`.
 */
export async function fetchPartnerVehicles(deps: PartnerClientDeps): Promise<PartnerVehicles> {
  const { breaker, clock, log } = deps;
  const random = deps.random ?? Math.random;
  const sleep = deps.sleep ?? defaultSleep;
  const url = `${deps.config.apiUrl}${VEHICLES_PATH}`;
  const timings = { tokenMs: 0, partnerMs: 0 };

  const getToken = async (): Promise<AccessToken> => {
    const t0 = clock.now();
    try {
      return await deps.tokens.getToken();
    } catch (err) {
      throw new TokenFailure(err);
    } finally {
      timings.tokenMs += clock.now() - t0;
    }
  };

  const send = async (token: AccessToken): Promise<UpstreamResponse> => {
    const request = new Request(url, {
      method: "GET",
      headers: { authorization: `Bearer ${token.value}`, accept: "application/json" },
    });
    const t0 = clock.now();
    try {
      return await fetchUpstream(deps.fetch, request, {
        timeoutMs: deps.config.partnerTimeoutMs,
        maxBytes: deps.config.partnerMaxBytes,
      });
    } finally {
      timings.partnerMs += clock.now() - t0;
    }
  };

  // Inside a Retry-After window or while the breaker is open, no call goes out (and no token is
  // fetched); that state may come from storage, written by an instance before a reset.
  await breaker.ready();
  breaker.acquire();
  try {
    let token = await getToken();
    let replayed = false;
    let retried = false;
    for (let attempt = 1; ; attempt++) {
      let verdict: Verdict;
      try {
        verdict = classify(await send(token), clock.now(), breaker);
      } catch (err) {
        if (!(err instanceof UpstreamError)) throw err;
        verdict = upstreamFailure(err);
      }
      if (verdict.kind === "ok") {
        // A body that kills the object while parsed must not be fetched again at once.
        await breaker.beforeParse();
        const parsed = parse(deps.parseBody, verdict.response.text, deps.config.partnerMaxVehicles, log);
        breaker.success();
        return { vehicles: parsed.vehicles, dropped: parsed.dropped, timings };
      }
      if (verdict.kind === "replay" && !replayed) {
        // RFC 6750 §3.1 invalid_token: retire exactly this token (compare-and-swap on its id, so a
        // token another caller already refreshed survives), get another, replay once. Never loop.
        replayed = true;
        log.log("warn", "partner_token_rejected", { tokenId: token.id, attempt });
        try {
          await deps.tokens.invalidate(token.id);
        } catch (err) {
          throw new TokenFailure(err);
        }
        const rejected = token.id;
        token = await getToken();
        // The storm guard may have refused a new token: replaying the one just rejected is pointless.
        if (token.id === rejected) {
          throw new AppError("partner_unauthorized", { detail: "the partner API rejected the access token" });
        }
        continue;
      }
      if (verdict.kind === "retry" && !retried) {
        retried = true;
        const delayMs = RETRY_DELAY_MIN_MS + Math.floor(random() * (RETRY_DELAY_MAX_MS - RETRY_DELAY_MIN_MS));
        log.log("warn", "partner_retry", { code: verdict.error.code, attempt, delayMs });
        await sleep(delayMs);
        continue;
      }
      throw verdict.kind === "replay"
        ? new AppError("partner_unauthorized", { detail: "the partner API rejected a freshly issued token" })
        : verdict.error;
    }
  } catch (err) {
    if (err instanceof TokenFailure) {
      breaker.release();
      throw err.err;
    }
    breaker.failure();
    if (err instanceof AppError) {
      log.log("warn", "partner_failed", { code: err.code, retryAfterS: err.retryAfterS });
      throw err;
    }
    // Not ours (a bug, or a fetch that threw something odd): a generic error, cause kept for logs.
    throw new AppError("partner_error", { cause: err });
  }
}

/** Judges one complete partner answer. */
function classify(res: UpstreamResponse, now: number, breaker: CircuitBreaker): Verdict {
  const { status, headers } = res;
  if (status === 200) {
    // Only JSON is parsed: an HTML error page or a captive portal must not reach the validator.
    const type = mediaType(headers);
    if (type === "application/json" || /^[a-z0-9!#$&^_.-]+\/[a-z0-9!#$&^_.+-]+\+json$/.test(type)) {
      return { kind: "ok", response: res };
    }
    return { kind: "fail", error: new AppError("partner_response_invalid", { detail: "not a JSON answer" }) };
  }
  if (status >= 300 && status < 400) {
    // redirect: "manual": we never follow, so the token never reaches the Location target.
    return { kind: "fail", error: new AppError("partner_redirect", { detail: `HTTP ${status}` }) };
  }
  if (status === 401) return { kind: "replay" };
  if (status === 403) {
    // Authenticated but not allowed: a new token would not help.
    return { kind: "fail", error: new AppError("partner_unauthorized", { detail: "HTTP 403" }) };
  }
  if (status === 429 || status === 503) {
    // RFC 9110 §10.2.3 / RFC 6585 §4: honour Retry-After; nothing goes out before it ends.
    const waitS = parseRetryAfter(headers.get("retry-after"), now, MAX_RETRY_AFTER_S) ?? DEFAULT_RETRY_AFTER_S;
    const code = status === 429 ? "partner_rate_limited" : "partner_unavailable";
    breaker.holdUntil(now + waitS * 1000, code);
    return { kind: "fail", error: new AppError(code, { detail: `HTTP ${status}`, retryAfterS: waitS }) };
  }
  if (status >= 500) {
    return { kind: "retry", error: new AppError("partner_error", { detail: `HTTP ${status}` }) };
  }
  return { kind: "fail", error: new AppError("partner_error", { detail: `HTTP ${status}` }) };
}

function upstreamFailure(err: UpstreamError): Verdict {
  switch (err.kind) {
    case "timeout":
      // The deadline is already spent: a retry would double the caller's wait.
      return { kind: "fail", error: new AppError("partner_timeout", { cause: err }) };
    case "too_large":
      return {
        kind: "fail",
        error: new AppError("partner_response_invalid", { detail: "answer too large", cause: err }),
      };
    case "network":
      return { kind: "retry", error: new AppError("partner_unavailable", { cause: err }) };
  }
}

function parse(
  parseBody: ParseBody | undefined,
  text: string,
  maxVehicles: number,
  log: Logger,
): { vehicles: unknown[]; dropped: number } {
  // Before JSON.parse: a body of millions of tiny values fits the byte cap but not in 128 MB once
  // parsed (see body-guard.ts). Refused like any invalid answer: the breaker counts it as a failure.
  const shape = checkBodyShape(text, maxVehicles);
  if (!shape.ok) {
    log.log("warn", "partner_body_refused", { reason: shape.reason, bytes: text.length, ...shape.counts });
    throw new AppError("partner_response_invalid", { detail: `answer refused before parsing: ${shape.reason}` });
  }
  try {
    return parseBody ? parseBody(text) : parsePartnerBody(text, maxVehicles);
  } catch (err) {
    if (err instanceof AppError) throw err;
    // The cause may quote partner text: it stays on the error for logs, never in `detail`.
    throw new AppError("partner_response_invalid", { cause: err });
  }
}

/** A PartnerClient's needs: the call's, less the breaker it brings itself. */
interface PartnerClientOptions extends Omit<PartnerClientDeps, "breaker"> {
  /** Durable Object storage, or memory: keeps an open breaker (and a Retry-After window) across resets. */
  store: KeyValueStore;
}

/**
 * The partner vehicles call as the gateway makes it: behind its own circuit breaker, counting for
 * /health every request that leaves for the partner (replays and retries included) and every call
 * that reached the partner and failed.
 */
export class PartnerClient {
  readonly breaker: CircuitBreaker;
  readonly #deps: PartnerClientDeps;
  #requests = 0;
  #failures = 0;

  constructor(opts: PartnerClientOptions) {
    const { store, ...deps } = opts;
    this.breaker = new CircuitBreaker({ clock: opts.clock, store, log: opts.log });
    this.#deps = {
      ...deps,
      breaker: this.breaker,
      fetch: (input, init) => {
        this.#requests += 1;
        return opts.fetch(input, init);
      },
    };
  }

  /** Requests sent to the partner since this instance started. */
  get requests(): number {
    return this.#requests;
  }

  /** Calls that reached the partner and failed, since this instance started. */
  get failures(): number {
    return this.#failures;
  }

  /** fetchPartnerVehicles, logged (`partner_fetched`) and counted. Throws as it does. */
  async fetchVehicles(): Promise<PartnerVehicles> {
    const before = this.#requests;
    try {
      const r = await fetchPartnerVehicles(this.#deps);
      this.#deps.log.log("info", "partner_fetched", {
        count: r.vehicles.length,
        dropped: r.dropped,
        tokenMs: r.timings.tokenMs,
        partnerMs: r.timings.partnerMs,
      });
      return r;
    } catch (err) {
      // Only a call that reached the partner counts: a breaker refusal or a token failure sent nothing.
      // The snapshot service runs one fetch at a time, so the counter delta is this call's own.
      if (this.#requests > before) this.#failures += 1;
      throw err;
    }
  }
}
