/// <reference types="node" />
/**
 * `npm run test:browser`: /map in a real headless Chromium (./chromium.ts), against the partner
 * sandbox. Two gateways:
 *
 * - the Worker (`wrangler dev`, scripts/start.ts; its static files from Workers Static Assets):
 *   the page loads with no console error or CSP violation and fetches nothing from elsewhere;
 *   its markers are the vehicles of /v1/vehicles for the query it shows; drawing a box and
 *   choosing a fuel type changes them to what /v1/vehicles answers for that query; a click on
 *   a car shows the fields the API serves; a bounded number of token and partner requests.
 * - Bun (the Deno/Bun server's static files) with API keys on and tiles from a loopback tile
 *   server: the page asks for the key before any API call, keeps it in the tab, draws the
 *   markers; tiles load under a CSP that allows that one host.
 *
 * Screenshots go to $MAP_SCREENSHOTS (default artifacts/, which CI keeps).
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type Sandbox, startSandbox } from "../../sandbox/index.ts";
import { type Local, startLocal } from "../../scripts/start.ts";
import { VENDOR_DIR, vendorMap } from "../../scripts/vendor-map.ts";
import { type RuntimeProcess, sandboxSettings, startRuntime } from "../runtimes/runtime-process.ts";
import { waitFor } from "../support/wait.ts";
import { Cdp, launchChromium, STEP_TIMEOUT_MS, stopGroup } from "./chromium.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const SHOTS = resolve(ROOT, process.env.MAP_SCREENSHOTS ?? "artifacts");
const API_KEY = "map-browser-key-0123456789";
const WIDTH = 1280;
const HEIGHT = 800;

interface VehicleList {
  vehicles: { vin: string; fuelType: string; position: { latitude: number; longitude: number }; distanceM?: number }[];
  count: number;
  total: number;
  fetchedAt: string;
}

/** What the page shows: the query it ran and the markers it drew (one SVG path per vehicle). */
interface Shown {
  state: string;
  moving: boolean;
  query: string;
  count: string;
  vins: string[];
}

const SHOWN = `JSON.stringify({
  state: document.body.dataset.state,
  moving: document.body.dataset.moving === "true",
  query: document.body.dataset.query ?? "",
  count: document.body.dataset.count ?? "",
  vins: [...document.querySelectorAll("#map path.vehicle")].map((p) => p.dataset.vin),
})`;

/** One tab of the browser: everything it logged and requested, and a few ways to drive it. */
class MapTab {
  readonly problems: string[] = [];
  readonly requests: string[] = [];
  readonly headers = new Map<string, Record<string, string>>();
  #loaded = false;

  readonly cdp: Cdp;
  readonly sessionId: string;

  private constructor(cdp: Cdp, sessionId: string) {
    this.cdp = cdp;
    this.sessionId = sessionId;
  }

