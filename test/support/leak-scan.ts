/**
 * The leak scan of the fault suites (test/integration/faults-*.test.ts), and the checks every
 * fault case shares.
 *
 * A `LeakScan` records, from its first `watch()` to the suite's `afterAll`:
 * - every Worker response read through `scan.fetch` (status, every header, the body);
 * - every value handed to `scan.see` (RPC results, Cache API entries, stored records);
 * - every console line (console.log/info/warn/error/debug are captured, not printed: the Worker and
 *   the gateway object both log through the test isolate's console);
 * - every request the code under test sent with globalThis.fetch (the sandbox control API excepted).
 *
 * `assertClean()` (the `afterAll` of each suite) fails if any of those holds the client secret (raw
 * or in any encoding it travels in), any access token the sandbox ever issued, any `fuelCardPin` of
 * the sandbox fleet (with or without its marker), or a value a test planted with `plant`; or if a
 * request went anywhere but the configured token endpoint and vehicles URL, or a bearer token went
 * anywhere but the vehicles URL.
 */
import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterAll, beforeEach, expect, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { basicCredentials } from "../../src/oauth/token-endpoint.ts";
import type { Deps } from "../../src/ports.ts";
import { coldStart, get, sandbox } from "./harness.ts";

/** The marker every sandbox fuelCardPin starts with (sandbox/fleet.ts PIN_MARKER). */
export const PIN_MARKER = "sbxpin-";
/** The marker of values the fault suites plant in partner answers (unknown fields): never to be served. */
export const PLANTED_MARKER = "sbxplant-";

/** A Worker response read in full. */
export interface Seen {
  status: number;
  headers: Headers;
  text: string;
  json<T = Record<string, unknown>>(): T;
}

/** One request the code under test sent. */
export interface Outbound {
  method: string;
  url: string;
  authorization: string | undefined;
  /** When it was sent and when its response headers came (or it failed); ms of Date.now. */
  startedAt: number;
  settledAt: number | undefined;
}

function describe(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) {
    const extra = Object.entries(value).map(([k, v]) => `${k}=${describe(v)}`);
    return [value.name, value.message, String(value.stack ?? ""), describe(value.cause ?? ""), ...extra].join("\n");
  }
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Every form a client secret could take on the wire or in a log line. */
function secretForms(id: string, secret: string): string[] {
  const form = new URLSearchParams([["v", secret]]).toString().slice(2);
  return [
    secret,
    encodeURIComponent(secret),
    form,
    JSON.stringify(secret).slice(1, -1),
    basicCredentials(id, secret).slice("Basic ".length),
    btoa(`${id}:${secret}`),
  ];
}

const CONTROL_PREFIX = () => `${env.SANDBOX_URL}/__sandbox`;

export class LeakScan {
  readonly #texts: { where: string; text: string }[] = [];
  readonly #planted = new Set<string>();
  readonly #outbound: Outbound[] = [];
  #logLines = 0;
  #responses = 0;
  /** Index in #outbound where the current test began (the last watch()). */
  #testStart = 0;

  /** Requests the code under test sent since the last watch() (this test); the scan checks all of them. */
  get outbound(): readonly Outbound[] {
    return this.#outbound.slice(this.#testStart);
  }

