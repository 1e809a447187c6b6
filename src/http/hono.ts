/**
 * Hono with one router, the TrieRouter: the default `hono` entry bundles three (SmartRouter choosing
 * between RegExpRouter and TrieRouter), about 1.5 KB gzip that the Worker's 50 KB budget needs
 * (BENCHMARKS.md). `hono/tiny` and `hono/quick` are smaller still but match `/health/` and
 * `/v1/vehicles/{vin}/` as their slashless routes; the TrieRouter matches paths exactly, as the
 * default does (test/integration/faults-input.test.ts, "path tricks"). A handful of routes: the
 * trie's lookup cost is nothing next to an answer.
 */
import type { HonoOptions } from "hono/hono-base";
import { HonoBase } from "hono/hono-base";
import { TrieRouter } from "hono/router/trie-router";
import type { BlankEnv, BlankSchema, Env, Schema } from "hono/types";

export class Hono<
  E extends Env = BlankEnv,
  S extends Schema = BlankSchema,
  BasePath extends string = "/",
> extends HonoBase<E, S, BasePath> {
  constructor(options: HonoOptions<E> = {}) {
    super(options);
    this.router = new TrieRouter();
  }
}