  static async open(cdp: Cdp, url: string): Promise<MapTab> {
    const { targetId } = await cdp.send<{ targetId: string }>("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await cdp.send<{ sessionId: string }>("Target.attachToTarget", { targetId, flatten: true });
    const tab = new MapTab(cdp, sessionId);
    cdp.on((method, params, from) => {
      if (from !== sessionId) return;
      if (method === "Page.loadEventFired") tab.#loaded = true;
      else if (method === "Network.requestWillBeSent") {
        tab.requests.push(String((params.request as { url?: string })?.url));
      } else if (method === "Network.responseReceived") {
        const response = params.response as { url: string; headers: Record<string, string> };
        const headers = Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]));
        tab.headers.set(response.url, headers);
      } else if (method === "Log.entryAdded") {
        const entry = params.entry as { level: string; source: string; text: string; url?: string };
        // A favicon 404 is the browser's own doing, not the page's.
        if (entry.level === "error" && !entry.url?.endsWith("/favicon.ico"))
          tab.problems.push(`${entry.source}: ${entry.text}`);
      } else if (method === "Runtime.exceptionThrown") {
        tab.problems.push(`exception: ${JSON.stringify(params.exceptionDetails)}`);
      } else if (method === "Runtime.consoleAPICalled" && (params.type === "error" || params.type === "warning")) {
        tab.problems.push(`console.${params.type}: ${JSON.stringify(params.args)}`);
      }
    });
    for (const domain of ["Page.enable", "Network.enable", "Log.enable", "Runtime.enable"]) {
      await cdp.send(domain, {}, sessionId);
    }
    await cdp.send(
      "Emulation.setDeviceMetricsOverride",
      { width: WIDTH, height: HEIGHT, deviceScaleFactor: 1, mobile: false },
      sessionId,
    );
    await cdp.send("Page.navigate", { url }, sessionId);
    await tab.waitFor("the load event", async () => tab.#loaded);
    return tab;
  }

  async evaluate<T>(expression: string): Promise<T> {
    const r = await this.cdp.send<{ result: { value: T }; exceptionDetails?: unknown }>(
      "Runtime.evaluate",
      { expression, returnByValue: true, awaitPromise: true },
      this.sessionId,
    );
    if (r.exceptionDetails) throw new Error(`evaluate ${expression}: ${JSON.stringify(r.exceptionDetails)}`);
    return r.result.value;
  }

  async shown(): Promise<Shown> {
    return JSON.parse(await this.evaluate<string>(SHOWN)) as Shown;
  }

  /** Bounded polling for a state of the page (never a guessed sleep). */
  async waitFor(what: string, check: () => Promise<boolean>, timeoutMs = STEP_TIMEOUT_MS): Promise<void> {
    try {
      await waitFor(what, check, timeoutMs, 50);
    } catch (e) {
      throw new Error(`${(e as Error).message}; problems: ${this.problems.join(" | ")}`);
    }
  }

  /** Waits until the page has drawn the answer to a query that `matches`. */
  async ready(matches: (query: string) => boolean = () => true): Promise<Shown> {
    let last: Shown | undefined;
    await this.waitFor("the page to draw its answer", async () => {
      last = await this.shown();
      return last.state === "ready" && !last.moving && matches(last.query);
    });
    return last as Shown;
  }

  async mouse(type: "mousePressed" | "mouseMoved" | "mouseReleased", x: number, y: number): Promise<void> {
    await this.cdp.send(
      "Input.dispatchMouseEvent",
      { type, x, y, button: "left", buttons: type === "mouseReleased" ? 0 : 1, clickCount: 1 },
      this.sessionId,
    );
  }

  async screenshot(name: string): Promise<string> {
    const shot = await this.cdp.send<{ data: string }>("Page.captureScreenshot", { format: "png" }, this.sessionId);
    await mkdir(SHOTS, { recursive: true });
    const file = join(SHOTS, name);
    await writeFile(file, Buffer.from(shot.data, "base64"));
    return file;
  }
}

/** Chromium with a fresh profile, closed (and its process group stopped) by `close`. */
async function browser(): Promise<{ cdp: Cdp; close(): Promise<void> }> {
  const profile = await mkdtemp(join(tmpdir(), "map-browser-profile-"));
  let child: ChildProcess | undefined;
  try {
    const launched = await launchChromium(profile);
    child = launched.child;
    const cdp = await Cdp.connect(launched.wsUrl);
    return {
      cdp,
      async close() {
        try {
          const exited = child && child.exitCode === null ? new Promise((r) => child?.once("exit", r)) : undefined;
          await cdp.send("Browser.close").catch(() => {});
          if (exited) await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000).unref())]);
        } finally {
          cdp.close();
          stopGroup(child);
          await rm(profile, { recursive: true, force: true }).catch(() => {});
        }
      },
    };
  } catch (err) {
    stopGroup(child);
    await rm(profile, { recursive: true, force: true }).catch(() => {});
    throw err;
  }
}

