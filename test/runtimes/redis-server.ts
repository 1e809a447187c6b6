/// <reference types="node" />
/**
 * A private redis-server (Debian's package; `.ci/run` installs it) on a free loopback port, with no
 * persistence: for the replica tests, started and stopped by the test itself.
 */
import { spawn } from "node:child_process";
import { createServer } from "node:net";

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** Stops it (SIGKILL: as a crash would); resolves once it exited. Idempotent. */
  stop(): Promise<void>;
}

/** A port nobody listens on right now (the kernel's pick). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** Starts redis-server on `port` (default: a free one) and waits for "Ready to accept connections". */
export async function startRedis(port?: number, timeoutMs = 10_000): Promise<RedisServer> {
  const p = port ?? (await freePort());
  const args = ["--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"];
  const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`redis-server: not ready within ${timeoutMs} ms\n${output}`));
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`redis-server: cannot start (${err.message}); apt-get install redis-server`));
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited before ready\n${output}`));
    });
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      if (output.includes("Ready to accept connections")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
  });
  return {
    port: p,
    url: `redis://127.0.0.1:${p}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}
