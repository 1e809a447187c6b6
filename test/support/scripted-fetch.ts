/**
 * A scripted partner for unit tests (Node): a FetchFn that answers each request with the next
 * responder of its script, records every request, and counts any request past the script as
 * unexpected (it throws, and the check after each test fails).
 */
import { afterEach, expect } from "vitest";
import type { FetchFn } from "../../src/ports.ts";

/** One scripted answer: a response, or a promise that rejects (a network error, say). */
export type Responder = (req: Request) => Response | Promise<Response>;

export interface ScriptedFetch {
  fetch: FetchFn;
  /** Every request it was sent, in order (those past the script too). */
  requests: Request[];
  /** `METHOD url` of each request past the script. */
  unexpected: string[];
  /** How many responders are left. */
  remaining(): number;
  /** Appends responders to the script. */
  push(...more: Responder[]): void;
}

export function scriptedFetch(...script: Responder[]): ScriptedFetch {
  const requests: Request[] = [];
  const unexpected: string[] = [];
  const fetch: FetchFn = async (input, init) => {
    const req = input instanceof Request && init === undefined ? input : new Request(input, init);
    requests.push(req);
    const next = script.shift();
    if (!next) {
      unexpected.push(`${req.method} ${req.url}`);
      throw new Error(`unexpected request ${req.method} ${req.url}`);
    }
    return next(req);
  };
  return { fetch, requests, unexpected, remaining: () => script.length, push: (...more) => script.push(...more) };
}

/**
 * For a test file: registers an afterEach that fails the test if any fetch made (by the returned
 * factory) during it got a request past its script, and returns that factory.
 */
export function checkedScriptedFetches(): (...script: Responder[]) => ScriptedFetch {
  let made: ScriptedFetch[] = [];
  afterEach(() => {
    const unexpected = made.flatMap((f) => f.unexpected);
    made = [];
    expect(unexpected).toEqual([]);
  });
  return (...script) => {
    const f = scriptedFetch(...script);
    made.push(f);
    return f;
  };
}
