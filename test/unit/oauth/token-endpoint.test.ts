import { describe, expect, it } from "vitest";
import { AppError } from "../../../src/errors.ts";
import type { UpstreamResponse } from "../../../src/http/upstream.ts";
import {
  basicCredentials,
  buildTokenRequest,
  oauthErrorText,
  parseTokenResponse,
  requestToken,
  TOKEN_RESPONSE_MAX_BYTES,
  type TokenEndpointConfig,
  UNREGISTERED_OAUTH_ERROR,
} from "../../../src/oauth/token-endpoint.ts";

const NOW = 1_700_000_000_000;
const SECRET = "s3cr+t%20:/=&?#é x";
const TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
/** A clock standing at NOW. */
const AT_NOW = { now: () => NOW };

const config: TokenEndpointConfig = {
  tokenUrl: "https://auth.example/auth/realms/partner/protocol/openid-connect/token",
  clientId: "gateway:client+1",
  clientSecret: SECRET,
  clientAuth: "client_secret_post",
  scope: undefined,
  tokenTimeoutMs: 1_000,
  tokenDefaultLifetimeS: 300,
};

function res(status: number, body: unknown, headers: Record<string, string> = {}): UpstreamResponse {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  return { status, headers: new Headers({ "content-type": "application/json", ...headers }), text };
}

function parseError(r: UpstreamResponse): AppError {
  try {
    parseTokenResponse(r, NOW, 300);
  } catch (e) {
    expect(e).toBeInstanceOf(AppError);
    const err = e as AppError;
    // Never the token, the secret or the body in what may reach a log or the wire.
    expect(err.message).not.toContain(TOKEN);
    expect(err.message).not.toContain(SECRET);
    expect(JSON.stringify(err.toInfo())).not.toContain(TOKEN);
    return err;
  }
  throw new Error("expected parseTokenResponse to throw");
}

/** RFC 6749 Appendix B: form-decoding, "+" is a space. */
const formDecode = (s: string) => decodeURIComponent(s.replace(/\+/g, " "));

describe("basicCredentials (RFC 6749 §2.3.1)", () => {
  it("form-encodes id and secret before Base64, so + % : / = & ? # and é survive", () => {
    const header = basicCredentials("gateway:client+1", SECRET);
    expect(header.startsWith("Basic ")).toBe(true);
    const decoded = atob(header.slice(6));
    expect(decoded).toMatch(/^[\x21-\x7E]+$/); // pure ASCII after form-encoding
    const colon = decoded.indexOf(":");
    const [id, secret] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
    expect(id).not.toContain(":"); // the id's own ":" is encoded: the first ":" splits
    expect(secret).not.toContain("+" + "t"); // a raw "+" would reach Keycloak as a space
    expect(secret).toContain("%2B");
    expect(secret).toContain("%25");
    expect(secret).toContain("%C3%A9"); // é as UTF-8
    expect(formDecode(id)).toBe("gateway:client+1");
    expect(formDecode(secret)).toBe(SECRET);
  });

  it("matches a plain-ASCII example unchanged", () => {
    expect(basicCredentials("client", "secret")).toBe(`Basic ${btoa("client:secret")}`);
  });
});

describe("buildTokenRequest", () => {
  it("client_secret_post: credentials in the form, no Authorization, no scope unless set", async () => {
    const req = buildTokenRequest(config);
    expect(req.method).toBe("POST");
    expect(req.url).toBe(config.tokenUrl);
    expect(req.headers.get("content-type")).toBe("application/x-www-form-urlencoded");
    expect(req.headers.get("accept")).toBe("application/json");
    expect(req.headers.get("authorization")).toBeNull();
    expect(req.redirect).toBe("manual");
    const form = new URLSearchParams(await req.text());
    expect(form.get("grant_type")).toBe("client_credentials");
    expect(form.get("client_id")).toBe("gateway:client+1");
    expect(form.get("client_secret")).toBe(SECRET);
    expect(form.has("scope")).toBe(false);
  });

  it("client_secret_basic: credentials only in Authorization; scope when configured", async () => {
    const req = buildTokenRequest({ ...config, clientAuth: "client_secret_basic", scope: "vehicles:read openid" });
    expect(req.headers.get("authorization")).toBe(basicCredentials(config.clientId, SECRET));
    const body = await req.text();
    const form = new URLSearchParams(body);
    expect(form.get("grant_type")).toBe("client_credentials");
    expect(form.get("scope")).toBe("vehicles:read openid");
    expect(form.has("client_id")).toBe(false);
    expect(body).not.toContain("s3cr");
  });
});

