/// <reference types="node" />
/**
 * `npm run test:browser`: /docs in a real headless Chromium. Starts the partner sandbox and
 * `wrangler dev` on free ports (scripts/start.ts), drives Chromium over the DevTools protocol
 * (Node's own WebSocket; no Playwright needed) and checks what a reader gets: the operations
 * and parameters on the rendered page, the stylesheet applied under the page's CSP, no CSP
 * violation or script error, nothing fetched but the page and its stylesheet. Leaves a screenshot in
 * $DOCS_SCREENSHOT (default /tmp/docs-browser.png). Chromium and the protocol: ./chromium.ts.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Local, startLocal } from "../../scripts/start.ts";
import { Cdp, launchChromium, STEP_TIMEOUT_MS, stopGroup } from "./chromium.ts";

const SCREENSHOT = process.env.DOCS_SCREENSHOT ?? "/tmp/docs-browser.png";

interface PageView {
  title: string;
  text: string;
  operations: string[];
  methodBadge: { background: string; color: string } | null;
  bodyFont: string;
  width: number;
  height: number;
}

describe("/docs in headless Chromium", () => {
  let local: Local | undefined;
  let chromium: ChildProcess | undefined;
  let cdp: Cdp | undefined;
  let profile: string | undefined;
  let view: PageView;
  let status = 0;
  let csp = "";
  const requests: string[] = [];
  const problems: string[] = [];

  before(async () => {
    local = await startLocal({ port: 0, sandboxPort: 0, sandbox: true, quiet: true });
    profile = await mkdtemp(join(tmpdir(), "docs-browser-profile-"));
    const launched = await launchChromium(profile);
    chromium = launched.child;
    cdp = await Cdp.connect(launched.wsUrl);

    const { targetId } = await cdp.send<{ targetId: string }>("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await cdp.send<{ sessionId: string }>("Target.attachToTarget", { targetId, flatten: true });
    const pageUrl = `${local.url}/docs`;
    let loaded!: () => void;
    const load = new Promise<void>((resolve) => {
      loaded = resolve;
    });
    cdp.on((method, params, from) => {
      if (from !== sessionId) return;
      if (method === "Page.loadEventFired") loaded();
      else if (method === "Network.requestWillBeSent") {
        requests.push(String((params.request as { url?: string })?.url));
      } else if (method === "Network.responseReceived") {
        const response = params.response as { url: string; status: number; headers: Record<string, string> };
        if (response.url === pageUrl) {
          status = response.status;
          const headers = Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]));
          csp = headers["content-security-policy"] ?? "";
        }
      } else if (method === "Log.entryAdded") {
        const entry = params.entry as { level: string; source: string; text: string; url?: string };
        // A favicon 404 is the browser's own doing, not the page's.
        if (entry.level === "error" && !entry.url?.endsWith("/favicon.ico"))
          problems.push(`${entry.source}: ${entry.text}`);
      } else if (method === "Runtime.exceptionThrown") {
        problems.push(`exception: ${JSON.stringify(params.exceptionDetails)}`);
      } else if (method === "Runtime.consoleAPICalled" && params.type === "error") {
        problems.push(`console: ${JSON.stringify(params.args)}`);
      }
    });
    for (const domain of ["Page.enable", "Network.enable", "Log.enable", "Runtime.enable"]) {
      await cdp.send(domain, {}, sessionId);
    }
    await cdp.send(
      "Emulation.setDeviceMetricsOverride",
      { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false },
      sessionId,
    );
    await cdp.send("Page.navigate", { url: pageUrl }, sessionId);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      load,
      new Promise((_r, reject) => {
        timer = setTimeout(() => reject(new Error("/docs did not load")), STEP_TIMEOUT_MS);
      }),
    ]).finally(() => clearTimeout(timer));

    // What a reader sees, read back from the rendered page (the page itself runs no script).
    const evaluated = await cdp.send<{ result: { value: string } }>(
      "Runtime.evaluate",
      {
        returnByValue: true,
        expression: `JSON.stringify((() => {
          const badge = document.querySelector(".m-get");
          const style = badge && getComputedStyle(badge);
          return {
            title: document.title,
            text: document.body.innerText,
            operations: [...document.querySelectorAll("section.op h3")].map((h) => h.innerText.replace(/\\s+/g, " ").trim()),
            methodBadge: style && { background: style.backgroundColor, color: style.color },
            bodyFont: getComputedStyle(document.body).fontFamily,
            width: document.documentElement.scrollWidth,
            height: document.documentElement.scrollHeight,
          };
        })())`,
      },
      sessionId,
    );
    view = JSON.parse(evaluated.result.value) as PageView;

    const shot = await cdp.send<{ data: string }>("Page.captureScreenshot", { format: "png" }, sessionId);
    await writeFile(SCREENSHOT, Buffer.from(shot.data, "base64"));
  });

  after(async () => {
    try {
      // A graceful close first (Chromium reaps its own helpers), then nothing of the group may stay.
      const exited = chromium && chromium.exitCode === null ? new Promise((r) => chromium?.once("exit", r)) : undefined;
      await cdp?.send("Browser.close").catch(() => {});
      if (exited) await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000).unref())]);
    } finally {
      cdp?.close();
      stopGroup(chromium);
      if (profile) await rm(profile, { recursive: true, force: true }).catch(() => {});
      await local?.stop();
    }
  });

  it("loads the page with its CSP", () => {
    assert.equal(status, 200);
    assert.match(csp, /default-src 'none'/);
    assert.match(view.title, /API reference/);
  });

  it("shows the vehicles operation with its query parameters", () => {
    assert.ok(
      view.operations.some((o) => o.startsWith("GET /v1/vehicles ")),
      `operations: ${view.operations.join(" | ")}`,
    );
    for (const op of ["HEAD /v1/vehicles", "GET /v1/vehicles/{vin}", "GET /health", "GET /openapi.json", "GET /docs"]) {
      assert.ok(
        view.operations.some((o) => o.startsWith(`${op} `)),
        `${op} missing from ${view.operations.join(" | ")}`,
      );
    }
    for (const p of ["bbox", "near", "radius", "fuelType", "minFuelLevel", "transmission", "seats", "limit"]) {
      assert.ok(view.text.includes(p), `parameter ${p} not on the page`);
    }
    assert.ok(view.text.includes("VehicleList"), "schemas not on the page");
    assert.ok(!/fuelCardPin/i.test(view.text), "the PIN field is named on the page");
  });

  it("applies its stylesheet under the CSP, with no violation or error, and fetches nothing else", () => {
    // A CSP violation shows here first ("Refused to load the stylesheet ..."), with the source it blocked.
    assert.deepEqual(problems, []);
    // .m-get is green only if its stylesheet (/docs/docs.css, a static asset) loaded and was allowed.
    assert.deepEqual(view.methodBadge, { background: "rgb(23, 128, 61)", color: "rgb(255, 255, 255)" });
    assert.match(view.bodyFont, /system-ui/);
    const others = requests.filter(
      (u) => !u.endsWith("/docs") && !u.endsWith("/docs/docs.css") && !u.endsWith("/favicon.ico"),
    );
    assert.deepEqual(others, []);
    assert.ok(
      requests.some((u) => u.endsWith("/docs/docs.css")),
      "the stylesheet was not fetched",
    );
    // A readable column, not a page wider than the window.
    assert.ok(view.width <= 1280, `page is ${view.width}px wide`);
    assert.ok(view.height > 2000, `page is only ${view.height}px tall`);
  });
});