async function api(origin: string, query: string, key?: string): Promise<VehicleList> {
  const res = await fetch(`${origin}${query}`, { headers: key ? { "x-api-key": key } : {} });
  assert.equal(res.status, 200, `${query}: ${res.status}`);
  return (await res.json()) as VehicleList;
}

/**
 * The page's markers against the API's answer to the query the page shows. The sandbox's fleet
 * moves (a tick every 10 s) and the snapshot is fresh for 30 s: if the gateway refreshed it
 * between the page's request and ours, the page runs its query again and we compare again.
 */
async function expectMarkersMatchApi(tab: MapTab, origin: string, key?: string): Promise<VehicleList> {
  for (let attempt = 0; ; attempt++) {
    const shown = await tab.ready();
    const pageFetchedAt = await tab.evaluate<string>("document.body.dataset.fetchedAt");
    const answer = await api(origin, shown.query, key);
    if (answer.fetchedAt !== pageFetchedAt && attempt < 3) {
      await tab.evaluate(`document.getElementById("filters").dispatchEvent(new Event("change")), true`);
      continue;
    }
    assert.equal(answer.fetchedAt, pageFetchedAt, "the page and the API answered from different snapshots");
    assert.equal(shown.vins.length, answer.count, `markers for ${shown.query}`);
    assert.equal(shown.count, String(answer.count));
    assert.deepEqual([...shown.vins].sort(), answer.vehicles.map((v) => v.vin).sort());
    return answer;
  }
}

/** The CSP of a response, directive by directive. */
function cspOf(headers: Record<string, string> | undefined): Record<string, string> {
  return Object.fromEntries(
    (headers?.["content-security-policy"] ?? "").split(";").map((d) => {
      const [name = "", ...values] = d.trim().split(/\s+/);
      return [name, values.join(" ")];
    }),
  );
}