describe("parseTokenResponse (RFC 6749 §5.1)", () => {
  const ok = (extra: Record<string, unknown>) => res(200, { access_token: TOKEN, token_type: "Bearer", ...extra });

  it("accepts a Keycloak answer", () => {
    const g = parseTokenResponse(ok({ expires_in: 300, refresh_expires_in: 0, scope: "profile" }), NOW, 300);
    expect(g).toEqual({ value: TOKEN, obtainedAt: NOW, expiresAt: NOW + 300_000, lifetimeS: 300 });
  });

  it("compares token_type case-insensitively (§5.1, §7.1)", () => {
    expect(parseTokenResponse(ok({ token_type: "BEARER", expires_in: 60 }), NOW, 300).lifetimeS).toBe(60);
    expect(parseTokenResponse(ok({ token_type: "bearer", expires_in: 60 }), NOW, 300).lifetimeS).toBe(60);
  });

  it("accepts a content type with parameters or a +json suffix", () => {
    const r = ok({ expires_in: 300 });
    r.headers.set("content-type", "application/json; charset=utf-8");
    expect(parseTokenResponse(r, NOW, 300).value).toBe(TOKEN);
    r.headers.set("content-type", "application/vnd.example+json");
    expect(parseTokenResponse(r, NOW, 300).value).toBe(TOKEN);
  });

  it('reads expires_in "300" as 300', () => {
    expect(parseTokenResponse(ok({ expires_in: "300" }), NOW, 120).expiresAt).toBe(NOW + 300_000);
  });

  it("uses the configured default when expires_in is missing or null", () => {
    const g = parseTokenResponse(ok({}), NOW, 120);
    expect(g.lifetimeS).toBe(120);
    expect(g.expiresAt).toBe(NOW + 120_000);
    expect(parseTokenResponse(ok({ expires_in: null }), NOW, 120).lifetimeS).toBe(120);
  });

  it.each([0, -5, 0.5, "abc", "0", "-5", "", true, {}, "3e2"])("refuses expires_in %j", (v) => {
    const err = parseError(ok({ expires_in: v }));
    expect(err.code).toBe("token_response_invalid");
  });

  it("clamps an absurd lifetime to a day", () => {
    expect(parseTokenResponse(ok({ expires_in: 1e12 }), NOW, 300).lifetimeS).toBe(86_400);
  });

  it.each([
    ["missing access_token", { token_type: "Bearer" }],
    ["empty access_token", { access_token: "", token_type: "Bearer" }],
    ["numeric access_token", { access_token: 42, token_type: "Bearer" }],
    ["access_token with a space", { access_token: "a b", token_type: "Bearer" }],
    ["access_token with CRLF", { access_token: "a\r\nx-evil: 1", token_type: "Bearer" }],
    ["missing token_type", { access_token: TOKEN }],
    ["MAC token_type", { access_token: TOKEN, token_type: "mac" }],
  ])("refuses %s", (_, body) => {
    expect(parseError(res(200, body)).code).toBe("token_response_invalid");
  });

  it("refuses an HTML body, a JSON array and broken JSON", () => {
    const html = res(200, `<html><body>${TOKEN}</body></html>`, { "content-type": "text/html" });
    expect(parseError(html).code).toBe("token_response_invalid");
    expect(parseError(html).detail).toBe("not a JSON response");
    expect(parseError(res(200, [TOKEN])).code).toBe("token_response_invalid");
    expect(parseError(res(200, `{"access_token":"${TOKEN}"`)).code).toBe("token_response_invalid");
    const noType = { status: 200, headers: new Headers(), text: JSON.stringify({ access_token: TOKEN }) };
    expect(parseError(noType).code).toBe("token_response_invalid");
  });

  it("treats a 200 that carries error as an error", () => {
    const err = parseError(res(200, { error: "invalid_client", access_token: TOKEN, token_type: "Bearer" }));
    expect(err.code).toBe("token_client_rejected");
    expect(err.detail).toBe("invalid_client");
    expect(parseError(res(200, { error: 7, access_token: TOKEN, token_type: "Bearer" })).code).toBe(
      "token_response_invalid",
    );
  });

  it("refuses a non-200 success status", () => {
    expect(parseError(res(201, { access_token: TOKEN, token_type: "Bearer" })).code).toBe("token_response_invalid");
  });
});

