import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DEFAULT_CLIENTS, type Sandbox, startSandbox } from "../../../sandbox/index.ts";

/** RFC 6749 §2.3.1 / Appendix B: application/x-www-form-urlencoded, then Base64 of "id:secret". */
const formEncode = (s: string) => new URLSearchParams([["", s]]).toString().slice(1);
const basic = (id: string, secret: string) => `Basic ${btoa(`${formEncode(id)}:${formEncode(secret)}`)}`;
const FORM = { "content-type": "application/x-www-form-urlencoded" };

async function tokenPost(sb: Sandbox, id = sb.clients.post.id, secret = sb.clients.post.secret): Promise<Response> {
  const body = new URLSearchParams({ grant_type: "client_credentials", client_id: id, client_secret: secret });
  return fetch(sb.tokenUrl, { method: "POST", headers: FORM, body });
}

async function tokenBasic(sb: Sandbox, authorization = basic(sb.clients.basic.id, sb.clients.basic.secret)) {
  return fetch(sb.tokenUrl, {
    method: "POST",
    headers: { ...FORM, authorization },
    body: "grant_type=client_credentials",
  });
}

async function accessToken(sb: Sandbox): Promise<string> {
  const res = await tokenPost(sb);
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

const vehicles = (sb: Sandbox, token?: string) =>
  fetch(sb.vehiclesUrl, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });

