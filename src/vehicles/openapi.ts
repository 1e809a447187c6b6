/**
 * The OpenAPI 3.1 document, generated from the same valibot definitions the gateway validates
 * with: the vehicle allow-list (so the document cannot promise a field we strip), the query
 * parameter table, and the problem document of errors.ts.
 */
import { type ConversionConfig, type JsonSchema, toJsonSchema } from "@valibot/to-json-schema";
import * as v from "valibot";
import { ERROR_STATUS, type ErrorCode, PROBLEM_CONTENT_TYPE } from "../errors.ts";
import { type QueryParameter, TRANSMISSION_ALIASES, VIN_PARAMETER, vehicleQueryParameters } from "./query.ts";
import { VehicleListSchema, VehicleResponseSchema, VehicleSchema } from "./schema.ts";

/** RFC 9457 problem details, with our stable `code` and, for a bad parameter, its name. */
const ProblemSchema = v.pipe(
  v.object({
    type: v.pipe(v.string(), v.description("`urn:sharenow-gateway:problem:<code>`.")),
    title: v.pipe(v.string(), v.description("Short summary of the problem type.")),
    status: v.pipe(v.number(), v.integer(), v.description("The HTTP status code.")),
    detail: v.optional(v.pipe(v.string(), v.description("What went wrong this time."))),
    instance: v.optional(v.pipe(v.string(), v.description("The request path."))),
    code: v.pipe(
      v.picklist(Object.keys(ERROR_STATUS) as ErrorCode[]),
      v.description("Stable error code: switch on this."),
    ),
    parameter: v.optional(v.pipe(v.string(), v.description("The offending query parameter (`invalid_parameter`)."))),
  }),
  v.title("Problem"),
  v.description("RFC 9457 problem details."),
);

// JSON numbers are always finite and `check` is a cross-field rule stated in the description:
// neither has a JSON Schema form, and throwing on anything else keeps surprises visible.
const BASE: ConversionConfig = { target: "draft-2020-12", ignoreActions: ["finite", "check"] };
const REF = (name: string) => `#/components/schemas/${name}`;

/** toJsonSchema without the per-document keys a component or parameter schema must not carry. */
function jsonSchema(schema: Parameters<typeof toJsonSchema>[0], config: ConversionConfig = {}): JsonSchema {
  const { $schema: _s, $defs: _d, ...rest } = toJsonSchema(schema, { ...BASE, ...config });
  return rest;
}

const json = (schemaRef: string) => ({ "application/json": { schema: { $ref: REF(schemaRef) } } });
const header = (name: string) => ({ $ref: `#/components/headers/${name}` });

/** The headers of a successful vehicles answer. */
const CACHE_HEADERS = {
  "Cache-Status": header("Cache-Status"),
  ETag: header("ETag"),
  Age: header("Age"),
  "Cache-Control": header("Cache-Control"),
};

const PROBLEM_RESPONSES: Record<string, { description: string; retryAfter?: true }> = {
  "400": { description: "A malformed request: `invalid_parameter` (names the parameter) or `invalid_vin`." },
  "401": { description: "A missing or wrong `x-api-key` (when the deployment requires one)." },
  "404": { description: "`vehicle_not_found` or `not_found`." },
  "405": { description: "Method not allowed; `Allow` lists the methods." },
  "413": { description: "The request carried a body." },
  "414": { description: "The URL or query string is too long." },
  "429": { description: "Too many requests from this caller.", retryAfter: true },
  "500": { description: "Our fault (or a configuration problem)." },
  "502": { description: "The partner or its token endpoint answered wrongly, and there is nothing cached to serve." },
  "503": {
    description: "The partner or the gateway is unavailable or paused, and there is nothing cached to serve.",
    retryAfter: true,
  },
  "504": { description: "The partner timed out, and there is nothing cached to serve." },
};

function problemResponse(status: string): object {
  const r = PROBLEM_RESPONSES[status];
  if (!r) throw new Error(`no problem response for ${status}`);
  return {
    description: r.description,
    ...(r.retryAfter ? { headers: { "Retry-After": header("Retry-After") } } : {}),
    content: { [PROBLEM_CONTENT_TYPE]: { schema: { $ref: REF("Problem") } } },
  };
}