describe("parseTokenResponse errors (RFC 6749 §5.2)", () => {
  it.each([
    [400, "invalid_client"],
    [401, "invalid_client"],
    [400, "unauthorized_client"],
    [400, "invalid_scope"],
    [400, "unsupported_grant_type"],
    [400, "invalid_request"],
  ])("%i %s -> token_client_rejected with the code as detail", (status, code) => {
    const err = parseError(res(status, { error: code, error_description: `Invalid client secret ${SECRET}` }));
    expect(err.code).toBe("token_client_rejected");
    expect(err.detail).toBe(code);
    expect(err.message).not.toContain("Invalid client secret"); // error_description is server prose: not echoed
  });

  it("401 without a body -> token_client_rejected", () => {
    const err = parseError(res(401, "", { "content-type": "text/plain" }));
    expect(err.code).toBe("token_client_rejected");
  });

  it("does not echo a malformed error code", () => {
    const err = parseError(res(400, { error: 'bad"code\\' }));
    expect(err.code).toBe("token_response_invalid");
    expect(err.message).not.toContain("bad");
  });

  it("a 4xx that is no OAuth answer (wrong URL, WAF page) -> token_response_invalid", () => {
    const err = parseError(res(404, "<html>Not Found</html>", { "content-type": "text/html" }));
    expect(err.code).toBe("token_response_invalid");
    expect(err.detail).toBe("HTTP 404 without an OAuth error");
  });

  it.each([429, 503])("%i with Retry-After -> token_endpoint_unavailable + retryAfterS", (status) => {
    const err = parseError(res(status, "busy", { "content-type": "text/plain", "retry-after": "17" }));
    expect(err.code).toBe("token_endpoint_unavailable");
    expect(err.retryAfterS).toBe(17);
  });

  it("reads an HTTP-date Retry-After and caps a huge one at 300 s", () => {
    const date = new Date(NOW + 42_000).toUTCString();
    expect(parseError(res(503, "", { "retry-after": date })).retryAfterS).toBe(42);
    expect(parseError(res(429, "", { "retry-after": "86400" })).retryAfterS).toBe(300);
    expect(parseError(res(503, "")).retryAfterS).toBeUndefined();
  });

  it.each([500, 502, 504, 408])("%i -> token_endpoint_error (transient)", (status) => {
    const err = parseError(res(status, "<html>oops</html>", { "content-type": "text/html" }));
    expect(err.code).toBe("token_endpoint_error");
    expect(err.detail).toBe(`HTTP ${status}`);
  });

  it.each([301, 302, 303, 307, 308])("%i -> token_endpoint_error, redirect refused", (status) => {
    const err = parseError(res(status, "", { location: "https://evil.example/" }));
    expect(err.code).toBe("token_endpoint_error");
    expect(err.detail).toBe("redirect refused");
  });

  // Issue 12, item 2: only registered codes reach the wire; the server's own text goes to the log.
  it("an unregistered error code becomes a fixed detail; its text is only on the error's cause, for the log", () => {
    const evil = "Account suspended - call +1 555 0100 or visit evil.example/pay";
    for (const status of [400, 401, 200]) {
      const err = parseError(res(status, { error: evil }));
      expect(err.code).toBe("token_client_rejected");
      expect(err.detail).toBe(UNREGISTERED_OAUTH_ERROR);
      expect(err.message).not.toContain("evil.example");
      expect(JSON.stringify(err.toInfo())).not.toContain("evil.example");
      expect(oauthErrorText(err)).toBe(evil);
    }
    // A registered code carries no log text; neither does any other error.
    expect(oauthErrorText(parseError(res(400, { error: "invalid_client" })))).toBeUndefined();
    expect(oauthErrorText(new AppError("internal"))).toBeUndefined();
  });

  it("masks the client secret in an unregistered error's log text (an endpoint may echo it)", () => {
    const secret = "plain-secret-0123";
    let caught: unknown;
    try {
      parseTokenResponse(res(400, { error: `bad secret ${secret}` }), NOW, 300, secret);
    } catch (e) {
      caught = e;
    }
    expect(oauthErrorText(caught)).toBe("bad secret [secret]");
  });

  it("a JSON temporarily_unavailable is transient", () => {
    expect(parseError(res(400, { error: "temporarily_unavailable" })).code).toBe("token_endpoint_unavailable");
    expect(parseError(res(400, { error: "server_error" })).code).toBe("token_endpoint_error");
  });
});