describe("sandbox token endpoint and vehicles resource server", () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await startSandbox({ port: 0, tickMs: 0 });
  });
  afterAll(async () => {
    await sb.close();
  });
  beforeEach(() => sb.reset());

  it("listens on loopback with Keycloak's token path and default clients", () => {
    expect(sb.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(sb.tokenUrl).toBe(`${sb.url}/auth/realms/partner/protocol/openid-connect/token`);
    expect(sb.apiUrl).toBe(sb.url);
    expect(sb.vehiclesUrl).toBe(`${sb.url}/api/rental/partner/vehicles`);
    expect(sb.clients).toEqual(DEFAULT_CLIENTS);
    for (const c of Object.values(sb.clients)) for (const ch of "+%:/=&?#") expect(c.secret).toContain(ch);
  });

  it("issues an opaque Bearer token to the client_secret_post client", async () => {
    const res = await tokenPost(sb);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toEqual({ access_token: expect.any(String), expires_in: 300, token_type: "Bearer" });
    expect(body.access_token as string).not.toContain(".");
    expect(body).not.toHaveProperty("refresh_token");
  });

  it("issues a token to the client_secret_basic client when id and secret are form-encoded first", async () => {
    const res = await tokenBasic(sb);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { token_type: string }).token_type).toBe("Bearer");
  });

  it("refuses Basic without form-encoding, each client with the other's method, and a wrong secret", async () => {
    const { basic: b, post: p } = sb.clients;
    // Unencoded, `%:/` is not valid percent-encoding and `+` would read as a space.
    const raw = await tokenBasic(sb, `Basic ${btoa(`${b.id}:${b.secret}`)}`);
    expect(raw.status).toBeGreaterThanOrEqual(400);
    expect((await tokenBasic(sb, basic(p.id, p.secret))).status).toBe(401);
    expect((await tokenPost(sb, b.id, b.secret)).status).toBe(401);
    const wrong = await tokenPost(sb, p.id, `${p.secret}x`);
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: string }).error).toBe("invalid_client");
    const grant = await fetch(sb.tokenUrl, {
      method: "POST",
      headers: FORM,
      body: new URLSearchParams({ grant_type: "password", client_id: p.id, client_secret: p.secret }),
    });
    expect(grant.status).toBe(400);
    expect(sb.counters().token).toMatchObject({ total: 5, issued: 0, rejected: 5 });
  });

  it("serves the whole fleet, every field, identical to fleet() within a tick", async () => {
    const token = await accessToken(sb);
    const res = await vehicles(sb, token);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    const text = await res.text();
    const list = JSON.parse(text) as Record<string, unknown>[];
    expect(list).toHaveLength(2000);
    expect(list).toEqual(sb.fleet());
    expect(await (await vehicles(sb, token)).text()).toBe(text);
    sb.advanceTick();
    expect(await (await vehicles(sb, token)).text()).not.toBe(text);
  });

  it("is deterministic for a seed across sandboxes", async () => {
    const other = await startSandbox({ port: 0, tickMs: 0, fleetSize: 50, seed: 1 });
    const third = await startSandbox({ port: 0, tickMs: 0, fleetSize: 50, seed: 2 });
    try {
      expect(other.fleet()).toEqual(sb.fleet().slice(0, 50));
      expect(third.fleet()).not.toEqual(other.fleet());
    } finally {
      await Promise.all([other.close(), third.close()]);
    }
  });

  it("answers 401 per RFC 6750 §3 for a missing, unknown or revoked token", async () => {
    const missing = await vehicles(sb);
    expect(missing.status).toBe(401);
    expect(missing.headers.get("www-authenticate")).toBe('Bearer realm="partner"');

    const garbage = await vehicles(sb, "not-a-token");
    expect(garbage.status).toBe(401);
    expect(garbage.headers.get("www-authenticate")).toMatch(/^Bearer .*error="invalid_token"/);

    const token = await accessToken(sb);
    const second = await accessToken(sb);
    expect((await vehicles(sb, token)).status).toBe(200);
    // Counts every token not yet revoked, including those of earlier tests.
    expect(sb.revokeAll()).toBeGreaterThanOrEqual(2);
    const revoked = await vehicles(sb, token);
    expect(revoked.status).toBe(401);
    expect(revoked.headers.get("www-authenticate")).toMatch(/error="invalid_token"/);
    expect((await vehicles(sb, second)).status).toBe(401);
    // A token issued after the revocation works.
    expect((await vehicles(sb, await accessToken(sb))).status).toBe(200);

    // The scheme is case-insensitive (RFC 7235 §2.1).
    const fresh = await accessToken(sb);
    expect((await fetch(sb.vehiclesUrl, { headers: { authorization: `bearer ${fresh}` } })).status).toBe(200);

    expect(sb.counters().vehicles).toEqual({
      total: 7,
      byStatus: { 200: 3, 401: 4 },
      byFault: {},
      served: 3,
      rejected: { missing: 1, unknown: 1, expired: 0, revoked: 2 },
    });
  });

  it("answers 401 for an expired token (short lifetime)", async () => {
    sb.setTokenTtl(1);
    try {
      const res = await tokenPost(sb);
      const body = (await res.json()) as { access_token: string; expires_in: number };
      expect(body.expires_in).toBe(1);
      expect((await vehicles(sb, body.access_token)).status).toBe(200);
      // exp is whole seconds: after 2 s it has certainly passed.
      await new Promise((r) => setTimeout(r, 2100));
      const expired = await vehicles(sb, body.access_token);
      expect(expired.status).toBe(401);
      expect(expired.headers.get("www-authenticate")).toMatch(/error="invalid_token"/);
      expect(sb.counters().vehicles.rejected.expired).toBe(1);
    } finally {
      sb.setTokenTtl(300);
    }
  });

  it("counts other paths as unexpected and answers 404; control calls are not counted", async () => {
    const res = await fetch(`${sb.url}/.well-known/openid-configuration`);
    expect(res.status).toBe(404);
    await fetch(`${sb.url}/api/rental/partner/vehicles/extra`);
    await fetch(`${sb.controlUrl}/counters`);
    const c = sb.counters();
    expect(c.unexpected).toBe(2);
    expect(c.unexpectedRequests).toEqual([
      "GET /.well-known/openid-configuration",
      "GET /api/rental/partner/vehicles/extra",
    ]);
    expect(c.token.total + c.vehicles.total).toBe(0);
  });

  it("lists every issued token and every PIN in secrets()", async () => {
    const token = await accessToken(sb);
    const s = sb.secrets();
    expect(s.accessTokens).toContain(token);
    expect(s.fuelCardPins).toHaveLength(2000);
    expect(s.fuelCardPins).toEqual(sb.fleet().map((v) => v.fuelCardPin));
    expect(s.clientSecrets).toEqual([sb.clients.post.secret, sb.clients.basic.secret]);
  });

  it("takes configured client ids and secrets", async () => {
    const custom = await startSandbox({
      port: 0,
      fleetSize: 1,
      clients: { post: { id: "p:1", secret: "a b+c" }, basic: { id: "b:1 x", secret: "a:+% b" } },
    });
    try {
      expect((await tokenPost(custom)).status).toBe(200);
      expect((await tokenBasic(custom)).status).toBe(200);
    } finally {
      await custom.close();
    }
  });
});
