/**
 * Fault switches for the two partner endpoints, and their parsing from JSON (the control API).
 *
 * Each endpoint holds an ordered list. For every request the list is walked: each `latency`
 * still armed adds its delay and the walk goes on; the first other fault still armed decides the
 * answer; with none, the real server answers. A fault with `times` fires on that many requests
 * and then stays in the list disarmed, so `[{status 503, times 1}, {tooManyRequests, times 1}]`
 * means "503, then 429, then normal".
 */

/** Limits a fault to the next N requests it applies to; absent: until cleared. */
interface Times {
  times?: number;
}

/** Waits before the headers (composable with any other fault). */
interface LatencyFault extends Times {
  kind: "latency";
  ms: number;
}
/** A 5xx with an HTML body, optionally with `Retry-After` (seconds or an HTTP-date). */
interface StatusFault extends Times {
  kind: "status";
  status: 500 | 502 | 503 | 504;
  retryAfter?: number | string;
}
/** 429 with `Retry-After` (default 1 s). */
interface TooManyRequestsFault extends Times {
  kind: "tooManyRequests";
  retryAfter?: number | string;
}
/** A redirect elsewhere; default: 302 to the sandbox's steal listener on another origin. */
interface RedirectFault extends Times {
  kind: "redirect";
  status?: 301 | 302 | 303 | 307 | 308;
  location?: string;
}
/** 200, `application/json`, a body cut in the middle. */
interface InvalidJsonFault extends Times {
  kind: "invalidJson";
}
/** An HTML page (what a proxy or captive portal sends), status 200 unless given. */
interface HtmlFault extends Times {
  kind: "html";
  status?: number;
}
/** A valid JSON body of at least `mb` MiB (default 20); `declareLength` sends Content-Length (default: chunked). */
export interface OversizeFault extends Times {
  kind: "oversize";
  mb?: number;
  declareLength?: boolean;
}
/**
 * Headers at once, then the (real) body trickles: `chunkBytes` every `intervalMs`
 * (defaults 64 B / 100 ms). With `stallAfterBytes`, it stops there and never ends (until reset).
 */
export interface SlowBodyFault extends Times {
  kind: "slowBody";
  chunkBytes?: number;
  intervalMs?: number;
  stallAfterBytes?: number;
}
/** Never answers; the connection is dropped on clearFaults, reset or close. */
interface HangFault extends Times {
  kind: "hang";
}
/** Any response you like, for shapes the named faults do not cover. */
interface CustomFault extends Times {
  kind: "custom";
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

/** Token endpoint: 401 `{"error":"invalid_client"}` whatever the credentials (RFC 6749 §5.2). */
interface InvalidClientFault extends Times {
  kind: "invalidClient";
}
/** Token endpoint: 200 whose JSON is an error object (`{"error":"server_error",...}`), no token. */
interface ErrorIn200Fault extends Times {
  kind: "errorIn200";
}
/** Token endpoint: a real token whose `expires_in` is missing, a string, or 0. */
interface ExpiresInFault extends Times {
  kind: "expiresIn";
  value: "missing" | "string" | "zero";
}
/** Token endpoint: a real token with `token_type` spelled otherwise (default `"bearer"`; RFC 6749 §5.1: case-insensitive). */
interface TokenTypeFault extends Times {
  kind: "tokenType";
  tokenType?: string;
}
/**
 * Vehicles endpoint: 200, a JSON array of `count` copies of `item` (defaults: 5,592,000 and `{}`,
 * 16,776,001 bytes: just under the 16 MiB default byte cap, ~340 MB once parsed). Chunked, with
 * backpressure, unless `declareLength`.
 */
interface ManyItemsFault extends Times {
  kind: "manyItems";
  count?: number;
  item?: string;
  declareLength?: boolean;
}
/** Defaults of `manyItems`. */
export const MANY_ITEMS_DEFAULT = { count: 5_592_000, item: "{}" } as const;
/** Vehicles endpoint: 401 invalid_token even for a valid token (as after a key rotation upstream). */
interface UnauthorizedFault extends Times {
  kind: "unauthorized";
}

type CommonFault =
  | LatencyFault
  | StatusFault
  | TooManyRequestsFault
  | RedirectFault
  | InvalidJsonFault
  | HtmlFault
  | OversizeFault
  | SlowBodyFault
  | HangFault
  | CustomFault;

/** A fault of the token endpoint. */
export type TokenFault = CommonFault | InvalidClientFault | ErrorIn200Fault | ExpiresInFault | TokenTypeFault;
/** A fault of the vehicles endpoint. */
export type VehiclesFault = CommonFault | UnauthorizedFault | ManyItemsFault;
/** Any fault. */
export type Fault = TokenFault | VehiclesFault;
export type Endpoint = "token" | "vehicles";

/** What `setFaults` takes: an endpoint absent is left as it is; present, its list is replaced. */
export interface FaultsSpec {
  token?: TokenFault | TokenFault[];
  vehicles?: VehiclesFault | VehiclesFault[];
}

/** An armed fault list entry: the fault and how many firings remain (Infinity: until cleared). */
export interface ArmedFault {
  fault: Fault;
  remaining: number;
}

const COMMON_KINDS = new Set([
  "latency",
  "status",
  "tooManyRequests",
  "redirect",
  "invalidJson",
  "html",
  "oversize",
  "slowBody",
  "hang",
  "custom",
]);
const KINDS: Record<Endpoint, ReadonlySet<string>> = {
  token: new Set([...COMMON_KINDS, "invalidClient", "errorIn200", "expiresIn", "tokenType"]),
  vehicles: new Set([...COMMON_KINDS, "unauthorized", "manyItems"]),
};

/** A fault spec that does not parse; the control API answers it with 400 and this message. */
export class FaultSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FaultSpecError";
  }
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new FaultSpecError(message);
}

