/// <reference types="node" />
/**
 * A local SHARE NOW Partner API: a real OAuth 2.0 token endpoint (oidc-provider, client
 * credentials) and the vehicles endpoint, with fault switches, counters and a control API.
 * Used by `npm start`, integration tests (the Worker in workerd reaches it over loopback) and
 * benchmarks. See sandbox/README.md for the control API.
 */
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type ArmedFault,
  arm,
  decide,
  type Endpoint,
  type Fault,
  FaultSpecError,
  type FaultsSpec,
  MANY_ITEMS_DEFAULT,
  parseFaultsSpec,
} from "./faults.ts";
import { createFleet, type Fleet, type Vehicle } from "./fleet.ts";
import {
  type ClientCredentials,
  createTokenServer,
  TOKEN_PATH,
  type TokenRejection,
  type TokenServer,
} from "./oauth.ts";
import { Lifecycle, oversize, send, sendJson, trickle } from "./respond.ts";

export type { FaultsSpec, TokenFault, VehiclesFault } from "./faults.ts";
export { PIN_MARKER, type Vehicle } from "./fleet.ts";
export type { ClientCredentials } from "./oauth.ts";

/** The partner's vehicles path, under the API origin. */
const VEHICLES_PATH = "/api/rental/partner/vehicles";
/** Prefix of the control API (never counted, never faulted). */
const CONTROL_PATH = "/__sandbox";
/** Where the redirect fault points (on another origin); every hit is counted. */
const STEAL_PATH = "/steal";

/** Default clients. The secrets hold `+ % : / = & ? #` so any encoding slip shows (RFC 6749 §2.3.1). */
export const DEFAULT_CLIENTS = {
  post: { id: "sandbox-partner-post", secret: "s3cr+t%:/=&?#sandbox-post" },
  basic: { id: "sandbox-partner-basic", secret: "s3cr+t%:/=&?#sandbox-basic" },
} as const satisfies Record<string, ClientCredentials>;

/** Options of `startSandbox`; every one has a default. */
export interface SandboxOptions {
  /** Default 8788; 0 picks a free port. */
  port?: number | undefined;
  /** Default 127.0.0.1. */
  host?: string | undefined;
  /** Vehicles in the fleet, default 2,000. */
  fleetSize?: number | undefined;
  /** Seed of the fleet, default 1. */
  seed?: number | undefined;
  /** Access token lifetime in seconds, default 300 (Keycloak's). */
  tokenTtlS?: number | undefined;
  /** Milliseconds per fleet tick, default 10,000; 0 freezes time (ticks move only by `advanceTick`). */
  tickMs?: number | undefined;
  /** Client ids and secrets; defaults in DEFAULT_CLIENTS. */
  clients?: { post?: Partial<ClientCredentials>; basic?: Partial<ClientCredentials> };
}

/** Counts of one partner endpoint. */
interface EndpointCounters {
  /** Requests received (faulted ones included). */
  total: number;
  /** Responses by status code (a hang has none). */
  byStatus: Record<string, number>;
  /** Requests a fault decided, by fault kind (`latency` counts each delayed request). */
  byFault: Record<string, number>;
}

/** Everything the sandbox served, control requests excepted. */
export interface Counters {
  /** `issued`: real tokens handed out (also when a fault rewrote the answer); `rejected`: oidc-provider errors. */
  token: EndpointCounters & { issued: number; rejected: number };
  /** `served`: 200s with the fleet; `rejected`: 401s from the real token check, by reason. */
  vehicles: EndpointCounters & { served: number; rejected: Record<TokenRejection, number> };
  /** Hits on the redirect target; `withAuthorization`: ones that carried an Authorization header. */
  steal: { total: number; withAuthorization: number };
  /** Requests to any other path (answered 404); tests expect 0. */
  unexpected: number;
  /** The last few unexpected requests, "METHOD /path", to say what went wrong. */
  unexpectedRequests: string[];
}

/** What might leak: every access token issued, every fuelCardPin, the client secrets. */
interface Secrets {
  accessTokens: string[];
  fuelCardPins: string[];
  clientSecrets: string[];
}

