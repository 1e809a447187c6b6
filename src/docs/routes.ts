/**
 * GET|HEAD /openapi.json and /docs: the OpenAPI 3.1 document (its `servers` URL relative, so the
 * same text whatever Host a request names) and its HTML rendering. Both are built once per
 * isolate and kept as plain strings; neither touches the partner.
 */

import { fnv1aHex } from "../hash.ts";
import { ifNoneMatchMatches } from "../http/conditional.ts";
import type { AppEnv } from "../http/context.ts";
import { Hono } from "../http/hono.ts";
import { openApiJson } from "../vehicles/openapi-document.ts";
import { renderDocsPage } from "./page.ts";

/**
 * Both documents may be cached by browsers and shared caches for a while (RFC 9111 §5.2.2.1):
 * neither depends on anything in the request (no Host, no key), so no `Vary` is needed.
 */
const CACHE_CONTROL = "public, max-age=300";

interface Rendered {
  json: string;
  jsonEtag: string;
  html?: string;
  htmlEtag?: string;
}

const rendered = new Map<number, Rendered>();

/** A weak validator: FNV-1a of the text and its length. */
function fnv1a(s: string): string {
  return `W/"${fnv1aHex(s)}-${s.length.toString(36)}"`;
}

/** Keyed by `maxLimit`, the only setting the document shows (one per deployment). */
function renderedFor(maxLimit: number): Rendered {
  const hit = rendered.get(maxLimit);
  if (hit) return hit;
  const json = openApiJson(maxLimit);
  const entry: Rendered = { json, jsonEtag: fnv1a(json) };
  rendered.set(maxLimit, entry);
  return entry;
}

function answer(ifNoneMatch: string | undefined, body: string, etag: string, headers: Record<string, string>) {
  const all: Record<string, string> = { ...headers, etag, "cache-control": CACHE_CONTROL };
  if (ifNoneMatchMatches(ifNoneMatch, etag)) {
    // RFC 9110 §15.4.5: a 304 carries no representation metadata such as Content-Type (a
    // validating proxy, Prism, read the empty body as JSON because of it and answered 500).
    const { "content-type": _t, ...rest } = all;
    return new Response(null, { status: 304, headers: rest });
  }
  return new Response(body, { status: 200, headers: all });
}

/** The routes; mount at "/". */
export function docsRoutes(): Hono<AppEnv> {
  const r = new Hono<AppEnv>();

  r.get("/openapi.json", (c) => {
    const doc = renderedFor(c.get("config").vehiclesMaxLimit);
    return answer(c.req.header("if-none-match"), doc.json, doc.jsonEtag, {
      "content-type": "application/json; charset=utf-8",
    });
  });

  r.get("/docs", (c) => {
    const doc = renderedFor(c.get("config").vehiclesMaxLimit);
    if (doc.html === undefined) {
      doc.html = renderDocsPage(JSON.parse(doc.json) as object);
      doc.htmlEtag = fnv1a(doc.html);
    }
    return answer(c.req.header("if-none-match"), doc.html, doc.htmlEtag ?? fnv1a(doc.html), {
      "content-type": "text/html; charset=utf-8",
      // No script at all; its one stylesheet from this origin (public/docs/docs.css); nothing else.
      "content-security-policy":
        "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
      "referrer-policy": "no-referrer",
      "x-frame-options": "DENY",
    });
  });

  return r;
}