const isInt = (v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): boolean =>
  typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
const isNum = (v: unknown, min: number): boolean => typeof v === "number" && Number.isFinite(v) && v >= min;
const isRetryAfter = (v: unknown): boolean => v === undefined || isInt(v, 0) || (typeof v === "string" && v !== "");

/** Checks one fault (from JSON or from a typed caller: both are validated the same way). */
function parseFault(endpoint: Endpoint, raw: unknown, where: string): Fault {
  check(typeof raw === "object" && raw !== null && !Array.isArray(raw), `${where}: must be an object`);
  const f = raw as Record<string, unknown>;
  const kind = f.kind;
  check(typeof kind === "string" && KINDS[endpoint].has(kind), `${where}.kind: unknown for ${endpoint}: ${kind}`);
  check(f.times === undefined || isInt(f.times, 1), `${where}.times: must be a whole number >= 1`);
  const opt = (name: string, ok: (v: unknown) => boolean, rule: string) =>
    check(f[name] === undefined || ok(f[name]), `${where}.${name}: ${rule}`);
  switch (kind) {
    case "latency":
      check(isNum(f.ms, 0), `${where}.ms: must be a number >= 0`);
      break;
    case "status":
      check([500, 502, 503, 504].includes(f.status as number), `${where}.status: must be 500, 502, 503 or 504`);
      check(isRetryAfter(f.retryAfter), `${where}.retryAfter: seconds or an HTTP-date`);
      break;
    case "tooManyRequests":
      check(isRetryAfter(f.retryAfter), `${where}.retryAfter: seconds or an HTTP-date`);
      break;
    case "redirect":
      opt("status", (v) => [301, 302, 303, 307, 308].includes(v as number), "must be 301, 302, 303, 307 or 308");
      opt("location", (v) => typeof v === "string" && URL.canParse(v), "must be an absolute URL");
      break;
    case "html":
      opt("status", (v) => isInt(v, 200, 599), "must be an HTTP status");
      break;
    case "oversize":
      opt("mb", (v) => isNum(v, 0.001) && (v as number) <= 1024, "must be a number of MiB, at most 1024");
      opt("declareLength", (v) => typeof v === "boolean", "must be a boolean");
      break;
    case "slowBody":
      opt("chunkBytes", (v) => isInt(v, 1), "must be a whole number >= 1");
      opt("intervalMs", (v) => isNum(v, 0), "must be a number >= 0");
      opt("stallAfterBytes", (v) => isInt(v, 0), "must be a whole number >= 0");
      break;
    case "custom":
      check(isInt(f.status, 200, 599), `${where}.status: must be an HTTP status`);
      opt(
        "headers",
        (v) => typeof v === "object" && v !== null && Object.values(v as object).every((h) => typeof h === "string"),
        "must map names to strings",
      );
      opt("body", (v) => typeof v === "string", "must be a string");
      break;
    case "manyItems":
      opt("count", (v) => isInt(v, 2, 50_000_000), "must be a whole number from 2 to 50000000");
      opt("item", (v) => typeof v === "string" && v !== "" && v.length <= 1024, "must be JSON text of 1 to 1024 chars");
      opt("declareLength", (v) => typeof v === "boolean", "must be a boolean");
      break;
    case "expiresIn":
      check(["missing", "string", "zero"].includes(f.value as string), `${where}.value: missing, string or zero`);
      break;
    case "tokenType":
      opt("tokenType", (v) => typeof v === "string", "must be a string");
      break;
  }
  return structuredClone(f) as unknown as Fault;
}

/** Validates a spec; throws FaultSpecError naming the first bad member. */
export function parseFaultsSpec(raw: unknown): { token?: Fault[]; vehicles?: Fault[] } {
  check(typeof raw === "object" && raw !== null && !Array.isArray(raw), "faults: must be an object");
  const spec = raw as Record<string, unknown>;
  for (const key of Object.keys(spec)) check(key === "token" || key === "vehicles", `faults.${key}: unknown endpoint`);
  const out: { token?: Fault[]; vehicles?: Fault[] } = {};
  for (const endpoint of ["token", "vehicles"] as const) {
    const value = spec[endpoint];
    if (value === undefined) continue;
    const list = Array.isArray(value) ? value : [value];
    out[endpoint] = list.map((f, i) => parseFault(endpoint, f, `faults.${endpoint}[${i}]`));
  }
  return out;
}

/** Arms a parsed list. */
export function arm(faults: readonly Fault[]): ArmedFault[] {
  return faults.map((fault) => ({ fault, remaining: fault.times ?? Number.POSITIVE_INFINITY }));
}

/** What one request gets: the total extra latency, and the fault that answers it (if any). */
export interface Decision {
  latencyMs: number;
  fault: Exclude<Fault, LatencyFault> | undefined;
}

/** Walks an armed list for one request, consuming what fires (see the module comment). */
export function decide(list: ArmedFault[]): Decision {
  let latencyMs = 0;
  for (const entry of list) {
    if (entry.remaining <= 0) continue;
    entry.remaining--;
    if (entry.fault.kind === "latency") {
      latencyMs += entry.fault.ms;
      continue;
    }
    return { latencyMs, fault: entry.fault };
  }
  return { latencyMs, fault: undefined };
}