describe("requestToken", () => {
  it("sends through fetchUpstream with manual redirects and validates the answer", async () => {
    const seen: Request[] = [];
    const fetchFn = async (input: Request | string | URL) => {
      seen.push(input as Request);
      return Response.json({ access_token: TOKEN, token_type: "Bearer", expires_in: 300 });
    };
    const g = await requestToken(fetchFn, config, AT_NOW);
    expect(g.value).toBe(TOKEN);
    expect(seen).toHaveLength(1);
    expect(seen[0]?.redirect).toBe("manual");
    expect(new URLSearchParams(await seen[0]!.text()).get("client_secret")).toBe(SECRET);
  });

  it("maps a timeout to token_endpoint_timeout", async () => {
    // Hold the request strongly: Node's Request follows the caller's signal through a WeakRef,
    // so an otherwise unreferenced Request may be collected and never see the abort.
    const held: Request[] = [];
    const fetchFn = (input: Request | string | URL) =>
      new Promise<Response>((_, reject) => {
        const req = input as Request;
        held.push(req);
        req.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      });
    await expect(requestToken(fetchFn, { ...config, tokenTimeoutMs: 20 }, AT_NOW)).rejects.toMatchObject({
      code: "token_endpoint_timeout",
    });
  });

  // Issue 12, item 3: a token that is no longer usable when it arrives is never handed out.
  it("refuses a grant that expired while its answer was on the way (3 s to answer expires_in 2)", async () => {
    let now = NOW;
    const clock = { now: () => now };
    const answer = (expiresIn: number) => async () => {
      now += 3_000; // the endpoint takes 3 s
      return Response.json({ access_token: TOKEN, token_type: "Bearer", expires_in: expiresIn });
    };
    const err = await requestToken(answer(2), config, clock).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "token_response_invalid", detail: "token expired before it arrived" });
    expect((err as AppError).message).not.toContain(TOKEN);
    // Still usable on arrival (with its safety remainder left): accepted, counted from the send.
    now = NOW;
    const g = await requestToken(answer(10), config, clock);
    expect(g.expiresAt).toBe(NOW + 10_000);
  });

  it("maps a network failure to token_endpoint_unavailable", async () => {
    const fetchFn = async () => {
      throw new TypeError("fetch failed");
    };
    await expect(requestToken(fetchFn, config, AT_NOW)).rejects.toMatchObject({ code: "token_endpoint_unavailable" });
  });

  it("maps an oversized body to token_response_invalid", async () => {
    const fetchFn = async () =>
      new Response("x".repeat(TOKEN_RESPONSE_MAX_BYTES + 1), { headers: { "content-type": "application/json" } });
    await expect(requestToken(fetchFn, config, AT_NOW)).rejects.toMatchObject({ code: "token_response_invalid" });
  });
});
