/**
 * GET /map on the Worker in workerd: the page's HTML and its Content Security Policy (this
 * suite's settings have no MAP_TILES_URL: this origin only), and that the page costs the
 * partner nothing. The static files and the page at work: test/browser/map.browser.ts.
 */
import { beforeEach, describe, expect, it } from "vitest";
import { coldStart, get, partnerCounts, partnerCountsWith } from "../support/harness.ts";

beforeEach(coldStart);

describe("GET /map", () => {
  it("is the map page with a CSP that allows this origin only, and no partner or token request", async () => {
    const res = await get("/map");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("content-security-policy")).toBe(
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    );
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    const html = await res.text();
    expect(html).toContain('<script src="/map/map.js" defer></script>');
    expect(html).toContain('<link rel="stylesheet" href="/map/leaflet/leaflet.css">');
    expect(html).not.toContain("data-tiles-url");
    expect(await partnerCounts()).toEqual(partnerCountsWith({}));
  });

  it("answers HEAD with the headers and no body, OPTIONS with 204, POST with 405", async () => {
    const head = await get("/map", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-security-policy")).toMatch(/^default-src 'none'/);
    expect(await head.text()).toBe("");
    const options = await get("/map", { method: "OPTIONS" });
    // This suite configures CORS origins: an OPTIONS from no allowed origin is a bare 204 (src/app.ts).
    expect(options.status).toBe(204);
    const post = await get("/map", { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("content-type")).toMatch(/^application\/problem\+json/);
  });

  it("leaves other paths under /map/ to the static assets: the Worker answers them 404 problem+json", async () => {
    // exports.default.fetch is the Worker itself; Workers Static Assets answer these paths before it.
    const res = await get("/map/map.js");
    expect(res.status).toBe(404);
    expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
  });
});