function errors(...statuses: string[]): Record<string, object> {
  return Object.fromEntries(statuses.map((s) => [s, { $ref: `#/components/responses/Problem${s}` }]));
}

/**
 * A fixed-length tuple (`prefixItems` + `items: false`, JSON Schema 2020-12) as a plain array of
 * that length whose items admit every position's values. Validating proxies and generators
 * (Prism, Swagger UI, openapi-generator) do not read `prefixItems`: Prism answered 422 to
 * `?bbox=13.3,52.45,13.5,52.6`. Per-position bounds stay in the description; a value the plain
 * array admits but the gateway refuses (a latitude of 100) gets the documented 400.
 */
function tupleAsArray(schema: JsonSchema): JsonSchema {
  const positions = schema.prefixItems;
  if (!Array.isArray(positions) || schema.items !== false) return schema;
  const { prefixItems: _p, items: _i, ...rest } = schema;
  const items = positions as JsonSchema[];
  const numeric = items.every((s) => s.type === "number");
  const bound = (k: "minimum" | "maximum", pick: (...xs: number[]) => number) => {
    const xs = items.map((s) => s[k]);
    return xs.every((x) => typeof x === "number") ? { [k]: pick(...(xs as number[])) } : {};
  };
  return {
    ...rest,
    items: numeric ? { type: "number", ...bound("minimum", Math.min), ...bound("maximum", Math.max) } : {},
    minItems: items.length,
    maxItems: items.length,
  };
}

/** A pattern that matches exactly these words, in any case (ECMA-262 patterns have no `(?i)`). */
function anyCase(words: readonly string[]): string {
  const letters = (w: string) =>
    [...w].map((ch) => (ch.toLowerCase() === ch.toUpperCase() ? ch : `[${ch.toUpperCase()}${ch.toLowerCase()}]`));
  return `^(?:${words.map((w) => letters(w).join("")).join("|")})$`;
}

/**
 * Parameters whose accepted wire form the parsed value does not show. `transmission` parses to
 * `GA`/`GM` but accepts `automatic` and `manual` too, in any case: an `enum` of the parsed values
 * would make a validating proxy refuse requests the gateway answers.
 */
const WIRE_SCHEMAS: Record<string, JsonSchema> = {
  transmission: { type: "string", pattern: anyCase(Object.keys(TRANSMISSION_ALIASES)), examples: ["GA", "manual"] },
};

function parameter(p: QueryParameter<unknown>, where: "query" | "path", mode: "input" | "output"): object {
  const schema = {
    ...(WIRE_SCHEMAS[p.name] ?? tupleAsArray(jsonSchema(p.schema, { typeMode: p.opaque ? "input" : mode }))),
  };
  if (p.default !== undefined) schema.default = p.default as JsonSchema["default"];
  const list = p.list ? { style: "form", explode: false } : {};
  return { name: p.name, in: where, required: where === "path", description: p.description, ...list, schema };
}

/** Who may call: an API key when the deployment requires one, else anyone (`{}`: no credentials). */
const KEY_OR_OPEN = [{ apiKey: [] }, {}];
/** No credentials at all (a CORS preflight carries none, Fetch standard; the documents are public). */
const PUBLIC: never[] = [];

/** Build-time memo: the document depends only on its options. */
const memo = new Map<string, object>();

/**
 * The OpenAPI 3.1 document of every route. Query parameters are documented by their parsed
 * value (lists as `style: form, explode: false` arrays, i.e. `a,b,c`), the VIN path parameter by
 * its wire form.
 *
 * `servers` is relative (OpenAPI 3.1 §4.8.5: resolved against the document's own URL), never
 * taken from the request's Host: the document is publicly cacheable, and behind a cache that
 * ignores Host it would send tools, and the `x-api-key` they add, to another host.
 */