  /**
   * Starts (again) capturing console lines and outbound requests. coldStart() restores every mock,
   * so call this after it (`scan.coldStart()` does both).
   */
  watch(): void {
    this.#testStart = this.#outbound.length;
    for (const level of ["log", "info", "warn", "error", "debug"] as const) {
      vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
        this.#logLines++;
        this.#texts.push({ where: `console.${level}`, text: args.map(describe).join(" ") });
      });
    }
    const realFetch = globalThis.fetch;
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
      const req = input instanceof Request ? input : undefined;
      const url = req ? req.url : String(input);
      if (url.startsWith(CONTROL_PREFIX())) return realFetch(input, init);
      const headers = new Headers(init?.headers ?? req?.headers);
      const entry: Outbound = {
        method: init?.method ?? req?.method ?? "GET",
        url,
        authorization: headers.get("authorization") ?? undefined,
        startedAt: Date.now(),
        settledAt: undefined,
      };
      this.#outbound.push(entry);
      try {
        return await realFetch(input, init);
      } finally {
        entry.settledAt = Date.now();
      }
    });
  }

  /** coldStart() (no token, no snapshot, empty caches, calm sandbox), then watch(). */
  async coldStart(): Promise<void> {
    await coldStart();
    this.watch();
  }

  /** A request to the Worker under test, read in full and recorded. */
  async fetch(path: string, init?: RequestInit): Promise<Seen> {
    return this.record(`${init?.method ?? "GET"} ${path.slice(0, 100)}`, await get(path, init));
  }

  /** The Worker's app built on `deps` (see harness.ts `appDeps`): a fetch whose answers are read in full and recorded. */
  app(deps: Deps): (path: string, init?: RequestInit) => Promise<Seen> {
    const app = createApp();
    return async (path, init) => {
      const res = await app.fetch(new Request(`https://gateway.test${path}`, init), { deps }, createExecutionContext());
      return this.record(`app ${path}`, res);
    };
  }

  /** Reads a response (of the Worker, or of an app built with test deps) in full and records it. */
  async record(where: string, res: Response): Promise<Seen> {
    const text = await res.text();
    this.#responses++;
    const head = [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
    this.#texts.push({ where: `${where} -> ${res.status}`, text: `${head}\n\n${text}` });
    return { status: res.status, headers: res.headers, text, json: <T>() => JSON.parse(text) as T };
  }

  /** Records any value (an RPC result, a cached entry, a stored record) for the scan. */
  see(where: string, value: unknown): void {
    this.#texts.push({ where, text: describe(value) });
  }

  /** Values that must never appear anywhere (e.g. planted in a partner answer as unknown fields). */
  plant(...values: string[]): void {
    for (const v of values) this.#planted.add(v);
  }

  /** This test's outbound requests to the token endpoint. */
  tokenRequests(): Outbound[] {
    return this.outbound.filter((r) => r.url === env.PARTNER_TOKEN_URL);
  }

  /** This test's outbound requests to the vehicles URL. */
  vehiclesRequests(): Outbound[] {
    return this.outbound.filter((r) => r.url === `${env.PARTNER_API_URL}/api/rental/partner/vehicles`);
  }

  /** The most of this test's requests to `url` that were ever in flight at once (by send and settle times). */
  maxInFlight(url: string): number {
    const events = this.outbound
      .filter((r) => r.url === url)
      .flatMap((r) => [
        { t: r.startedAt, d: 1 },
        { t: r.settledAt ?? Number.POSITIVE_INFINITY, d: -1 },
      ])
      .sort((a, b) => a.t - b.t || a.d - b.d);
    let cur = 0;
    let max = 0;
    for (const e of events) {
      cur += e.d;
      max = Math.max(max, cur);
    }
    return max;
  }

  /**
   * The scan. Fails naming the first text that holds a secret, or the first request that went
   * somewhere it should not. Returns what it looked at, so a suite can check it looked at all.
   */
  async assertClean(): Promise<{ texts: number; responses: number; logLines: number; needles: number }> {
    const s = await sandbox.secrets();
    if (s.accessTokens.length === 0) throw new Error("leak scan: the sandbox reports no issued access token");
    if (s.fuelCardPins.length === 0) throw new Error("leak scan: the sandbox reports no fuelCardPin");
    if (s.fuelCardPins.some((p) => !p.startsWith(PIN_MARKER))) throw new Error("leak scan: a PIN without the marker");
    const clientSecrets: [string, string][] = [
      [env.PARTNER_CLIENT_ID ?? "", env.PARTNER_CLIENT_SECRET ?? ""],
      [env.SANDBOX_BASIC_ID, env.SANDBOX_BASIC_SECRET],
      ...s.clientSecrets.map((secret): [string, string] => [env.PARTNER_CLIENT_ID ?? "", secret]),
    ];
    // Literal needles, searched for in every text: few, so plain includes() is fast enough.
    const literals: { what: string; needle: string }[] = [
      { what: "the fuelCardPin marker", needle: PIN_MARKER },
      { what: "a planted value marker", needle: PLANTED_MARKER },
      ...clientSecrets.flatMap(([id, secret]) =>
        secret === "" ? [] : secretForms(id, secret).map((needle) => ({ what: "a client secret", needle })),
      ),
      ...[...this.#planted].map((p) => ({ what: `planted value ${p}`, needle: p })),
    ].filter((n) => n.needle.length >= 6);
    // Thousands of PINs and hundreds of tokens over megabytes of text: found by their shape in
    // one pass per text, then looked up. A bare PIN is `dddd-dddddd` (marker dropped); a token is a
    // run of RFC 6750 b64token characters, so any text holding one holds it inside such a run.
    const pins = new Set(s.fuelCardPins.map((p) => p.slice(PIN_MARKER.length)));
    const pinShape = /\d{4}-\d{6}/g;
    const tokens = s.accessTokens.filter((t) => t.length >= 16);
    const minToken = Math.min(...tokens.map((t) => t.length));
    const runShape = /[A-Za-z0-9\-._~+/]+=*/g;
    const runs = new Map<string, string>(); // distinct long run -> where first seen
    const fail = (what: string, where: string, text: string, needle: string): never => {
      const at = text.indexOf(needle);
      throw new Error(
        `leak: ${what} in ${where}: …${text.slice(Math.max(0, at - 80), at).replaceAll(needle, "<…>")}<LEAK>…`,
      );
    };
    for (const { where, text } of this.#texts) {
      for (const { what, needle } of literals) if (text.includes(needle)) fail(what, where, text, needle);
      for (const m of text.matchAll(pinShape)) if (pins.has(m[0])) fail(`fuelCardPin ${m[0]}`, where, text, m[0]);
      for (const m of text.matchAll(runShape)) if (m[0].length >= minToken && !runs.has(m[0])) runs.set(m[0], where);
    }
    for (const [run, where] of runs) {
      for (const t of tokens) if (run.includes(t)) fail("an access token", where, run, t);
    }
    const vehiclesUrl = `${env.PARTNER_API_URL}/api/rental/partner/vehicles`;
    for (const r of this.#outbound) {
      if (r.url !== env.PARTNER_TOKEN_URL && r.url !== vehiclesUrl) {
        throw new Error(
          `leak: a request went to ${r.method} ${r.url}, neither the token endpoint nor the vehicles URL`,
        );
      }
      if (r.authorization !== undefined && r.url !== vehiclesUrl) {
        throw new Error(`leak: an Authorization header went to ${r.url}`);
      }
    }
    return {
      texts: this.#texts.length,
      responses: this.#responses,
      logLines: this.#logLines,
      needles: literals.length + pins.size + tokens.length,
    };
  }
}

/**
 * The scan of a fault suite: registers a cold start (and `watch()`) before each test of the file,
 * and `assertClean()` after all of them, which must have looked at some responses (and, with
 * `logLines`, at some console lines too).
 */
export function scanSuite(opts: { logLines: boolean }): LeakScan {
  const scan = new LeakScan();

  beforeEach(() => scan.coldStart());

  afterAll(async () => {
    const looked = await scan.assertClean();
    expect(looked.responses).toBeGreaterThan(0);
    if (opts.logLines) expect(looked.logLines).toBeGreaterThan(0);
  }, 60_000);

  return scan;
}