/** A running sandbox. */
export interface Sandbox {
  /** Origin, e.g. `http://127.0.0.1:8788`. */
  readonly url: string;
  /** Token endpoint (PARTNER_TOKEN_URL). */
  readonly tokenUrl: string;
  /** Partner API origin (PARTNER_API_URL); vehicles at `${apiUrl}${VEHICLES_PATH}`. */
  readonly apiUrl: string;
  /** Full vehicles URL. */
  readonly vehiclesUrl: string;
  /** Control API base, `${url}/__sandbox`. */
  readonly controlUrl: string;
  /** The redirect fault's default target, on another origin. */
  readonly stealUrl: string;
  readonly clients: { post: ClientCredentials; basic: ClientCredentials };
  /** Vehicles served now (the size given at start, unless `setFleetSize` changed it). */
  readonly fleetSize: number;
  readonly seed: number;
  counters(): Counters;
  /** Serves a fleet of `size` vehicles (same seed) until `reset()`, which restores the size given at start. */
  setFleetSize(size: number): void;
  resetCounters(): void;
  /** Replaces the fault list of each endpoint named in `spec`; throws FaultSpecError on a bad spec. */
  setFaults(spec: FaultsSpec): void;
  /** The armed fault lists, with what each fault has left (`null`: until cleared). */
  faults(): Record<Endpoint, { fault: Fault; remaining: number | null }[]>;
  /** Removes every fault and drops the connections of hung requests and stalled bodies. */
  clearFaults(): void;
  /** clearFaults + resetCounters + tick back to 0 + the fleet size given at start (tokens and revocations are kept). */
  reset(): void;
  /** Revokes every token issued so far (the next vehicles call with one gets 401); returns how many. */
  revokeAll(): number;
  /** Revokes one token; returns 1 if it was issued here and not yet revoked, else 0. */
  revoke(token: string): number;
  secrets(): Secrets;
  /** The fleet at the current tick, with PINs, as served. */
  fleet(): Vehicle[];
  /** The current tick. */
  tick(): number;
  /** Moves the fleet `n` ticks ahead (default 1); returns the new tick. */
  advanceTick(n?: number): number;
  /** Lifetime of tokens issued from now on. */
  setTokenTtl(seconds: number): void;
  /** Stops listening and destroys every connection (keep-alive, hung, trickling). */
  close(): Promise<void>;
}

/** The HTML a proxy or maintenance page would send. */
const htmlPage = (title: string) =>
  `<!DOCTYPE html><html><head><title>${title}</title></head><body><h1>${title}</h1><p>Please try again later.</p></body></html>`;

const HTML = { "content-type": "text/html; charset=utf-8" };
const JSON_TYPE = { "content-type": "application/json" };
const STATUS_TEXT: Record<number, string> = {
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

function emptyCounters(): Counters {
  return {
    token: { total: 0, byStatus: {}, byFault: {}, issued: 0, rejected: 0 },
    vehicles: {
      total: 0,
      byStatus: {},
      byFault: {},
      served: 0,
      rejected: { missing: 0, unknown: 0, expired: 0, revoked: 0 },
    },
    steal: { total: 0, withAuthorization: 0 },
    unexpected: 0,
    unexpectedRequests: [],
  };
}

const bump = (record: Record<string, number>, key: string | number) => {
  record[key] = (record[key] ?? 0) + 1;
};

/** RFC 6750 §2.1: `Bearer <b64token>`, scheme case-insensitive. */
function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header ?? "");
  return m?.[1];
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 1_048_576) throw new FaultSpecError("body: larger than 1 MiB");
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8").trim();
  if (text === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new FaultSpecError("body: not JSON");
  }
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

const hostForUrl = (host: string) => (host.includes(":") ? `[${host}]` : host);

