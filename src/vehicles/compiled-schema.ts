/**
 * A valibot schema turned once into plain closures that give the same result as
 * `v.safeParse(schema, input, { abortEarly: true })`: the output when valid, `undefined` when not.
 *
 * Why: valibot allocates a dataset object per node it visits (open-circle/valibot#1408). Over
 * 20,000 partner vehicles of 15 fields that was 133-193 ms of workerd CPU per refresh, most of
 * the object's work between the partner's answer and the first byte of a cold stampede; these
 * closures allocate only the output objects.
 *
 * The schema stays the one definition (validation, OpenAPI, types): this reads its public
 * fields (`type`, `entries`, `wrapped`, `options`, `pipe`, each action's `type` and
 * `requirement`) and uses the actions' own requirements (the regex, `url`'s check). It covers the
 * kinds the vehicle schema uses and refuses anything else when built, so a schema change it does
 * not know fails at start-up and in the unit tests, never silently. test/unit/vehicles/
 * compiled-schema.test.ts checks it against `v.safeParse` on generated items, field by field at
 * every boundary.
 */
import type * as v from "valibot";

/** A parse: the output, or FAIL. */
type Parse = (input: unknown) => unknown;

const FAIL: unique symbol = Symbol("invalid");

type AnySchema = v.GenericSchema & {
  readonly pipe?: readonly { kind: string; type: string; requirement?: unknown }[];
  readonly entries?: Record<string, AnySchema>;
  readonly wrapped?: AnySchema;
  readonly options?: readonly unknown[];
  readonly default?: unknown;
  readonly fallback?: unknown;
};

function unsupported(what: string): never {
  throw new TypeError(`compiled-schema: ${what} is not supported`);
}

/** A validation action of a pipe as a predicate on an already typed value (valibot's own test). */
function check(action: { type: string; requirement?: unknown }): (value: never) => boolean {
  const r = action.requirement;
  switch (action.type) {
    case "min_length":
      return (s: { length: number }) => s.length >= (r as number);
    case "max_length":
      return (s: { length: number }) => s.length <= (r as number);
    case "min_value":
      return (n: number) => n >= (r as number);
    case "max_value":
      return (n: number) => n <= (r as number);
    case "regex": {
      const re = r as RegExp;
      // valibot calls test() on the one RegExp: with g or y its lastIndex would carry over.
      if (re.global || re.sticky) unsupported("a global or sticky regex");
      return (s: string) => re.test(s);
    }
    case "url":
    case "finite":
    case "integer":
      return r as (value: never) => boolean;
    default:
      return unsupported(`the action ${action.type}`);
  }
}

function compile(schema: AnySchema): Parse {
  if (schema.pipe) {
    const [base, ...rest] = schema.pipe as [AnySchema, ...{ kind: string; type: string; requirement?: unknown }[]];
    const parseBase = compile(base);
    const checks: ((value: never) => boolean)[] = [];
    for (const item of rest) {
      if (item.kind === "metadata") continue;
      if (item.kind !== "validation") unsupported(`a pipe item of kind ${item.kind}`);
      checks.push(check(item));
    }
    return (input) => {
      const value = parseBase(input);
      if (value === FAIL) return FAIL;
      for (const ok of checks) if (!ok(value as never)) return FAIL;
      return value;
    };
  }
  switch (schema.type) {
    case "string":
      return (input) => (typeof input === "string" ? input : FAIL);
    case "number":
      return (input) => (typeof input === "number" && !Number.isNaN(input) ? input : FAIL);
    case "boolean":
      return (input) => (typeof input === "boolean" ? input : FAIL);
    case "picklist": {
      const options = schema.options as readonly unknown[];
      return (input) => (options.includes(input) ? input : FAIL);
    }
    case "optional": {
      if (schema.default !== undefined) unsupported("an optional with a default");
      const inner = compile(schema.wrapped as AnySchema);
      return (input) => (input === undefined ? undefined : inner(input));
    }
    case "object":
      return compileObject(schema.entries as Record<string, AnySchema>);
    default:
      return unsupported(`the schema ${schema.type}`);
  }
}

function compileObject(entries: Record<string, AnySchema>): Parse {
  const fields = Object.entries(entries).map(([key, schema]) => {
    if (schema.fallback !== undefined) unsupported("a fallback");
    const optional = schema.type === "optional" || schema.type === "exact_optional" || schema.type === "nullish";
    return { key, optional, parse: compile(schema) };
  });
  return (input) => {
    if (!input || typeof input !== "object") return FAIL;
    const source = input as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const { key, optional, parse } of fields) {
      // `in`, as valibot: a key present with the value undefined is kept as undefined.
      if (key in source) {
        const value = parse(source[key]);
        if (value === FAIL) return FAIL;
        out[key] = value;
      } else if (!optional) return FAIL;
    }
    return out;
  };
}

/**
 * The schema's parse as closures: the output `v.safeParse(schema, input, { abortEarly: true })`
 * gives, or undefined where it fails. Throws (once, here) for a schema kind it does not cover.
 */
export function compileSchema<S extends v.GenericSchema>(schema: S): (input: unknown) => v.InferOutput<S> | undefined {
  const parse = compile(schema as AnySchema);
  return (input) => {
    const out = parse(input);
    return out === FAIL ? undefined : (out as v.InferOutput<S>);
  };
}
