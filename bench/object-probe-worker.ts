/**
 * The fan-out probe (bench/fanout.ts): a bare Worker bound to the gateway's Durable Object class
 * (`PartnerGateway` of the "gateway" Worker in the same workerd) that makes one object call per
 * request and keeps nothing: no parse, no L1 build, no answer beyond a few bytes. So workerd's CPU
 * per request, minus that of `/floor`, is the cost of one object call carrying the snapshot: the
 * object's side (serializing it) and the caller's (receiving it), both in this one process.
 *
 * - `GET /call`: one call of `env.METHOD` (default `getSnapshot`) on the object named
 *   `partner-gateway`; answers `{"ok":…}`.
 * - `GET /call?bytes=1`: the same, answering also the size of what arrived (strings at one byte a
 *   character, or two when any character needs it, as V8's serializer writes them; typed arrays
 *   and ArrayBuffers at their byteLength; numbers at 8). Not used in the timed loop: counting
 *   costs CPU too.
 * - `GET /floor`: no object call; a request's floor in this workerd.
 */
interface GatewayNamespace {
  getByName(name: string): Record<string, (...args: unknown[]) => Promise<unknown>>;
}

interface Env {
  GATEWAY: GatewayNamespace;
  METHOD?: string;
}

const GATEWAY_NAME = "partner-gateway";

/** Bytes of a structured-clone payload, approximately: what crosses the RPC boundary. */
function payloadBytes(value: unknown, seen = new Set<unknown>()): number {
  if (typeof value === "string") return /[^\u0000-\u00ff]/.test(value) ? value.length * 2 : value.length;
  if (typeof value === "number" || typeof value === "bigint") return 8;
  if (typeof value === "boolean" || value === null || value === undefined) return 1;
  if (typeof value !== "object" || seen.has(value)) return 0;
  seen.add(value);
  if (ArrayBuffer.isView(value)) return value.byteLength;
  if (value instanceof ArrayBuffer) return value.byteLength;
  let n = 0;
  if (value instanceof Map) {
    for (const [k, v] of value) n += payloadBytes(k, seen) + payloadBytes(v, seen);
    return n;
  }
  for (const [k, v] of Object.entries(value)) n += k.length + payloadBytes(v, seen);
  return n;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/floor") return new Response('{"ok":true}');
    if (url.pathname !== "/call") return new Response("not found", { status: 404 });
    const method = env.METHOD ?? "getSnapshot";
    const stub = env.GATEWAY.getByName(GATEWAY_NAME);
    let result: { ok?: boolean; error?: { code?: string } } | undefined;
    try {
      const call = stub[method];
      if (typeof call !== "function") throw new TypeError(`the object has no method ${method} (FANOUT_METHOD)`);
      result = (await Reflect.apply(call, stub, [])) as typeof result;
    } catch (err) {
      // Local bench only; the gateway's errors carry codes, never a token or a secret.
      const message = err instanceof Error ? `${err.name}: ${err.message.slice(0, 200)}` : "call failed";
      return new Response(JSON.stringify({ ok: false, error: message }), { status: 502 });
    }
    const ok = result?.ok !== false;
    // The error's code only (stable, never a secret): why the object had no snapshot.
    const error = ok ? undefined : String(result?.error?.code ?? "unknown");
    const body = url.searchParams.has("bytes") ? { ok, error, bytes: payloadBytes(result) } : { ok, error };
    return new Response(JSON.stringify(body), { status: ok ? 200 : 502 });
  },
};