describe("/map on the Worker (wrangler dev) in headless Chromium", () => {
  let local: Local | undefined;
  let chrome: Awaited<ReturnType<typeof browser>> | undefined;
  let tab: MapTab;
  let all: VehicleList;
  let started = 0;

  before(async () => {
    local = await startLocal({ port: 0, sandboxPort: 0, sandbox: true, quiet: true });
    chrome = await browser();
    started = Date.now();
    tab = await MapTab.open(chrome.cdp, `${local.url}/map`);
    await tab.ready();
  });

  after(async () => {
    try {
      await chrome?.close();
    } finally {
      await local?.stop();
    }
  });

  it("loads with its CSP, no console error or CSP violation, and fetches nothing from elsewhere", async () => {
    assert.deepEqual(tab.problems, []);
    const csp = cspOf(tab.headers.get(`${local?.url}/map`));
    assert.equal(csp["default-src"], "'none'");
    assert.equal(csp["script-src"], "'self'");
    assert.equal(csp["img-src"], "'self'");
    assert.equal(csp["connect-src"], "'self'");
    const origin = local?.url ?? "";
    const elsewhere = tab.requests.filter((u) => !u.startsWith(`${origin}/`));
    assert.deepEqual(elsewhere, []);
    // Leaflet and the page's own files came from Workers Static Assets.
    for (const path of ["/map/leaflet/leaflet.js", "/map/leaflet/leaflet.css", "/map/map.js", "/map/map.css"]) {
      assert.ok(tab.requests.includes(`${origin}${path}`), `${path} not requested`);
      assert.equal(tab.headers.get(`${origin}${path}`)?.["x-content-type-options"], "nosniff", path);
    }
    // The status strip: snapshot age, freshness and the tier that answered (Cache-Status).
    const status = await tab.evaluate<string>(`document.getElementById("status").textContent`);
    assert.match(status, /snapshot \d+ s old · (fresh|STALE)/);
    assert.match(status, /answered by gateway-(object|cache|memory)/);
    await tab.screenshot("map.png");
  });

  it("draws one marker per vehicle of /v1/vehicles for the query it shows", async () => {
    all = await expectMarkersMatchApi(tab, local?.url ?? "");
    assert.equal((await tab.shown()).query, "/v1/vehicles");
    assert.ok(all.count > 100, `only ${all.count} vehicles`);
    const text = await tab.evaluate<string>(`document.getElementById("query-url").textContent`);
    assert.equal(text, "/v1/vehicles");
  });

  it("drawing a box and choosing a fuel type change the markers to what /v1/vehicles answers", async () => {
    const origin = local?.url ?? "";
    const map = await tab.evaluate<{ x: number; y: number; width: number; height: number }>(
      `(() => { const r = document.getElementById("map").getBoundingClientRect(); return { x: r.x, y: r.y, width: r.width, height: r.height }; })()`,
    );
    // A box over the middle of the map (the fleet is fitted into it, so it holds some cars).
    const from = { x: map.x + map.width * 0.3, y: map.y + map.height * 0.25 };
    const to = { x: map.x + map.width * 0.7, y: map.y + map.height * 0.75 };
    await tab.evaluate(`document.getElementById("draw-box").click(), true`);
    await tab.mouse("mousePressed", from.x, from.y);
    for (let i = 1; i <= 5; i++) {
      await tab.mouse("mouseMoved", from.x + ((to.x - from.x) * i) / 5, from.y + ((to.y - from.y) * i) / 5);
    }
    await tab.mouse("mouseReleased", to.x, to.y);
    const boxed = await tab.ready((q) => q.startsWith("/v1/vehicles?bbox="));
    // The drag drew a box; it selected no text of the page on the way.
    assert.equal(await tab.evaluate<string>("String(window.getSelection())"), "");
    const inBox = await expectMarkersMatchApi(tab, origin);
    assert.ok(inBox.count > 0 && inBox.count < all.count, `box holds ${inBox.count} of ${all.count}`);

    await tab.evaluate(
      `(() => { const s = document.getElementById("fuelType"); s.value = "ELECTRIC"; s.dispatchEvent(new Event("change", { bubbles: true })); return true; })()`,
    );
    const filtered = await tab.ready((q) => q.includes("fuelType=ELECTRIC"));
    assert.equal(filtered.query, `${boxed.query}&fuelType=ELECTRIC`);
    const electric = await expectMarkersMatchApi(tab, origin);
    assert.ok(electric.count > 0 && electric.count < inBox.count, `${electric.count} electric of ${inBox.count}`);
    assert.ok(electric.vehicles.every((v) => v.fuelType === "ELECTRIC"));
    assert.equal(
      await tab.evaluate<string>(`document.getElementById("query-url").getAttribute("href")`),
      filtered.query,
    );
    assert.deepEqual(tab.problems, []);
    await tab.screenshot("map-filtered.png");
  });

  it("shows the fields the API serves for a car that is clicked, and nothing else", async () => {
    // A marker that no other covers at its centre (markers overlap where the fleet is dense).
    const target = await tab.evaluate<{ vin: string; x: number; y: number }>(`(() => {
      for (const p of document.querySelectorAll("#map path.vehicle")) {
        const r = p.getBoundingClientRect();
        const x = r.x + r.width / 2, y = r.y + r.height / 2;
        if (document.elementFromPoint(x, y) === p) return { vin: p.dataset.vin, x, y };
      }
      return null;
    })()`);
    assert.ok(target, "no marker free to click");
    await tab.mouse("mousePressed", target.x, target.y);
    await tab.mouse("mouseReleased", target.x, target.y);
    let names: string[] = [];
    await tab.waitFor("the popup", async () => {
      names = await tab.evaluate<string[]>(
        `[...document.querySelectorAll(".leaflet-popup-content dt")].map((d) => d.textContent)`,
      );
      return names.length > 0;
    });
    const res = await fetch(`${local?.url}/v1/vehicles/${target.vin}`);
    const { vehicle } = (await res.json()) as { vehicle: Record<string, unknown> };
    const expected = Object.keys(vehicle).flatMap((k) =>
      k === "position" ? ["position.latitude", "position.longitude"] : [k],
    );
    assert.deepEqual(names, expected);
    const values = await tab.evaluate<string[]>(
      `[...document.querySelectorAll(".leaflet-popup-content dd")].map((d) => d.textContent)`,
    );
    assert.equal(values[names.indexOf("vin")], target.vin);
    assert.ok(!names.some((n) => /pin/i.test(n)));
  });

  it("a click for `near` with a radius shows the vehicles /v1/vehicles answers around that point", async () => {
    const origin = local?.url ?? "";
    // Back to the whole fleet, every fuel type; the map stays where the box put it.
    await tab.evaluate(`(() => {
      document.getElementById("clear-area").click();
      const s = document.getElementById("fuelType");
      s.value = "";
      s.dispatchEvent(new Event("change", { bubbles: true }));
      const r = document.getElementById("radius");
      r.value = "4000";
      return true;
    })()`);
    // Ready and not moving: the fleet is fitted into view again, markers where they stay.
    await tab.ready((q) => q === "/v1/vehicles");
    // A point in Berlin: where one of its cars is drawn (the sandbox's biggest city).
    const berlin = new Set(
      all.vehicles
        .filter((v) => Math.abs(v.position.latitude - 52.52) < 0.03 && Math.abs(v.position.longitude - 13.405) < 0.05)
        .map((v) => v.vin),
    );
    assert.ok(berlin.size > 0, "no car in central Berlin");
    const point = await tab.evaluate<{ x: number; y: number } | null>(`(() => {
      const vins = new Set(${JSON.stringify([...berlin])});
      const p = [...document.querySelectorAll("#map path.vehicle")].find((e) => vins.has(e.dataset.vin));
      if (!p) return null;
      const r = p.getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
    })()`);
    assert.ok(point, "no Berlin car drawn (is Berlin outside the view?)");
    await tab.evaluate(`document.getElementById("pick-near").click(), true`);
    await tab.mouse("mousePressed", point.x, point.y);
    await tab.mouse("mouseReleased", point.x, point.y);
    const shown = await tab.ready((q) => q.startsWith("/v1/vehicles?near="));
    assert.match(shown.query, /^\/v1\/vehicles\?near=52\.\d+,13\.\d+&radius=4000$/);
    const near = await expectMarkersMatchApi(tab, origin);
    assert.ok(near.count > 0 && near.count < all.count, `${near.count} near`);
    assert.ok(near.vehicles.every((v) => v.distanceM !== undefined && v.distanceM <= 4000));
    assert.deepEqual(tab.problems, []);
    // Zoomed to the circle: this is the README's picture (docs/map.png).
    await tab.screenshot("map-near.png");
  });

  it("made one token request and no more partner requests than the snapshot's TTL allows", () => {
    const counts = local?.sandbox?.counters();
    assert.ok(counts);
    assert.equal(counts.token.issued, 1);
    // Filters are computed at the edge: one partner fetch per 30 s TTL at most, whatever the page asked.
    const ttls = Math.ceil((Date.now() - started) / 30_000);
    assert.ok(
      counts.vehicles.total >= 1 && counts.vehicles.total <= 1 + ttls,
      `partner requests ${counts.vehicles.total}`,
    );
    assert.equal(counts.unexpected, 0);
  });
});

