/// <reference types="node" />
/**
 * `npm run test:browser`: /docs in a real headless Chromium. Starts the partner sandbox and
 * `wrangler dev` on free ports (scripts/start.ts), drives Chromium over the DevTools protocol
 * (Node's own WebSocket; no Playwright needed) and checks what a reader gets: the operations
 * and parameters on the rendered page, the stylesheet applied under the page's CSP, no CSP
 * violation or script error, nothing fetched but the page itself. Leaves a screenshot in
 * $DOCS_SCREENSHOT (default /tmp/docs-browser.png).
 *
 * Needs a Chromium: $CHROMIUM, else `chromium`, `chromium-browser` or `google-chrome` on PATH
 * (Debian: apt-get install -y chromium).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Local, startLocal } from "../../scripts/start.ts";

const SCREENSHOT = process.env.DOCS_SCREENSHOT ?? "/tmp/docs-browser.png";
const STEP_TIMEOUT_MS = 30_000;

function findChromium(): string {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]) {
    for (const dir of (process.env.PATH ?? "").split(delimiter)) {
      const file = join(dir, name);
      if (dir && existsSync(file)) return file;
    }
  }
  throw new Error("no Chromium found: set $CHROMIUM or install one (Debian: apt-get install -y chromium)");
}

/** A small DevTools protocol client: one WebSocket to the browser, sessions flattened into it. */
class Cdp {
  #ws: WebSocket;
  #id = 0;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  #listeners: ((method: string, params: Record<string, unknown>, sessionId?: string) => void)[] = [];

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.addEventListener("message", (ev) => {
      const msg = JSON.parse(String(ev.data)) as {
        id?: number;
        result?: unknown;
        error?: { message: string };
        method?: string;
        params?: Record<string, unknown>;
        sessionId?: string;
      };
      if (msg.id !== undefined) {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`${p.method}: ${msg.error.message}`));
        else p?.resolve(msg.result);
      } else if (msg.method) {
        for (const l of this.#listeners) l(msg.method, msg.params ?? {}, msg.sessionId);
      }
    });
  }

  static async connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`cannot connect to ${url}`)), { once: true });
    });
    return new Cdp(ws);
  }

  send<T = Record<string, unknown>>(method: string, params: object = {}, sessionId?: string): Promise<T> {
    const id = ++this.#id;
    const message = JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) });
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${method}: no answer`)), STEP_TIMEOUT_MS);
      this.#pending.set(id, {
        method,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#ws.send(message);
    });
  }

  on(listener: (method: string, params: Record<string, unknown>, sessionId?: string) => void): void {
    this.#listeners.push(listener);
  }

  close(): void {
    this.#ws.close();
  }
}

/** Launches Chromium headless with a fresh profile; resolves with its DevTools WebSocket URL. */
async function launchChromium(profile: string): Promise<{ child: ChildProcess; wsUrl: string }> {
  const child = spawn(
    findChromium(),
    [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-extensions",
      "--disable-dev-shm-usage",
      "--hide-scrollbars",
      "--mute-audio",
      `--user-data-dir=${profile}`,
      "--remote-debugging-address=127.0.0.1",
      "--remote-debugging-port=0",
      "--window-size=1280,900",
      "about:blank",
    ],
    // Its own process group (renderers, zygote, crashpad): stopped as one.
    { detached: true, stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (s: string) => {
    stderr = (stderr + s).slice(-4000);
  });
  // Chromium writes the port it picked, and the browser target's path, into the profile.
  const file = join(profile, "DevToolsActivePort");
  const until = Date.now() + STEP_TIMEOUT_MS;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`chromium exited (${child.exitCode}):\n${stderr}`);
    const text = await readFile(file, "utf8").catch(() => "");
    const [port, path] = text.split("\n");
    if (port && path) return { child, wsUrl: `ws://127.0.0.1:${port.trim()}${path.trim()}` };
    await new Promise((r) => setTimeout(r, 50));
  }
  stopGroup(child);
  throw new Error(`chromium did not open its DevTools port:\n${stderr}`);
}

function stopGroup(child: ChildProcess | undefined): void {
  if (child?.pid === undefined) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

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
    // A CSP violation shows here first ("Applying inline style violates ..."), with the hash it wanted.
    assert.deepEqual(problems, []);
    // .m-get is green only if the hashed inline stylesheet was allowed.
    assert.deepEqual(view.methodBadge, { background: "rgb(23, 128, 61)", color: "rgb(255, 255, 255)" });
    assert.match(view.bodyFont, /system-ui/);
    const others = requests.filter((u) => !u.endsWith("/docs") && !u.endsWith("/favicon.ico"));
    assert.deepEqual(others, []);
    // A readable column, not a page wider than the window.
    assert.ok(view.width <= 1280, `page is ${view.width}px wide`);
    assert.ok(view.height > 2000, `page is only ${view.height}px tall`);
  });
});
