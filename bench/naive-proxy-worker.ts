/**
 * What a quick implementation does: for every client request, one token request (client
 * credentials, RFC 6749 §4.4) and one partner request, then drop the secret field and answer.
 * No cache, no shared token, no coalescing: partner load grows with client load.
 */
interface Env {
  TOKEN_URL: string;
  VEHICLES_URL: string;
  CLIENT_ID: string;
  CLIENT_SECRET: string;
}

export default {
  async fetch(_request: Request, env: Env): Promise<Response> {
    const tokenRes = await fetch(env.TOKEN_URL, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "client_credentials",
        client_id: env.CLIENT_ID,
        client_secret: env.CLIENT_SECRET,
      }),
    });
    if (!tokenRes.ok) return new Response("token request failed", { status: 502 });
    const { access_token } = (await tokenRes.json()) as { access_token: string };
    const res = await fetch(env.VEHICLES_URL, { headers: { authorization: `Bearer ${access_token}` } });
    if (!res.ok) return new Response("partner request failed", { status: 502 });
    const vehicles = (await res.json()) as Record<string, unknown>[];
    for (const v of vehicles) delete v.fuelCardPin;
    return Response.json({ vehicles, count: vehicles.length });
  },
};
