/**
 * The runtime's limit: a bare Worker that answers every GET with the same bytes that the
 * gateway serves for the full fleet, held in isolate memory as a string (as the gateway holds
 * its own), so the runtime does the same UTF-8 encoding per answer. The benchmark loads the text
 * once with a PUT of the gateway's own answer. No routing, no headers beyond the content type.
 */
let body: string | undefined;

const HEADERS = { "content-type": "application/json; charset=utf-8" };

export default {
  async fetch(request: Request): Promise<Response> {
    if (request.method === "PUT") {
      body = await request.text();
      return new Response(null, { status: 204 });
    }
    if (body === undefined) return new Response("body not loaded", { status: 503 });
    return new Response(body, { headers: HEADERS });
  },
};