describe("/map on Bun with API keys on and tiles from a configured host", () => {
  let sandbox: Sandbox | undefined;
  let tiles: Server | undefined;
  let gateway: RuntimeProcess | undefined;
  let chrome: Awaited<ReturnType<typeof browser>> | undefined;
  let tab: MapTab;
  let tileOrigin = "";
  const tileRequests: string[] = [];

  before(async () => {
    await vendorMap();
    // A frozen fleet: the page and the test read the same vehicles whenever they ask.
    sandbox = await startSandbox({ port: 0, fleetSize: 300, tickMs: 0 });
    // A loopback tile server: every tile is the same small PNG.
    const png = await readFile(join(VENDOR_DIR, "images", "layers.png"));
    tiles = createServer((req, res) => {
      tileRequests.push(`${req.method} ${req.url}`);
      res.writeHead(200, { "content-type": "image/png", "content-length": png.length });
      res.end(png);
    });
    await new Promise<void>((done) => tiles?.listen(0, "127.0.0.1", done));
    const address = tiles.address();
    assert.ok(address && typeof address === "object");
    tileOrigin = `http://127.0.0.1:${address.port}`;
    gateway = await startRuntime("bun", {
      ...sandboxSettings(sandbox),
      API_KEYS: API_KEY,
      MAP_TILES_URL: `${tileOrigin}/{z}/{x}/{y}.png`,
      MAP_TILES_ATTRIBUTION: "Test tiles © nobody",
      // One snapshot and no warm-up tick for the whole suite: the partner counts below are exact.
      VEHICLES_TTL_S: "3600",
      WARMUP_INTERVAL_S: "3600",
    });
    chrome = await browser();
    tab = await MapTab.open(chrome.cdp, `${gateway.url}/map`);
  });

  after(async () => {
    try {
      await chrome?.close();
    } finally {
      await gateway?.stop();
      await new Promise((done) => (tiles ? tiles.close(done) : done(undefined)));
      await sandbox?.close();
    }
  });

  it("asks for the key before any API call, then draws the markers /v1/vehicles answers with it", async () => {
    await tab.waitFor("the key form", async () => (await tab.shown()).state === "needs-key");
    assert.deepEqual(
      tab.requests.filter((u) => u.includes("/v1/")),
      [],
    );
    await tab.evaluate(`(() => {
      document.getElementById("key").value = ${JSON.stringify(API_KEY)};
      document.getElementById("key-form").requestSubmit();
      return true;
    })()`);
    const answer = await expectMarkersMatchApi(tab, gateway?.url ?? "", API_KEY);
    assert.equal(answer.count, 300);
    // In this tab only, and never in a URL.
    assert.equal(await tab.evaluate<string>(`sessionStorage.getItem("sharenow-gateway-api-key")`), API_KEY);
    assert.ok(!tab.requests.some((u) => u.includes(API_KEY)));
    assert.equal(await tab.evaluate<string>(`localStorage.length`), 0);
    assert.deepEqual(tab.problems, []);
  });

  it("loads tiles from the configured host, which the CSP allows (and nothing else)", async () => {
    await tab.waitFor("tiles", async () => tileRequests.length > 0);
    const csp = cspOf(tab.headers.get(`${gateway?.url}/map`));
    assert.equal(csp["img-src"], `'self' ${tileOrigin}`);
    assert.equal(csp["connect-src"], "'self'");
    await tab.waitFor("tiles drawn", async () =>
      tab.evaluate<boolean>(
        `[...document.querySelectorAll(".leaflet-tile")].some((t) => t.complete && t.naturalWidth > 0)`,
      ),
    );
    const attribution = await tab.evaluate<string>(
      `document.querySelector(".leaflet-control-attribution").textContent`,
    );
    assert.match(attribution, /Test tiles © nobody/);
    const origins = new Set(tab.requests.map((u) => new URL(u).origin));
    assert.deepEqual([...origins].sort(), [gateway?.url, tileOrigin].sort());
    assert.ok(
      tileRequests.every((r) => /^GET \/\d+\/\d+\/\d+\.png$/.test(r)),
      tileRequests.join(" "),
    );
    assert.deepEqual(tab.problems, []);
    // The partner saw one token request and one fleet request for everything the page did.
    const counts = sandbox?.counters();
    assert.equal(counts?.token.issued, 1);
    assert.equal(counts?.vehicles.total, 1);
    await tab.screenshot("map-bun-tiles.png");
  });

  it("minFuelLevel, transmission and seats go into the query, and the markers follow the answer", async () => {
    await tab.evaluate(`(() => {
      const set = (id, value) => { const e = document.getElementById(id); e.value = value; };
      set("minFuelLevel", "40");
      set("transmission", "GA");
      set("seats", document.querySelector("#seats option:nth-child(2)").value);
      document.getElementById("filters").dispatchEvent(new Event("change"));
      return true;
    })()`);
    const shown = await tab.ready((q) => q.includes("seats="));
    assert.match(shown.query, /^\/v1\/vehicles\?minFuelLevel=40&transmission=GA&seats=\d+$/);
    const answer = await expectMarkersMatchApi(tab, gateway?.url ?? "", API_KEY);
    assert.ok(answer.count > 0 && answer.count < 300, `${answer.count} of 300`);
    assert.deepEqual(tab.problems, []);
  });

  it("following the view, a drag of the map makes the visible area the bbox of the query", async () => {
    await tab.evaluate(`(() => {
      for (const id of ["minFuelLevel", "transmission", "seats"]) document.getElementById(id).value = "";
      const follow = document.getElementById("follow-view");
      follow.checked = true;
      follow.dispatchEvent(new Event("change", { bubbles: true }));
      return true;
    })()`);
    const first = await tab.ready((q) => /^\/v1\/vehicles\?bbox=[^&]+$/.test(q));
    await expectMarkersMatchApi(tab, gateway?.url ?? "", API_KEY);
    const map = await tab.evaluate<{ x: number; y: number; width: number; height: number }>(
      `(() => { const r = document.getElementById("map").getBoundingClientRect(); return { x: r.x, y: r.y, width: r.width, height: r.height }; })()`,
    );
    // Drag the map a third of its width to the right: the view (and the bbox) moves west.
    const y = map.y + map.height / 2;
    const from = map.x + map.width * 0.3;
    const to = map.x + map.width * 0.63;
    await tab.mouse("mousePressed", from, y);
    for (let i = 1; i <= 8; i++) await tab.mouse("mouseMoved", from + ((to - from) * i) / 8, y);
    await tab.mouse("mouseReleased", to, y);
    const dragged = await tab.ready((q) => q.startsWith("/v1/vehicles?bbox=") && q !== first.query);
    const west = (q: string) => Number(new URLSearchParams(q.split("?")[1]).get("bbox")?.split(",")[0]);
    assert.ok(west(dragged.query) < west(first.query), `${first.query} -> ${dragged.query}`);
    await expectMarkersMatchApi(tab, gateway?.url ?? "", API_KEY);
    assert.deepEqual(tab.problems, []);
    await tab.evaluate(`document.getElementById("clear-area").click(), true`);
    await tab.ready((q) => q === "/v1/vehicles");
  });

  it("shows the problem the API answers for a bad value, and asks again for a key that is refused", async () => {
    await tab.evaluate(`(() => {
      document.getElementById("minFuelLevel").value = "150";
      document.getElementById("filters").dispatchEvent(new Event("change"));
      return true;
    })()`);
    await tab.waitFor("the error", async () => (await tab.shown()).state === "error");
    const error = await tab.evaluate<string>(`document.getElementById("error").textContent`);
    assert.match(error, /^400 .*minFuelLevel/);
    // A key the gateway refuses: the page forgets it and asks again.
    await tab.evaluate(`(() => {
      sessionStorage.setItem("sharenow-gateway-api-key", "not-the-key-0123456789");
      document.getElementById("minFuelLevel").value = "";
      document.getElementById("filters").dispatchEvent(new Event("change"));
      return true;
    })()`);
    await tab.waitFor("the key form again", async () => (await tab.shown()).state === "needs-key");
    assert.equal(await tab.evaluate<boolean>(`document.getElementById("key-form").hidden`), false);
    assert.equal(await tab.evaluate<string | null>(`sessionStorage.getItem("sharenow-gateway-api-key")`), null);
    // The browser logs the two refused requests (400, 401); nothing else went wrong.
    assert.deepEqual(
      tab.problems.filter((p) => !/status of 40[01]/.test(p)),
      [],
    );
  });
});
