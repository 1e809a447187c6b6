import { describe, expect, it } from "vitest";
import { fetchUpstream, UpstreamError } from "../../../src/http/upstream.ts";

const encoder = new TextEncoder();

/** A body delivered in the given pieces; `bytes`: a byte stream (BYOB-readable), else a default one. */
function bodyOf(pieces: Uint8Array[], bytes: boolean): ReadableStream<Uint8Array> {
  let i = 0;
  if (!bytes) {
    return new ReadableStream<Uint8Array>({
      pull(c) {
        const p = pieces[i++];
        if (p) c.enqueue(p);
        else c.close();
      },
    });
  }
  return new ReadableStream({
    type: "bytes",
    pull(c) {
      const p = pieces[i++];
      if (p) c.enqueue(p.slice());
      else {
        c.close();
        // A byte source ends a pending BYOB read itself (as runtimes' fetch bodies do).
        c.byobRequest?.respond(0);
      }
    },
  }) as ReadableStream<Uint8Array>;
}

function pieces(text: string, size: number): Uint8Array[] {
  const all = encoder.encode(text);
  const out: Uint8Array[] = [];
  for (let at = 0; at < all.length; at += size) out.push(all.subarray(at, at + size));
  return out;
}

async function read(body: ReadableStream<Uint8Array>, maxBytes: number, contentLength?: number) {
  const headers: Record<string, string> =
    contentLength === undefined ? {} : { "content-length": String(contentLength) };
  let calls = 0;
  const res = await fetchUpstream(
    async () => {
      calls++;
      return new Response(body, { headers });
    },
    new Request("http://127.0.0.1/x"),
    { timeoutMs: 5_000, maxBytes },
  );
  expect(calls).toBe(1);
  return res.text;
}

async function rejection(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  return err as UpstreamError;
}

// Multi-byte characters cut across pieces: the body is decoded once, whole.
const TEXT = `[${Array.from({ length: 300 }, (_, i) => `{"n":${i},"s":"Zürich ✓ 😀"}`).join(",")}]`;
const BYTES = encoder.encode(TEXT).length;

describe("fetchUpstream reads the body whole, within the cap", () => {
  for (const bytes of [true, false]) {
    const kind = bytes ? "byte stream (BYOB reads)" : "default stream";
    describe(kind, () => {
      it("reads a body of exactly the cap, with and without Content-Length, split across characters", async () => {
        expect(await read(bodyOf(pieces(TEXT, 7), bytes), BYTES)).toBe(TEXT);
        expect(await read(bodyOf(pieces(TEXT, 1000), bytes), BYTES, BYTES)).toBe(TEXT);
      });

      it("grows past a Content-Length that is only a hint (a decoded body is longer)", async () => {
        expect(await read(bodyOf(pieces(TEXT, 333), bytes), BYTES, 10)).toBe(TEXT);
        expect(await read(bodyOf(pieces(TEXT, 333), bytes), BYTES, 0)).toBe(TEXT);
      });

      it("refuses one byte over the cap: too_large, whatever Content-Length says", async () => {
        expect((await rejection(read(bodyOf(pieces(TEXT, 5), bytes), BYTES - 1))).kind).toBe("too_large");
        expect((await rejection(read(bodyOf(pieces(TEXT, 4096), bytes), BYTES - 1, 10))).kind).toBe("too_large");
      });

      it("reads an empty body", async () => {
        expect(await read(bodyOf([], bytes), 100)).toBe("");
        expect(await read(bodyOf([], bytes), 100, 0)).toBe("");
      });
    });
  }

  it("cancels the stream it refuses", async () => {
    let cancelled = false;
    let i = 0;
    const body = new ReadableStream({
      type: "bytes",
      pull(c) {
        if (i++ < 100) c.enqueue(new Uint8Array(1024));
      },
      cancel() {
        cancelled = true;
      },
    }) as ReadableStream<Uint8Array>;
    expect((await rejection(read(body, 10_000))).kind).toBe("too_large");
    expect(cancelled).toBe(true);
    expect(i).toBeLessThan(100);
  });
});
