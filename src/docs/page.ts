/**
 * The `/docs` page: a small, self-contained HTML rendering of the OpenAPI document (every
 * operation with its parameters and responses, then the schemas). No script, no CDN, no web
 * font: it works offline and under a strict content-security-policy whose only allowance is
 * its own stylesheet, from this origin. Every string from the document is escaped.
 */

/** A JSON object, as far as the renderer cares. */
type Json = Record<string, unknown>;

/**
 * The page's only stylesheet: a static file (public/docs/docs.css), served like the map's by
 * Workers Static Assets on Cloudflare and src/map/static-files.ts elsewhere. Kept out of the
 * Worker's bundle (about 0.9 KB of its gzip budget).
 */
const DOCS_STYLESHEET = "/docs/docs.css";

const METHODS = ["get", "head", "post", "put", "patch", "delete", "options"] as const;
const MAX_DEPTH = 4;

/** HTML-escapes text for element content and double- or single-quoted attributes. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Escapes, then turns the document's `code spans` into <code> (the only markup we honour). */
function prose(s: unknown): string {
  if (typeof s !== "string") return "";
  return escapeHtml(s).replace(/`([^`]+)`/g, "<code>$1</code>");
}

/** An id made only of safe characters. */
const anchor = (prefix: string, name: string) => `${prefix}-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;

const isObject = (x: unknown): x is Json => typeof x === "object" && x !== null && !Array.isArray(x);
const asObject = (x: unknown): Json => (isObject(x) ? x : {});
const asArray = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);

/** Follows a local `$ref` (`#/a/b`, JSON Pointer escapes per RFC 6901 §4); unknown refs give {}. */
function deref(doc: Json, x: unknown): Json {
  let cur = asObject(x);
  for (let hops = 0; typeof cur.$ref === "string" && hops < 8; hops++) {
    const ref = cur.$ref;
    if (!ref.startsWith("#/")) return {};
    let target: unknown = doc;
    for (const part of ref.slice(2).split("/")) {
      target = asObject(target)[part.replaceAll("~1", "/").replaceAll("~0", "~")];
    }
    cur = asObject(target);
  }
  return cur;
}

const SCHEMA_REF = "#/components/schemas/";

/** A one-line type: `string`, `array of Vehicle`, `[number, number]`, `"GA" | "GM"`. */
function typeOf(schema: unknown, depth = 0): string {
  if (schema === false) return "nothing";
  if (!isObject(schema) || depth > MAX_DEPTH) return "any";
  if (typeof schema.$ref === "string") {
    if (schema.$ref.startsWith(SCHEMA_REF)) {
      const name = schema.$ref.slice(SCHEMA_REF.length);
      return `<a href="#${anchor("schema", name)}">${escapeHtml(name)}</a>`;
    }
    return escapeHtml(schema.$ref);
  }
  for (const [key, joiner] of [
    ["allOf", " &amp; "],
    ["anyOf", " | "],
    ["oneOf", " | "],
  ] as const) {
    const parts = asArray(schema[key]);
    if (parts.length) return parts.map((p) => typeOf(p, depth + 1)).join(joiner);
  }
  if (Array.isArray(schema.enum))
    return schema.enum.map((e) => `<code>${escapeHtml(JSON.stringify(e))}</code>`).join(" | ");
  if ("const" in schema) return `<code>${escapeHtml(JSON.stringify(schema.const))}</code>`;
  const type = Array.isArray(schema.type)
    ? schema.type.join(" | ")
    : typeof schema.type === "string"
      ? schema.type
      : "";
  if (type === "array") {
    const tuple = asArray(schema.prefixItems);
    if (tuple.length) return `[${tuple.map((p) => typeOf(p, depth + 1)).join(", ")}]`;
    return `array of ${typeOf(schema.items, depth + 1)}`;
  }
  if (type === "object" || (!type && isObject(schema.properties))) return "object";
  return escapeHtml(type || "any");
}

