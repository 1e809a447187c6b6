import { describe, expect, it } from "vitest";
import { generatedModule } from "../../../scripts/gen-openapi.ts";
import { ERROR_STATUS } from "../../../src/errors.ts";
import { buildOpenApiDocument } from "../../../src/vehicles/openapi.ts";
import { openApiJson } from "../../../src/vehicles/openapi-document.ts";
import { vehicleQueryParameters } from "../../../src/vehicles/query.ts";
import { VEHICLE_FIELDS } from "../../../src/vehicles/schema.ts";

// biome-ignore lint/suspicious/noExplicitAny: walking a JSON document
type Json = any;

const doc = buildOpenApiDocument({ maxLimit: 750 }) as Json;

/** Every `$ref` in the document, with where it was found. */
function refs(node: Json, path = "#", out: [string, string][] = []): [string, string][] {
  if (Array.isArray(node)) {
    for (const [i, x] of node.entries()) refs(x, `${path}/${i}`, out);
  } else if (node && typeof node === "object") {
    for (const [k, val] of Object.entries(node)) {
      if (k === "$ref" && typeof val === "string") out.push([path, val]);
      else refs(val, `${path}/${k}`, out);
    }
  }
  return out;
}

function resolve(ref: string): Json {
  return ref
    .replace(/^#\//, "")
    .split("/")
    .reduce((n: Json, part) => n?.[part.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
}

describe("buildOpenApiDocument", () => {
  it("is OpenAPI 3.1 with the server, and plain JSON", () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    // Relative (issue 12, item 4): resolved against wherever the document was fetched from.
    expect(doc.servers).toMatchObject([{ url: "/" }]);
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
  });

  it("has every route", () => {
    expect(Object.keys(doc.paths).sort()).toEqual([
      "/docs",
      "/health",
      "/map",
      "/openapi.json",
      "/v1/vehicles",
      "/v1/vehicles/{vin}",
    ]);
    expect(Object.keys(doc.paths["/v1/vehicles"]).sort()).toEqual(["get", "head", "options"]);
    for (const item of Object.values(doc.paths) as Json[]) expect(item.options.responses["204"]).toBeDefined();
    expect(doc.paths["/v1/vehicles/{vin}"].get).toBeDefined();
    for (const p of ["/health", "/openapi.json", "/docs", "/map"])
      expect(doc.paths[p].get.responses["200"]).toBeDefined();
  });

  it("the Vehicle schema is the allow-list: no fuelCardPin", () => {
    const vehicle = doc.components.schemas.Vehicle;
    expect(Object.keys(vehicle.properties).sort()).toEqual([...VEHICLE_FIELDS].sort());
    expect(vehicle.properties).not.toHaveProperty("fuelCardPin");
    expect(JSON.stringify(doc)).not.toContain("fuelCardPin");
    expect([...vehicle.required].sort()).toEqual(["position", "vin"]);
    expect(vehicle.properties.transmissionType.enum).toEqual(["GA", "GM"]);
    expect(vehicle.properties.vin.pattern).toBe("^[A-HJ-NPR-Z0-9]{17}$");
    expect(vehicle.properties.position.properties.latitude).toMatchObject({
      type: "number",
      minimum: -90,
      maximum: 90,
    });
  });

  it("lists every query parameter of the parser, from the same table", () => {
    const params: Json[] = doc.paths["/v1/vehicles"].get.parameters.filter((p: Json) => p.in === "query");
    const table = vehicleQueryParameters(750);
    expect(params.map((p) => p.name).sort()).toEqual(Object.keys(table).sort());
    for (const p of params) {
      expect(p.description).toBeTruthy();
      expect(p.required).toBe(false);
      expect(p.schema.$schema).toBeUndefined();
    }
    const byName = Object.fromEntries(params.map((p) => [p.name, p]));
    expect(byName.limit.schema).toMatchObject({ type: "integer", minimum: 1, maximum: 750, default: 750 });
    // Issue 12, item 9: fixed-length plain arrays, no prefixItems (Prism, Swagger UI and
    // openapi-generator do not read it; Prism refused ?bbox=13.3,52.45,13.5,52.6 with 422).
    expect(byName.bbox).toMatchObject({
      style: "form",
      explode: false,
      schema: { type: "array", minItems: 4, maxItems: 4, items: { type: "number", minimum: -180, maximum: 180 } },
    });
    expect(byName.near.schema).toMatchObject({ type: "array", minItems: 2, maxItems: 2, items: { type: "number" } });
    expect(JSON.stringify(doc)).not.toContain("prefixItems");
    expect(byName.fuelType).toMatchObject({ style: "form", explode: false, schema: { type: "array" } });
    expect(byName.seats.schema.items).toMatchObject({ type: "integer", minimum: 1 });
    // Every spelling the parser accepts, in any case.
    const transmission = new RegExp(byName.transmission.schema.pattern);
    for (const ok of ["GA", "gm", "Automatic", "MANUAL"]) expect(transmission.test(ok), ok).toBe(true);
    for (const bad of ["G", "GAX", "auto", ""]) expect(transmission.test(bad), bad).toBe(false);
    expect(byName.radius.schema).toMatchObject({ minimum: 1, maximum: 50_000, default: 1000 });
    expect(byName.minFuelLevel.schema).toMatchObject({ minimum: 0, maximum: 100 });
    // HEAD documents the same parameters.
    expect(doc.paths["/v1/vehicles"].head.parameters).toEqual(doc.paths["/v1/vehicles"].get.parameters);
  });

  it("documents the vehicles responses, errors as problem+json", () => {
    const responses = doc.paths["/v1/vehicles"].get.responses;
    expect(Object.keys(responses).sort()).toEqual(
      ["200", "304", "400", "401", "405", "413", "414", "429", "500", "502", "503", "504"].sort(),
    );
    expect(responses["200"].content["application/json"].schema.$ref).toBe("#/components/schemas/VehicleList");
    for (const h of ["Cache-Status", "ETag", "Age", "Cache-Control"]) expect(responses["200"].headers[h]).toBeDefined();
    for (const status of ["400", "401", "405", "413", "414", "429", "500", "502", "503", "504"]) {
      const r = resolve(responses[status].$ref);
      expect(r.content["application/problem+json"].schema.$ref).toBe("#/components/schemas/Problem");
    }
    expect(resolve(responses["503"].$ref).headers["Retry-After"]).toBeDefined();
    expect(resolve(responses["429"].$ref).headers["Retry-After"]).toBeDefined();
    const vin = doc.paths["/v1/vehicles/{vin}"].get;
    expect(vin.responses["404"]).toBeDefined();
    expect(vin.responses["400"]).toBeDefined();
    // On the path item (issue 12, item 8): every operation of the path, OPTIONS too, has it.
    const vinParam = doc.paths["/v1/vehicles/{vin}"].parameters[0];
    expect(vinParam).toMatchObject({ name: "vin", in: "path", required: true });
    expect(new RegExp(vinParam.schema.pattern).test("wme4533911k123456")).toBe(true);
  });

  it("declares security on every operation (an empty list where no key applies)", () => {
    for (const [path, item] of Object.entries(doc.paths) as [string, Json][]) {
      for (const [method, op] of Object.entries(item)) {
        if (method === "parameters") continue;
        expect(Array.isArray((op as Json).security), `${method} ${path}`).toBe(true);
      }
    }
    expect(doc.paths["/v1/vehicles"].get.security).toEqual([{ apiKey: [] }, {}]);
    expect(doc.paths["/openapi.json"].get.security).toEqual([]);
  });

  it("the Problem schema is RFC 9457 plus code and parameter", () => {
    const problem = doc.components.schemas.Problem;
    expect(Object.keys(problem.properties).sort()).toEqual([
      "code",
      "detail",
      "instance",
      "parameter",
      "status",
      "title",
      "type",
    ]);
    expect([...problem.properties.code.enum].sort()).toEqual(Object.keys(ERROR_STATUS).sort());
  });

  it("the list schema refers to Vehicle and carries count, total, fetchedAt, stale", () => {
    const list = doc.components.schemas.VehicleList;
    expect([...list.required].sort()).toEqual(["count", "fetchedAt", "stale", "total", "vehicles"]);
    expect(JSON.stringify(list.properties.vehicles)).toContain("#/components/schemas/Vehicle");
    expect(list.$defs).toBeUndefined();
    expect(list.properties.fetchedAt.format).toBe("date-time");
  });

  it("every $ref resolves", () => {
    const all = refs(doc);
    expect(all.length).toBeGreaterThan(20);
    for (const [where, ref] of all) expect(resolve(ref), `${ref} at ${where}`).toBeDefined();
  });

  it("defines the response headers", () => {
    expect(Object.keys(doc.components.headers).sort()).toEqual([
      "Age",
      "Cache-Control",
      "Cache-Status",
      "ETag",
      "Link",
      "Retry-After",
    ]);
  });
});

describe("the document the Worker serves (src/vehicles/openapi.generated.ts)", () => {
  it("is what the builder makes now, for any VEHICLES_MAX_LIMIT: run `npm run gen:openapi` after a change", async () => {
    const { readFile } = await import("node:fs/promises");
    const { fileURLToPath } = await import("node:url");
    const file = fileURLToPath(new URL("../../../src/vehicles/openapi.generated.ts", import.meta.url).href);
    const fresh = (await readFile(file, "utf8")) === generatedModule();
    expect(fresh, "src/vehicles/openapi.generated.ts is stale: run npm run gen:openapi").toBe(true);
    for (const maxLimit of [1, 750, 5000, 50000]) {
      expect(openApiJson(maxLimit) === JSON.stringify(buildOpenApiDocument({ maxLimit })), `maxLimit ${maxLimit}`).toBe(
        true,
      );
    }
  });
});
