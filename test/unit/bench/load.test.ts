/// <reference types="node" />
/**
 * The bench's load generator (bench/load.ts) against a raw loopback server that cuts its answers
 * wherever it likes: heads split across writes, Content-Length and chunked bodies larger than the
 * client's shared 1 MiB read buffer, a different length on every connection. Every byte has to be
 * counted on the right connection, or the counts below are off.
 */
import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { runLoad } from "../../../bench/load.ts";

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** Writes `pieces` one event-loop turn apart, so the client sees them as separate reads. */
async function writeApart(socket: Socket, pieces: (string | Buffer)[]): Promise<void> {
  for (const piece of pieces) {
    socket.write(piece);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * A keep-alive HTTP/1.1 server: the n-th answer on a connection has a body of `size(n, conn)`
 * bytes, sent with Content-Length or chunked, its head cut in three.
 */
async function server(opts: { chunked: boolean; size: (conn: number) => number }): Promise<string> {
  let conns = 0;
  const srv = createServer((socket) => {
    const conn = conns++;
    let pending = "";
    socket.on("data", (d) => {
      pending += d.toString("latin1");
      for (let end = pending.indexOf("\r\n\r\n"); end >= 0; end = pending.indexOf("\r\n\r\n")) {
        pending = pending.slice(end + 4);
        const size = opts.size(conn);
        const body = Buffer.alloc(size, 0x61 + (conn % 26));
        const framing = opts.chunked ? "transfer-encoding: chunked" : `content-length: ${size}`;
        const head = `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n${framing}\r\n\r\n`;
        const headPieces = [head.slice(0, 7), head.slice(7, 30), head.slice(30)];
        if (!opts.chunked) {
          void writeApart(socket, [...headPieces, body.subarray(0, 1000), body.subarray(1000)]);
          continue;
        }
        // Chunks of uneven sizes; each size line cut in two; an empty trailer section.
        const pieces: (string | Buffer)[] = [...headPieces];
        for (let at = 0, k = 0; at < size; k++) {
          const n = Math.min(size - at, [700_000, 3, 1_500_000, 65_536][k % 4] as number);
          const line = `${n.toString(16)};ext=1\r\n`;
          pieces.push(line.slice(0, 2), line.slice(2), body.subarray(at, at + n), "\r\n");
          at += n;
        }
        pieces.push("0\r\n", "\r\n");
        void writeApart(socket, pieces);
      }
    });
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const address = srv.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  return `http://127.0.0.1:${address.port}/x`;
}

describe("bench/load.ts", () => {
  for (const chunked of [false, true]) {
    it(`a burst: every answer's bytes counted on its own connection (${chunked ? "chunked" : "Content-Length"})`, async () => {
      // 1.5 to 3.4 MB a connection, all different: larger than the shared read buffer.
      const size = (conn: number) => 1_500_000 + conn * 100_003;
      const url = await server({ chunked, size });
      const r = await runLoad({ url, connections: 20, burst: true, timeoutS: 20 });
      expect(r).toMatchObject({ requests: 20, ok: 20, non2xx: 0, errors: 0, timeouts: 0 });
      let expected = 0;
      for (let c = 0; c < 20; c++) expected += size(c);
      expect(r.bytes).toBe(expected);
      expect(r.ttfb.min).toBeGreaterThan(0);
      expect(r.ttfb.p99).toBeLessThanOrEqual(r.max);
    });
  }

  it("a closed loop: answers in turn on keep-alive connections, none lost", async () => {
    const url = await server({ chunked: true, size: () => 1_100_000 });
    const r = await runLoad({ url, connections: 4, durationS: 0.5, timeoutS: 10 });
    expect(r.errors + r.timeouts + r.non2xx).toBe(0);
    expect(r.requests).toBeGreaterThan(4);
    expect(r.bytes).toBe(r.requests * 1_100_000);
  });
});