export function buildOpenApiDocument(opts: { maxLimit: number }): object {
  const memoKey = String(opts.maxLimit);
  const hit = memo.get(memoKey);
  if (hit) return hit;

  const params = Object.values(vehicleQueryParameters(opts.maxLimit)).map((p) =>
    parameter(p as QueryParameter<unknown>, "query", "output"),
  );
  const ifNoneMatch = {
    name: "If-None-Match",
    in: "header",
    required: false,
    description: "An ETag from an earlier answer: 304 when the answer would be the same (RFC 9110 §13.1.2).",
    schema: { type: "string" },
  };
  const security = KEY_OR_OPEN;

  const listHeaders = { ...CACHE_HEADERS, Link: header("Link") };
  const listOk = {
    description: "Vehicles matching the filters.",
    headers: listHeaders,
    content: json("VehicleList"),
  };
  const notModified = { description: "Not modified (If-None-Match matched).", headers: CACHE_HEADERS };
  const listErrors = errors("400", "401", "405", "413", "414", "429", "500", "502", "503", "504");
  const listOperation = (method: "get" | "head") => ({
    operationId: method === "get" ? "listVehicles" : "headVehicles",
    summary: method === "get" ? "List vehicles, filtered at the edge" : "Headers of GET /v1/vehicles",
    description:
      'Served from the gateway\'s cached, redacted snapshot; filters never reach the partner. Without `near` the order is by VIN, in pages of `limit`: follow `next` (or `Link: rel="next"`) until it is absent. Across a snapshot change a walk still returns no vehicle twice and skips none that is in both snapshots (the cursor is a position in VIN order). With `near`: the nearest `limit`, no further pages.',
    tags: ["vehicles"],
    security,
    parameters: [...params, ifNoneMatch],
    responses: {
      "200": method === "get" ? listOk : { description: listOk.description, headers: listHeaders },
      "304": notModified,
      ...listErrors,
    },
  });
  // On the path item: it applies to every operation of the path, OPTIONS included.
  const vinParam = parameter(VIN_PARAMETER as QueryParameter<unknown>, "path", "input");
  const vinOperation = (method: "get" | "head") => ({
    operationId: method === "get" ? "getVehicle" : "headVehicle",
    summary: method === "get" ? "One vehicle by VIN" : "Headers of GET /v1/vehicles/{vin}",
    tags: ["vehicles"],
    security,
    parameters: [ifNoneMatch],
    responses: {
      "200":
        method === "get"
          ? { description: "The vehicle.", headers: CACHE_HEADERS, content: json("VehicleResponse") }
          : { description: "The vehicle exists.", headers: CACHE_HEADERS },
      "304": notModified,
      ...errors("400", "401", "404", "405", "413", "414", "429", "500", "502", "503", "504"),
    },
  });

  const doc = {
    openapi: "3.1.0",
    info: {
      title: "SHARE NOW vehicles edge gateway",
      version: "1.0.0",
      description:
        "Cached, filtered, redacted SHARE NOW vehicles. Errors are RFC 9457 problem+json with a stable `code`. " +
        "Responses carry `Cache-Status` (RFC 9211), `Age`, `ETag` and `Cache-Control`.",
    },
    servers: [{ url: "/", description: "This gateway: the origin this document was fetched from." }],
    tags: [
      { name: "vehicles", description: "SHARE NOW vehicles, from the gateway's cached, redacted snapshot." },
      { name: "meta", description: "Liveness, this document and its HTML rendering." },
    ],
    paths: {
      "/v1/vehicles": { get: listOperation("get"), head: listOperation("head") },
      "/v1/vehicles/{vin}": { parameters: [vinParam], get: vinOperation("get"), head: vinOperation("head") },
      "/health": {
        get: {
          operationId: "health",
          summary: "Liveness; with a valid key (or when keys are off), configuration, token and snapshot state",
          description:
            "Without a valid `x-api-key` (when the deployment requires keys) only `status`, from the answering isolate alone. " +
            "The detailed state is a copy at most a few seconds old; it never holds a token or secret.",
          tags: ["meta"],
          security,
          responses: {
            "200": { description: "Healthy.", content: { "application/json": { schema: { $ref: REF("Health") } } } },
            "503": {
              description: "Misconfigured or degraded.",
              content: { "application/json": { schema: { $ref: REF("Health") } } },
            },
            ...errors("413", "414", "429"),
          },
        },
      },
      "/openapi.json": {
        get: {
          operationId: "openapi",
          summary: "This document",
          tags: ["meta"],
          security: PUBLIC,
          responses: {
            "200": {
              description: "OpenAPI 3.1 document.",
              content: { "application/json": { schema: { type: "object" } } },
            },
            "304": { description: "Not modified (If-None-Match matched)." },
            ...errors("413", "414"),
          },
        },
      },
      "/docs": {
        get: {
          operationId: "docs",
          summary: "Human-readable API reference",
          tags: ["meta"],
          security: PUBLIC,
          responses: {
            "200": { description: "HTML page.", content: { "text/html": { schema: { type: "string" } } } },
            "304": { description: "Not modified (If-None-Match matched)." },
            ...errors("413", "414"),
          },
        },
      },
      "/map": {
        get: {
          operationId: "map",
          summary: "Map of the vehicles, with the filters of /v1/vehicles as controls",
          tags: ["meta"],
          // The page itself is public; it asks for a key in the tab when the API needs one.
          security: PUBLIC,
          responses: {
            "200": { description: "HTML page.", content: { "text/html": { schema: { type: "string" } } } },
            // The app's checks before any route: a body on GET, an over-long query (as for /docs).
            ...errors("413", "414"),
          },
        },
      },
    },
    components: {
      schemas: {
        Vehicle: jsonSchema(VehicleSchema),
        VehicleList: jsonSchema(VehicleListSchema, {
          definitions: { Vehicle: VehicleSchema },
          overrideRef: (c) => REF(c.referenceId),
        }),
        VehicleResponse: jsonSchema(VehicleResponseSchema, {
          definitions: { Vehicle: VehicleSchema },
          overrideRef: (c) => REF(c.referenceId),
        }),
        Problem: jsonSchema(ProblemSchema),
        Health: {
          type: "object",
          description: "Operational state. Its members may grow; none is ever a token or secret.",
          properties: { status: { type: "string", enum: ["ok", "degraded", "misconfigured"] } },
          required: ["status"],
        },
      },
      responses: Object.fromEntries(Object.keys(PROBLEM_RESPONSES).map((s) => [`Problem${s}`, problemResponse(s)])),
      headers: {
        Link: {
          description:
            'RFC 8288: `<…>; rel="next"`, the next page (the same URL reference as `next` in the body); absent on the last page.',
          schema: { type: "string" },
        },
        "Cache-Status": {
          description:
            "RFC 9211: which tiers (isolate memory, data-centre cache, gateway object) answered, hit or forward, and the TTL left.",
          schema: { type: "string" },
        },
        ETag: {
          description: "Validator of this answer (RFC 9110 §8.8.3); send it back in If-None-Match.",
          schema: { type: "string" },
        },
        Age: {
          description: "Seconds since the partner produced this data (RFC 9111 §5.1).",
          schema: { type: "integer", minimum: 0 },
        },
        "Cache-Control": {
          description: "Freshness for downstream caches (RFC 9111 §5.2).",
          schema: { type: "string" },
        },
        "Retry-After": {
          description: "Seconds to wait before retrying (RFC 9110 §10.2.3).",
          schema: { type: "integer", minimum: 0 },
        },
      },
      securitySchemes: {
        apiKey: {
          type: "apiKey",
          in: "header",
          name: "x-api-key",
          description: "Required only when the deployment configures API keys.",
        },
      },
    },
  };
  // Every route answers OPTIONS: a CORS preflight for configured origins, else its Allow list.
  for (const [path, item] of Object.entries(doc.paths) as [string, Record<string, unknown>][]) {
    item.options = {
      operationId: `options${path.replace(/[^A-Za-z]+(.)?/g, (_m, ch: string | undefined) => (ch ?? "").toUpperCase())}`,
      summary: "Allowed methods; CORS preflight for configured origins",
      tags: ["meta"],
      security: PUBLIC,
      responses: {
        "204": {
          description: "No content. `Allow` lists the methods; CORS headers only for a configured origin.",
          headers: { Allow: { schema: { type: "string" }, example: "GET, HEAD, OPTIONS" } },
        },
        ...errors("414"),
      },
    };
  }
  memo.set(memoKey, doc);
  return doc;
}