/** Constraints and hints worth a glance: range, length, pattern, format, default, example. */
function chips(schema: unknown, opts: { commaList?: boolean } = {}): string {
  const s = asObject(schema);
  const out: string[] = [];
  const num = (k: string) => (typeof s[k] === "number" ? String(s[k]) : undefined);
  const range = (lo: string | undefined, hi: string | undefined, what: string) => {
    if (lo !== undefined && hi !== undefined) out.push(`${what} ${lo} to ${hi}`);
    else if (lo !== undefined) out.push(`${what} ≥ ${lo}`);
    else if (hi !== undefined) out.push(`${what} ≤ ${hi}`);
  };
  range(num("minimum"), num("maximum"), "range");
  range(num("minLength"), num("maxLength"), "length");
  // A tuple's length is its type already.
  if (!Array.isArray(s.prefixItems)) range(num("minItems"), num("maxItems"), "items");
  for (const k of ["format", "pattern"])
    if (typeof s[k] === "string") out.push(`${k} <code>${escapeHtml(s[k])}</code>`);
  if ("default" in s) out.push(`default <code>${escapeHtml(JSON.stringify(s.default))}</code>`);
  const example = asArray(s.examples)[0];
  if (example !== undefined) {
    // A comma-list parameter's example as it is written in a URL: `13.3,52.45`, not `[13.3,52.45]`.
    const wire = opts.commaList && Array.isArray(example) ? example.join(",") : JSON.stringify(example);
    out.push(`example <code>${escapeHtml(wire)}</code>`);
  }
  return out.length ? `<span class="chips">${out.join(" · ")}</span>` : "";
}

/** The inline object parts of a schema (itself, or the inline members of an allOf). */
function inlineObjects(schema: Json): Json[] {
  if (isObject(schema.properties)) return [schema];
  return asArray(schema.allOf)
    .filter(isObject)
    .filter((p) => isObject(p.properties));
}

/** Property rows, nested inline objects flattened as `a.b` and `a[].b`. */
function propertyRows(schema: Json, prefix: string, depth: number): string[] {
  if (depth > MAX_DEPTH) return [];
  const rows: string[] = [];
  for (const part of inlineObjects(schema)) {
    const required = new Set(asArray(part.required).filter((x): x is string => typeof x === "string"));
    for (const [name, raw] of Object.entries(asObject(part.properties))) {
      const p = asObject(raw);
      const path = `${prefix}${name}`;
      rows.push(
        `<tr><td><code>${escapeHtml(path)}</code>${required.has(name) ? '<span class="req">required</span>' : ""}</td>` +
          `<td>${typeOf(p)}</td><td>${prose(p.description)}${chips(p)}</td></tr>`,
      );
      rows.push(...propertyRows(p, `${path}.`, depth + 1));
      if (p.type === "array" && isObject(p.items)) rows.push(...propertyRows(p.items, `${path}[].`, depth + 1));
    }
  }
  return rows;
}

