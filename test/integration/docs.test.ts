/**
 * GET /openapi.json and /docs in workerd: the document covers every route the app serves and
 * every query parameter the parser accepts, never mentions the fuel card PIN, names a relative
 * server (never the request's Host); the page shows the operations under a strict CSP.
 */
import { exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../../src/app.ts";
import { escapeHtml, renderDocsPage } from "../../src/docs/page.ts";
import { vehicleQueryParameters } from "../../src/vehicles/query.ts";
import { coldStart, get, sandbox, workerConfig } from "../support/harness.ts";

interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  schema?: unknown;
}
interface Operation {
  operationId: string;
  parameters?: Parameter[];
  responses: Record<string, unknown>;
}
interface Document {
  openapi: string;
  servers?: { url: string }[];
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
}

function maxLimit(): number {
  return workerConfig().vehiclesMaxLimit;
}

/** The text a reader sees: tags dropped, entities of escapeHtml decoded, blanks collapsed. */
function visibleText(html: string): string {
  return html
    .replace(/<style>[\s\S]*?<\/style>/g, "")
    .replace(/<[^>]+>/g, "")
    .replace(/&#(\d+);/g, (_m, n: string) => String.fromCharCode(Number(n)))
    .replace(/\s+/g, " ");
}

describe("GET /openapi.json", () => {
  let res: Response;
  let text: string;
  let doc: Document;
  beforeAll(async () => {
    await coldStart();
    res = await get("/openapi.json");
    text = await res.text();
    doc = JSON.parse(text) as Document;
  });

  it("is an OpenAPI 3.1 document, cacheable, with a relative server URL", () => {
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("cache-control")).toBe("public, max-age=300");
    expect(res.headers.get("etag")).toMatch(/^W\/".+"$/);
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.servers?.map((s) => s.url)).toEqual(["/"]);
  });

  it("documents every route the app serves, itself and /docs included", () => {
    // Hono's route table: handlers only (middleware is registered as ALL).
    const served = new Set(
      createApp()
        .routes.filter((r) => r.method !== "ALL")
        .map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, "{$1}").replace(/(.)\/$/, "$1")}`),
    );
    const documented = new Set(
      Object.entries(doc.paths).flatMap(([path, item]) => Object.keys(item).map((method) => `${method} ${path}`)),
    );
    expect(served.size).toBeGreaterThanOrEqual(5);
    for (const route of served) expect(documented, route).toContain(route);
    for (const path of ["/v1/vehicles", "/v1/vehicles/{vin}", "/health", "/openapi.json", "/docs"]) {
      expect(doc.paths[path]?.get, path).toBeDefined();
    }
    expect(doc.paths["/openapi.json"]?.get?.responses["200"]).toBeDefined();
    expect(doc.paths["/docs"]?.get?.responses["200"]).toBeDefined();
  });

  it("documents every query parameter the parser accepts, and the VIN path parameter", () => {
    const list = doc.paths["/v1/vehicles"]?.get?.parameters ?? [];
    const query = list.filter((p) => p.in === "query").map((p) => p.name);
    const accepted = Object.values(vehicleQueryParameters(maxLimit())).map((p) => p.name);
    expect(query.sort()).toEqual([...accepted].sort());
    for (const p of list) expect(p.schema, p.name).toBeDefined();
    // On the path item (OpenAPI 3.1 §4.8.9.1), so every operation of the path has it, OPTIONS too.
    const item = doc.paths["/v1/vehicles/{vin}"] as unknown as { parameters?: Parameter[] };
    const vin = item.parameters?.find((p) => p.in === "path");
    expect(vin).toMatchObject({ name: "vin", required: true });
  });

  it("never mentions the fuel card PIN; the vehicle schema is the allow-list", () => {
    expect(text.toLowerCase()).not.toContain("fuelcardpin");
    const props = Object.keys(doc.components.schemas.Vehicle?.properties ?? {});
    expect(props).toContain("vin");
    expect(props).toContain("position");
  });

  it("costs the partner nothing, answers If-None-Match with 304, and never names the request's Host", async () => {
    const c = await sandbox.counters();
    expect(c.token.total + c.vehicles.total).toBe(0);

    const again = await get("/openapi.json", { headers: { "if-none-match": res.headers.get("etag") ?? "" } });
    expect(again.status).toBe(304);
    expect(again.headers.get("cache-control")).toBe("public, max-age=300");
    // RFC 9110 §15.4.5: no representation metadata on a 304.
    expect(again.headers.get("content-type")).toBeNull();

    // Issue 12, item 4: a cached copy is shared across hosts, so the Host must not shape it.
    const other = await exports.default.fetch(new Request("http://attacker.example/openapi.json"));
    const otherText = await other.text();
    expect(otherText).toBe(text);
    expect(otherText).not.toContain("attacker.example");
    expect(other.headers.get("etag")).toBe(res.headers.get("etag"));

    const head = await get("/openapi.json", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
  });
});

describe("GET /docs", () => {
  let res: Response;
  let html: string;
  beforeAll(async () => {
    await coldStart();
    res = await get("/docs");
    html = await res.text();
  });

  it("is an HTML page with every operation, the vehicles query parameters and the schemas", () => {
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("cache-control")).toBe("public, max-age=300");
    expect(html).toMatch(/^<!DOCTYPE html>/);
    const text = visibleText(html);
    for (const op of [
      "GET /v1/vehicles",
      "HEAD /v1/vehicles",
      "GET /v1/vehicles/{vin}",
      "GET /health",
      "GET /openapi.json",
      "GET /docs",
    ]) {
      expect(text, op).toContain(op);
    }
    expect(html).toContain('id="op-listVehicles"');
    for (const p of Object.values(vehicleQueryParameters(maxLimit())))
      expect(html, p.name).toContain(`<code>${p.name}</code>`);
    for (const schema of ["Vehicle", "VehicleList", "Problem"]) expect(html).toContain(`id="schema-${schema}"`);
    expect(text).toContain("server /"); // relative: never the Host of the request
    expect(html.toLowerCase()).not.toContain("fuelcardpin");
  });

  it("needs nothing from elsewhere: no script, no external URL, a CSP that allows only its own stylesheet", async () => {
    expect(html).not.toMatch(/<script|<style|<img|<iframe|\son\w+=/i);
    expect(html).not.toMatch(/(?:src|href)="(?:https?:)?\/\//);
    // One stylesheet, a static file of this origin (public/docs/docs.css).
    expect([...html.matchAll(/<link [^>]*>/g)].map((m) => m[0])).toEqual([
      '<link rel="stylesheet" href="/docs/docs.css">',
    ]);
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("style-src 'self';");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).not.toContain("script-src");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
  });

  it("answers HEAD and If-None-Match", async () => {
    const head = await get("/docs", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-security-policy")).toBe(res.headers.get("content-security-policy"));
    const again = await get("/docs", { headers: { "if-none-match": res.headers.get("etag") ?? "" } });
    expect(again.status).toBe(304);
  });

  it("escapes whatever the document says", () => {
    const evil = '<script>alert("x")</script>';
    const page = renderDocsPage({
      openapi: "3.1.0",
      info: { title: evil, version: evil, description: `\`${evil}\`` },
      servers: [{ url: `javascript:${evil}` }],
      paths: {
        [`/x/${evil}`]: {
          get: {
            operationId: `"><img src=x onerror=alert(1)>`,
            summary: evil,
            parameters: [{ name: evil, in: "query", description: evil, schema: { type: evil, enum: [evil] } }],
            responses: {
              [evil]: { description: evil, content: { [evil]: { schema: { $ref: `#/components/schemas/${evil}` } } } },
            },
          },
        },
      },
      components: {
        schemas: { [evil]: { type: "object", description: evil, properties: { [evil]: { description: evil } } } },
      },
    });
    expect(page).not.toContain("<script");
    expect(page).not.toContain("<img");
    expect(page).toContain(escapeHtml(evil));
  });
});
