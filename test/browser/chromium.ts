/// <reference types="node" />
/**
 * Headless Chromium for the browser tests (test/browser/*.browser.ts): finds Debian's (or any)
 * Chromium, launches it with a fresh profile, and speaks the DevTools protocol over Node's own
 * WebSocket (no Playwright needed).
 *
 * Needs a Chromium: $CHROMIUM, else `chromium`, `chromium-browser` or `google-chrome` on PATH
 * (Debian: apt-get install -y chromium).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { delimiter, join } from "node:path";

/** How long one protocol call or one wait may take. */
export const STEP_TIMEOUT_MS = 30_000;

export function findChromium(): string {
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
export class Cdp {
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
export async function launchChromium(profile: string): Promise<{ child: ChildProcess; wsUrl: string }> {
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

export function stopGroup(child: ChildProcess | undefined): void {
  if (child?.pid === undefined) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}