function table(head: string[], rows: string[]): string {
  if (!rows.length) return "";
  return `<table><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function parametersTable(doc: Json, params: unknown[]): string {
  const rows = params.map((raw) => {
    const p = deref(doc, raw);
    const name = typeof p.name === "string" ? p.name : "?";
    const commaList = p.style === "form" && p.explode === false;
    const list = commaList ? '<span class="chips">comma-separated: <code>a,b,c</code></span>' : "";
    return (
      `<tr><td><code>${escapeHtml(name)}</code>${p.required === true ? '<span class="req">required</span>' : ""}</td>` +
      `<td>${escapeHtml(String(p.in ?? ""))}</td><td>${typeOf(p.schema)}</td><td>${prose(p.description)}${list}${chips(p.schema, { commaList })}</td></tr>`
    );
  });
  return rows.length ? `<h4>Parameters</h4>${table(["Name", "In", "Type", "Description"], rows)}` : "";
}

function responsesTable(doc: Json, responses: Json): string {
  const rows = Object.entries(responses).map(([status, raw]) => {
    const r = deref(doc, raw);
    const content = Object.entries(asObject(r.content))
      .map(([type, media]) => `<code>${escapeHtml(type)}</code> ${typeOf(asObject(media).schema)}`)
      .join("<br>");
    const headers = Object.keys(asObject(r.headers))
      .map((h) => `<code>${escapeHtml(h)}</code>`)
      .join(", ");
    return (
      `<tr><td><code>${escapeHtml(status)}</code></td><td>${prose(r.description)}` +
      `${headers ? `<span class="chips">headers: ${headers}</span>` : ""}</td><td>${content}</td></tr>`
    );
  });
  return `<h4>Responses</h4>${table(["Status", "Description", "Body"], rows)}`;
}

interface Operation {
  method: string;
  path: string;
  op: Json;
  id: string;
}

function operationsOf(doc: Json): Operation[] {
  const ops: Operation[] = [];
  for (const [path, rawItem] of Object.entries(asObject(doc.paths))) {
    const item = asObject(rawItem);
    for (const method of METHODS) {
      const op = item[method];
      if (!isObject(op)) continue;
      const id = typeof op.operationId === "string" ? op.operationId : `${method}${path}`;
      ops.push({ method, path, op, id });
    }
  }
  return ops;
}

function renderOperation(doc: Json, { method, path, op, id }: Operation, parameters: unknown[]): string {
  // `security` lists alternatives; an empty one ({}) means the call also works without credentials.
  const security = asArray(op.security);
  const schemes = security.flatMap((s) => Object.keys(asObject(s))).map((k) => `<code>${escapeHtml(k)}</code>`);
  const optional = security.some((s) => isObject(s) && Object.keys(s).length === 0);
  const auth = schemes.length
    ? `<p class="muted">Authentication: ${schemes.join(", ")}${optional ? " when the deployment requires it" : ""}.</p>`
    : "";
  return (
    `<section class="op" id="${anchor("op", id)}">` +
    `<h3><span class="m m-${method}">${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code> ` +
    `<span class="muted">${prose(op.summary)}</span></h3>` +
    (op.description ? `<p>${prose(op.description)}</p>` : "") +
    auth +
    parametersTable(doc, parameters) +
    responsesTable(doc, asObject(op.responses)) +
    `</section>`
  );
}

function renderSchema(name: string, schema: Json): string {
  const rows = propertyRows(schema, "", 0);
  return (
    `<section class="schema" id="${anchor("schema", name)}"><h3><code>${escapeHtml(name)}</code> <span class="muted">${typeOf(schema)}</span></h3>` +
    (schema.description ? `<p>${prose(schema.description)}</p>` : "") +
    table(["Property", "Type", "Description"], rows) +
    `<details><summary>JSON Schema</summary><pre>${escapeHtml(JSON.stringify(schema, null, 2))}</pre></details></section>`
  );
}

/**
 * Renders the page. `doc` is an OpenAPI 3.1 document; anything missing or oddly shaped is
 * rendered as well as it can be, never trusted as markup.
 */
export function renderDocsPage(document: object, opts: { openApiPath?: string } = {}): string {
  const doc = document as Json;
  const info = asObject(doc.info);
  const title = typeof info.title === "string" ? info.title : "API";
  const ops = operationsOf(doc);
  const schemas = Object.entries(asObject(asObject(doc.components).schemas)).filter((e): e is [string, Json] =>
    isObject(e[1]),
  );
  const servers = asArray(doc.servers)
    .map((s) => asObject(s).url)
    .filter((u): u is string => typeof u === "string");
  const specPath = opts.openApiPath ?? "/openapi.json";

  const tags = [...new Set(ops.flatMap((o) => asArray(o.op.tags).filter((t): t is string => typeof t === "string")))];
  const untagged = ops.filter((o) => asArray(o.op.tags).length === 0);
  const groups: [string, Operation[]][] = tags.map((t) => [t, ops.filter((o) => asArray(o.op.tags).includes(t))]);
  if (untagged.length) groups.push(["other", untagged]);

  const toc = groups
    .map(
      ([tag, list]) =>
        `<li><strong>${escapeHtml(tag)}</strong><ul>${list
          .map(
            (o) =>
              `<li><a href="#${anchor("op", o.id)}">${o.method.toUpperCase()} ${escapeHtml(o.path)}</a> <span class="muted">${prose(o.op.summary)}</span></li>`,
          )
          .join("")}</ul></li>`,
    )
    .join("");
  const body = groups
    .map(
      ([tag, list]) =>
        `<h2 id="${anchor("tag", tag)}">${escapeHtml(tag)}</h2>` +
        list
          .map((o) => {
            const item = asObject(asObject(doc.paths)[o.path]);
            // Path-level parameters apply to every operation under the path (OpenAPI 3.1 §4.8.9.1).
            return renderOperation(doc, o, [...asArray(item.parameters), ...asArray(o.op.parameters)]);
          })
          .join(""),
    )
    .join("");

  return (
    `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(title)}: API reference</title><link rel="stylesheet" href="${DOCS_STYLESHEET}"></head><body><main>` +
    `<header><h1>${escapeHtml(title)}</h1><p class="muted">Version ${escapeHtml(String(info.version ?? ""))} · OpenAPI ${escapeHtml(String(doc.openapi ?? ""))} · ` +
    `<a href="${escapeHtml(specPath)}">${escapeHtml(specPath)}</a>` +
    (servers.length ? ` · server ${servers.map((u) => `<code>${escapeHtml(u)}</code>`).join(", ")}` : "") +
    `</p><p>${prose(info.description)}</p></header>` +
    `<nav><h2>Contents</h2><ul>${toc}<li><a href="#schemas"><strong>schemas</strong></a></li></ul></nav>` +
    body +
    `<h2 id="schemas">Schemas</h2>${schemas.map(([name, s]) => renderSchema(name, s)).join("")}` +
    `</main></body></html>`
  );
}