class SandboxImpl implements Sandbox {
  readonly url: string;
  readonly tokenUrl: string;
  readonly apiUrl: string;
  readonly vehiclesUrl: string;
  readonly controlUrl: string;
  readonly stealUrl: string;
  readonly clients: { post: ClientCredentials; basic: ClientCredentials };
  fleetSize: number;
  readonly seed: number;

  #initialFleet: Fleet;
  #server: Server;
  #steal: Server;
  #tokens: TokenServer;
  #fleet: Fleet;
  #life = new Lifecycle();
  #counters = emptyCounters();
  #faults: Record<Endpoint, ArmedFault[]> = { token: [], vehicles: [] };
  #tickMs: number;
  #tickBase = Date.now();
  #tickOffset = 0;

  constructor(init: {
    url: string;
    stealUrl: string;
    server: Server;
    steal: Server;
    tokens: TokenServer;
    fleet: Fleet;
    clients: { post: ClientCredentials; basic: ClientCredentials };
    tickMs: number;
  }) {
    this.url = init.url;
    this.tokenUrl = `${init.url}${TOKEN_PATH}`;
    this.apiUrl = init.url;
    this.vehiclesUrl = `${init.url}${VEHICLES_PATH}`;
    this.controlUrl = `${init.url}${CONTROL_PATH}`;
    this.stealUrl = init.stealUrl;
    this.clients = init.clients;
    this.fleetSize = init.fleet.size;
    this.seed = init.fleet.seed;
    this.#server = init.server;
    this.#steal = init.steal;
    this.#tokens = init.tokens;
    this.#fleet = init.fleet;
    this.#initialFleet = init.fleet;
    this.#tickMs = init.tickMs;
  }

  counters(): Counters {
    return structuredClone(this.#counters);
  }

  resetCounters(): void {
    this.#counters = emptyCounters();
  }

  setFaults(spec: FaultsSpec): void {
    const parsed = parseFaultsSpec(spec);
    if (parsed.token) this.#faults.token = arm(parsed.token);
    if (parsed.vehicles) this.#faults.vehicles = arm(parsed.vehicles);
  }

  faults(): Record<Endpoint, { fault: Fault; remaining: number | null }[]> {
    const view = (list: ArmedFault[]) =>
      list.map((a) => ({
        fault: structuredClone(a.fault),
        remaining: Number.isFinite(a.remaining) ? a.remaining : null,
      }));
    return { token: view(this.#faults.token), vehicles: view(this.#faults.vehicles) };
  }

  clearFaults(): void {
    this.#faults = { token: [], vehicles: [] };
    this.#life.release();
  }

  setFleetSize(size: number): void {
    if (!Number.isInteger(size) || size < 0 || size > 1_000_000) throw new FaultSpecError("size: 0..1,000,000");
    this.#fleet = size === this.#initialFleet.size ? this.#initialFleet : createFleet(this.seed, size);
    this.fleetSize = size;
  }

  reset(): void {
    if (this.#fleet !== this.#initialFleet) this.setFleetSize(this.#initialFleet.size);
    this.clearFaults();
    this.resetCounters();
    this.#tickBase = Date.now();
    this.#tickOffset = 0;
  }

  revokeAll(): number {
    return this.#tokens.revoke();
  }

  revoke(token: string): number {
    return this.#tokens.revoke(token);
  }

  secrets(): Secrets {
    return {
      accessTokens: this.#tokens.issued(),
      fuelCardPins: this.#fleet.pins(),
      clientSecrets: [this.clients.post.secret, this.clients.basic.secret],
    };
  }

  fleet(): Vehicle[] {
    return this.#fleet.at(this.tick());
  }

  tick(): number {
    const elapsed = this.#tickMs > 0 ? Math.floor((Date.now() - this.#tickBase) / this.#tickMs) : 0;
    return this.#tickOffset + elapsed;
  }

  advanceTick(n = 1): number {
    if (!Number.isInteger(n)) throw new TypeError("advanceTick: n must be a whole number");
    this.#tickOffset += n;
    return this.tick();
  }

  /** Changes the tick length, keeping the current tick. */
  setTickMs(ms: number): void {
    this.#tickOffset = this.tick();
    this.#tickBase = Date.now();
    this.#tickMs = ms;
  }

  setTokenTtl(seconds: number): void {
    if (!Number.isInteger(seconds) || seconds < 1)
      throw new TypeError("setTokenTtl: seconds must be a whole number >= 1");
    this.#tokens.setTtl(seconds);
  }

  async close(): Promise<void> {
    this.#life.close();
    const closing = [this.#server, this.#steal].map((s) => (s.listening ? once(s, "close") : Promise.resolve()));
    for (const s of [this.#server, this.#steal]) {
      if (s.listening) s.close();
      s.closeAllConnections();
    }
    await Promise.all(closing);
  }

  /** The main listener's request handler. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? "/", "http://sandbox").pathname;
    if (path === CONTROL_PATH || path.startsWith(`${CONTROL_PATH}/`)) return this.#control(req, res, path);
    if (path === STEAL_PATH) return this.handleSteal(req, res);
    if (path === TOKEN_PATH) return this.#token(req, res);
    if (path === VEHICLES_PATH) return this.#vehicles(req, res);
    this.#counters.unexpected++;
    this.#counters.unexpectedRequests = [...this.#counters.unexpectedRequests, `${req.method} ${path}`].slice(-20);
    sendJson(res, 404, { error: "not_found", path });
  }

  /** The steal listener (another origin) and `/steal` here: anything that followed a redirect. */
  handleSteal(req: IncomingMessage, res: ServerResponse): void {
    this.#counters.steal.total++;
    if (req.headers.authorization !== undefined) this.#counters.steal.withAuthorization++;
    sendJson(res, 200, { stolen: true });
  }

  async #token(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const c = this.#counters.token;
    c.total++;
    const { latencyMs, fault } = decide(this.#faults.token);
    if (latencyMs > 0) bump(c.byFault, "latency");
    await this.#life.delay(latencyMs);
    if (fault) bump(c.byFault, fault.kind);

    if (fault === undefined || fault.kind === "expiresIn" || fault.kind === "tokenType" || fault.kind === "slowBody") {
      // The real server answers; these faults only reshape a successful answer.
      this.#tokens.handle(req, res, (answer, raw) => {
        bump(c.byStatus, answer.status);
        if (answer.status === 200 && typeof answer.body?.access_token === "string") c.issued++;
        else c.rejected++;
        if (!fault || answer.status !== 200 || !answer.body) return false;
        const body = answer.body;
        switch (fault.kind) {
          case "expiresIn":
            if (fault.value === "missing") delete body.expires_in;
            else if (fault.value === "string") body.expires_in = String(body.expires_in);
            else body.expires_in = 0;
            return false;
          case "tokenType":
            body.token_type = fault.tokenType ?? "bearer";
            return false;
          case "slowBody":
            void trickle(
              raw,
              200,
              { ...JSON_TYPE, "cache-control": "no-store" },
              Buffer.from(JSON.stringify(body)),
              fault,
              this.#life,
            );
            return true;
        }
      });
      return;
    }

    const status = await this.#answerFault(res, fault, {
      invalidJson: () => `{"access_token":"${"x".repeat(43)}","expires_in":300,"token_ty`,
      oversize: () => ({
        head: '{"access_token":"',
        unit: "A".repeat(1024),
        tail: '","token_type":"Bearer","expires_in":300}',
      }),
      slowBody: () => Buffer.from("{}"),
    });
    if (status !== undefined) bump(c.byStatus, status);
  }

  async #vehicles(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const c = this.#counters.vehicles;
    c.total++;
    if (req.method !== "GET" && req.method !== "HEAD") {
      bump(c.byStatus, 405);
      sendJson(res, 405, { error: "method_not_allowed" }, { allow: "GET, HEAD" });
      return;
    }
    const { latencyMs, fault } = decide(this.#faults.vehicles);
    if (latencyMs > 0) bump(c.byFault, "latency");
    await this.#life.delay(latencyMs);
    if (fault) {
      bump(c.byFault, fault.kind);
      const tick = this.tick();
      const body = this.#fleet.body(tick);
      const status = await this.#answerFault(res, fault, {
        invalidJson: () => body.subarray(0, Math.floor(body.length / 2)).toString("utf8"),
        oversize: () => {
          const first = JSON.stringify(this.#fleet.at(tick)[0] ?? {});
          return { head: `[${first}`, unit: `,${first}`, tail: "]" };
        },
        slowBody: () => body,
      });
      if (status !== undefined) bump(c.byStatus, status);
      return;
    }

    const rejection = await this.#tokens.verify(bearerToken(req.headers.authorization));
    if (rejection) {
      c.rejected[rejection]++;
      bump(c.byStatus, 401);
      unauthorized(res, rejection);
      return;
    }
    c.served++;
    bump(c.byStatus, 200);
    send(res, 200, JSON_TYPE, this.#fleet.body(this.tick()));
  }

  /**
   * Answers a fault that replaces the real server; returns the status sent (undefined for a hang).
   * `bodies` gives the endpoint's own shapes for faults that bend its normal body.
   */
  async #answerFault(
    res: ServerResponse,
    fault: Exclude<Fault, { kind: "latency" }>,
    bodies: {
      invalidJson: () => string;
      oversize: () => { head: string; unit: string; tail: string };
      slowBody: () => Buffer;
    },
  ): Promise<number | undefined> {
    switch (fault.kind) {
      case "status": {
        const headers: Record<string, string> = { ...HTML };
        if (fault.retryAfter !== undefined) headers["retry-after"] = String(fault.retryAfter);
        send(res, fault.status, headers, htmlPage(`${fault.status} ${STATUS_TEXT[fault.status]}`));
        return fault.status;
      }
      case "tooManyRequests":
        sendJson(res, 429, { error: "too_many_requests" }, { "retry-after": String(fault.retryAfter ?? 1) });
        return 429;
      case "redirect": {
        const status = fault.status ?? 302;
        send(res, status, { location: fault.location ?? this.stealUrl, ...HTML }, htmlPage("Moved"));
        return status;
      }
      case "invalidJson":
        send(res, 200, JSON_TYPE, bodies.invalidJson());
        return 200;
      case "html": {
        const status = fault.status ?? 200;
        send(res, status, HTML, htmlPage("Maintenance"));
        return status;
      }
      case "oversize":
        await oversize(res, JSON_TYPE, bodies.oversize(), fault);
        return 200;
      case "slowBody":
        await trickle(res, 200, JSON_TYPE, bodies.slowBody(), fault, this.#life);
        return 200;
      case "hang":
        this.#life.park(res);
        return undefined;
      case "custom":
        send(res, fault.status, fault.headers ?? {}, fault.body ?? "");
        return fault.status;
      case "invalidClient":
        // RFC 6749 §5.2; the wording is Keycloak's.
        sendJson(
          res,
          401,
          { error: "invalid_client", error_description: "Invalid client or Invalid client credentials" },
          { "www-authenticate": 'Basic realm="partner"' },
        );
        return 401;
      case "errorIn200":
        sendJson(res, 200, { error: "server_error", error_description: "Token issuance temporarily failed" });
        return 200;
      case "unauthorized":
        unauthorized(res, "unknown");
        return 401;
      case "manyItems": {
        // Exactly `count` items: `oversize` writes head, then units until its byte target, then tail.
        const item = fault.item ?? MANY_ITEMS_DEFAULT.item;
        const count = fault.count ?? MANY_ITEMS_DEFAULT.count;
        const bytes = Buffer.byteLength(item) * count + (count - 1) + 2;
        const parts = { head: `[${item}`, unit: `,${item}`, tail: "]" };
        const spec = { kind: "oversize" as const, mb: (bytes - 0.5) / (1024 * 1024) };
        await oversize(res, JSON_TYPE, parts, fault.declareLength ? { ...spec, declareLength: true } : spec);
        return 200;
      }
      case "expiresIn":
      case "tokenType":
        // Handled by the real server path; unreachable here.
        throw new Error(`fault ${fault.kind} needs the real token answer`);
    }
  }

  async #control(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const route = `${req.method} ${path.slice(CONTROL_PATH.length) || "/"}`;
    try {
      switch (route) {
        case "GET /":
          return sendJson(res, 200, {
            url: this.url,
            tokenUrl: this.tokenUrl,
            apiUrl: this.apiUrl,
            vehiclesUrl: this.vehiclesUrl,
            controlUrl: this.controlUrl,
            stealUrl: this.stealUrl,
            clients: this.clients,
            fleetSize: this.fleetSize,
            seed: this.seed,
            tick: this.tick(),
            tickMs: this.#tickMs,
            tokenTtlS: this.#tokens.ttl(),
          });
        case "GET /counters":
          return sendJson(res, 200, this.counters());
        case "POST /counters/reset":
          this.resetCounters();
          return sendJson(res, 200, this.counters());
        case "GET /faults":
          return sendJson(res, 200, this.faults());
        case "POST /faults":
          this.setFaults((await readJson(req)) as FaultsSpec);
          return sendJson(res, 200, this.faults());
        case "DELETE /faults":
        case "POST /faults/clear":
          this.clearFaults();
          return sendJson(res, 200, this.faults());
        case "POST /reset":
          this.reset();
          return sendJson(res, 200, { ok: true, tick: this.tick() });
        case "POST /revoke": {
          const body = (await readJson(req)) as { token?: unknown };
          if (body.token !== undefined && typeof body.token !== "string") throw new FaultSpecError("token: string");
          const revoked = typeof body.token === "string" ? this.revoke(body.token) : this.revokeAll();
          return sendJson(res, 200, { revoked });
        }
        case "GET /secrets":
          return sendJson(res, 200, this.secrets());
        case "GET /fleet":
          return sendJson(res, 200, this.fleet(), { "x-sandbox-tick": String(this.tick()) });
        case "POST /tick": {
          const body = (await readJson(req)) as { advance?: unknown; tickMs?: unknown };
          if (body.tickMs !== undefined) {
            if (typeof body.tickMs !== "number" || !(body.tickMs >= 0)) throw new FaultSpecError("tickMs: number >= 0");
            this.setTickMs(body.tickMs);
          }
          if (body.advance !== undefined) {
            if (!Number.isInteger(body.advance)) throw new FaultSpecError("advance: whole number");
            this.advanceTick(body.advance as number);
          }
          return sendJson(res, 200, { tick: this.tick(), tickMs: this.#tickMs });
        }
        case "POST /fleet-size": {
          const body = (await readJson(req)) as { size?: unknown };
          this.setFleetSize(body.size as number);
          return sendJson(res, 200, { fleetSize: this.fleetSize });
        }
        case "POST /token-ttl": {
          const body = (await readJson(req)) as { seconds?: unknown };
          if (!Number.isInteger(body.seconds) || (body.seconds as number) < 1) {
            throw new FaultSpecError("seconds: whole number >= 1");
          }
          this.setTokenTtl(body.seconds as number);
          return sendJson(res, 200, { tokenTtlS: this.#tokens.ttl() });
        }
        default:
          return sendJson(res, 404, { error: "unknown control route", route });
      }
    } catch (err) {
      if (err instanceof FaultSpecError) return sendJson(res, 400, { error: "bad_request", message: err.message });
      throw err;
    }
  }
}

/** RFC 6750 §3: no error code when no token came (§3.1), `invalid_token` otherwise. */
function unauthorized(res: ServerResponse, why: TokenRejection): void {
  const description: Record<TokenRejection, string> = {
    missing: "Bearer token required",
    unknown: "Token is not active",
    expired: "Token expired",
    revoked: "Token revoked",
  };
  const challenge =
    why === "missing"
      ? 'Bearer realm="partner"'
      : `Bearer realm="partner", error="invalid_token", error_description="${description[why]}"`;
  sendJson(
    res,
    401,
    { error: why === "missing" ? "unauthorized" : "invalid_token", error_description: description[why] },
    { "www-authenticate": challenge },
  );
}

/**
 * Where the redirect fault sends clients: the same port on 127.0.0.2 (another origin, same
 * machine) when we run on 127.0.0.1 and the OS routes all of 127/8 (Linux); else another port.
 */
async function startSteal(host: string, port: number, handler: Parameters<typeof createServer>[1]) {
  const server = createServer(handler);
  if (host === "127.0.0.1") {
    try {
      await listen(server, port, "127.0.0.2");
      return { server, url: `http://127.0.0.2:${port}${STEAL_PATH}` };
    } catch {
      // macOS has only 127.0.0.1 by default: fall through to another port.
    }
  }
  await listen(server, 0, host);
  const { port: stealPort } = server.address() as AddressInfo;
  return { server, url: `http://${hostForUrl(host)}:${stealPort}${STEAL_PATH}` };
}

/** Starts a sandbox; resolves once it listens (well under a second). */
/**
 * The fleet size `npm start` and `npm run start:deno|bun` give the sandbox: SANDBOX_FLEET_SIZE from
 * the environment (e.g. 20000, the real fleet's size), else 2,000. A bad value stops the start.
 */
export function sandboxFleetSize(env: Record<string, string | undefined> = process.env): number {
  const raw = env.SANDBOX_FLEET_SIZE;
  if (raw === undefined || raw === "") return 2000;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 1_000_000)
    throw new TypeError("SANDBOX_FLEET_SIZE: a whole number, 0..1000000");
  return n;
}

export async function startSandbox(opts: SandboxOptions = {}): Promise<Sandbox> {
  const host = opts.host ?? "127.0.0.1";
  const fleetSize = opts.fleetSize ?? 2000;
  const seed = opts.seed ?? 1;
  const tokenTtlS = opts.tokenTtlS ?? 300;
  const tickMs = opts.tickMs ?? 10_000;
  if (!Number.isInteger(fleetSize) || fleetSize < 0 || fleetSize > 1_000_000)
    throw new TypeError("fleetSize: 0..1,000,000");
  if (!Number.isInteger(seed)) throw new TypeError("seed: a whole number");
  if (!Number.isInteger(tokenTtlS) || tokenTtlS < 1) throw new TypeError("tokenTtlS: whole seconds >= 1");
  if (!(tickMs >= 0)) throw new TypeError("tickMs: >= 0");
  const clients = {
    post: { ...DEFAULT_CLIENTS.post, ...opts.clients?.post },
    basic: { ...DEFAULT_CLIENTS.basic, ...opts.clients?.basic },
  };

  // The issuer must name the real port, known only after listen: requests that arrive in between
  // wait for `ready`.
  let sandbox: SandboxImpl | undefined;
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });
  const onError = (res: ServerResponse) => (err: unknown) => {
    console.error("sandbox: handler failed", err);
    if (!res.headersSent) sendJson(res, 500, { error: "sandbox_bug" });
    else res.destroy();
  };
  const server = createServer((req, res) => {
    ready.then(() => sandbox!.handle(req, res)).catch(onError(res));
  });
  await listen(server, opts.port ?? 8788, host);
  const { port } = server.address() as AddressInfo;
  const url = `http://${hostForUrl(host)}:${port}`;
  let steal: { server: Server; url: string } | undefined;
  try {
    steal = await startSteal(host, port, (req, res) => {
      ready.then(() => sandbox!.handleSteal(req, res)).catch(onError(res));
    });
    const tokens = await createTokenServer({ issuer: url, post: clients.post, basic: clients.basic, ttlS: tokenTtlS });
    sandbox = new SandboxImpl({
      url,
      stealUrl: steal.url,
      server,
      steal: steal.server,
      tokens,
      fleet: createFleet(seed, fleetSize),
      clients,
      tickMs,
    });
  } catch (err) {
    for (const s of [server, steal?.server]) {
      s?.close();
      s?.closeAllConnections();
    }
    throw err;
  }
  markReady();
  return sandbox;
}
