/// <reference types="node" />
/**
 * The sandbox's token endpoint: a real OAuth 2.0 authorization server (oidc-provider), configured
 * like the partner's Keycloak realm for the client credentials grant only (RFC 6749 §4.4), with
 * opaque access tokens kept in memory so the resource server can look them up.
 */
import { generateKeyPairSync } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Adapter, AdapterPayload, default as ProviderClass } from "oidc-provider";

/** Keycloak's token path; the gateway's config points at `${origin}${TOKEN_PATH}`. */
export const TOKEN_PATH = "/auth/realms/partner/protocol/openid-connect/token";

/** One registered client. */
export interface ClientCredentials {
  id: string;
  secret: string;
}

/** Why a bearer token was refused. */
export type TokenRejection = "missing" | "unknown" | "expired" | "revoked";

/** A token response about to be written, handed to the rewrite hook of a request. */
interface TokenAnswer {
  status: number;
  /** The JSON object about to be sent; undefined when the answer is not one (a 404, say). */
  body: Record<string, unknown> | undefined;
}

/**
 * Called after oidc-provider produced its answer. Return `true` when you wrote the response
 * yourself (on `res`); return `false` to let oidc-provider write `answer.body` (which you may
 * have changed in place).
 */
type TokenHook = (answer: TokenAnswer, res: ServerResponse) => boolean;

/** The running authorization server. */
export interface TokenServer {
  /** Hands one request to oidc-provider; `hook` sees the answer before it is written. */
  handle(req: IncomingMessage, res: ServerResponse, hook: TokenHook): void;
  /** Looks a bearer token up (RFC 6750 §3.1 `invalid_token` cases). */
  verify(token: string | undefined): Promise<TokenRejection | undefined>;
  /** Every access token issued so far, oldest first. */
  issued(): string[];
  /** Revokes one token, or every token issued so far; returns how many were newly revoked. */
  revoke(token?: string): number;
  /** Lifetime of tokens issued from now on. */
  setTtl(seconds: number): void;
  ttl(): number;
}

let providerClass: typeof ProviderClass | undefined;

/**
 * Loads oidc-provider once. Its module prints "Unsupported runtime" when Node is not an LTS
 * line (Node 24.9 predates 24's LTS): true, harmless here, and noise on every test run.
 */
async function loadProvider(): Promise<typeof ProviderClass> {
  if (providerClass) return providerClass;
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === "string" && args[0].includes("oidc-provider WARNING: Unsupported runtime")) return;
    warn(...args);
  };
  try {
    providerClass = (await import("oidc-provider")).default;
  } finally {
    console.warn = warn;
  }
  return providerClass;
}

/**
 * Our own in-memory adapter instead of oidc-provider's quick-start one: that one holds at most
 * 1,000 entries (a long benchmark issues more) and warns at startup. One store per sandbox.
 */
function memoryAdapter(onSaved: (model: string, id: string) => void): (model: string) => Adapter {
  const store = new Map<string, { payload: AdapterPayload; expiresAt: number }>();
  const get = (key: string): AdapterPayload | undefined => {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  };
  return (model) => ({
    async upsert(id, payload, expiresIn) {
      // Keep entries a little past expiry so a lookup can still say "expired" rather than "unknown".
      const graceMs = 3_600_000;
      const expiresAt = expiresIn === undefined ? Number.POSITIVE_INFINITY : Date.now() + expiresIn * 1000 + graceMs;
      store.set(`${model}:${id}`, { payload, expiresAt });
      onSaved(model, id);
    },
    async find(id) {
      return get(`${model}:${id}`);
    },
    async findByUserCode() {
      return undefined;
    },
    async findByUid() {
      return undefined;
    },
    async consume(id) {
      const payload = get(`${model}:${id}`);
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    },
    async destroy(id) {
      store.delete(`${model}:${id}`);
    },
    async revokeByGrantId(grantId) {
      for (const [key, entry] of store) if (entry.payload.grantId === grantId) store.delete(key);
    },
  });
}

/** Starts an authorization server whose issuer is the sandbox origin. Takes a few ms. */
export async function createTokenServer(opts: {
  issuer: string;
  post: ClientCredentials;
  basic: ClientCredentials;
  ttlS: number;
}): Promise<TokenServer> {
  const Provider = await loadProvider();
  let ttlS = opts.ttlS;
  const issued: string[] = [];
  const revoked = new Set<string>();
  const hooks = new WeakMap<IncomingMessage, TokenHook>();

  // A fresh signing key: oidc-provider needs one to start (it signs nothing for opaque tokens),
  // and its built-in development key comes with a warning.
  const { privateKey } = generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" });

  const client = (c: ClientCredentials, method: "client_secret_post" | "client_secret_basic") => ({
    client_id: c.id,
    client_secret: c.secret,
    // Exactly one method per client, as Keycloak's "client authenticator" setting does.
    token_endpoint_auth_method: method,
    grant_types: ["client_credentials"],
    response_types: [],
    redirect_uris: [],
  });

  const provider = new Provider(opts.issuer, {
    clients: [client(opts.post, "client_secret_post"), client(opts.basic, "client_secret_basic")],
    clientAuthMethods: ["client_secret_post", "client_secret_basic"],
    adapter: memoryAdapter((model, id) => {
      if (model === "ClientCredentials") issued.push(id);
    }),
    jwks: { keys: [{ ...jwk, use: "sig" }] },
    // The key above is Ed25519; the default (RS256) would make every client invalid.
    clientDefaults: { id_token_signed_response_alg: "EdDSA" },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
    },
    routes: { token: TOKEN_PATH },
    // A function so the lifetime can change at run time (setTtl); RFC 6749 §4.4.3: no refresh token.
    ttl: { ClientCredentials: () => ttlS },
    // Keycloak's `scope` default; the gateway may send PARTNER_SCOPE, which must then be known.
    scopes: ["openid", "profile", "email", "vehicles"],
  });
  // The issuer is plain http on loopback: tell Koa not to look for a proxy.
  provider.proxy = false;

  const registered = new Map([
    [opts.post.id, "client_secret_post"],
    [opts.basic.id, "client_secret_basic"],
  ]);

  // Runs around oidc-provider's own handling, after it has set the answer and before Koa writes it.
  provider.use(async (ctx, next) => {
    await next();
    const hook = hooks.get(ctx.req);
    if (!hook) return;
    // oidc-provider (like Keycloak) accepts either secret method from any secret client. We hold
    // each client to its registered method, so a gateway configured for one cannot pass using the other.
    const clientId = (ctx.oidc as { client?: { clientId: string } } | undefined)?.client?.clientId;
    const used = /^basic /i.test(ctx.get("authorization")) ? "client_secret_basic" : "client_secret_post";
    if (ctx.status === 200 && clientId !== undefined && registered.get(clientId) !== used) {
      // Unmint the token it just issued: it never leaves the sandbox.
      const minted = (ctx.body as { access_token?: unknown } | undefined)?.access_token;
      if (typeof minted === "string") {
        await provider.ClientCredentials.adapter.destroy(minted);
        issued.splice(issued.lastIndexOf(minted), 1);
      }
      ctx.status = 401;
      ctx.set("www-authenticate", 'Basic realm="partner"');
      ctx.body = {
        error: "invalid_client",
        error_description:
          "the provided authentication mechanism does not match the registered client authentication method",
      };
    }
    const body = ctx.body;
    const isObject = typeof body === "object" && body !== null && !Buffer.isBuffer(body);
    const answer: TokenAnswer = { status: ctx.status, body: isObject ? (body as Record<string, unknown>) : undefined };
    if (hook(answer, ctx.res)) {
      // We wrote the response ourselves (slow body): Koa must not touch it.
      ctx.respond = false;
      return;
    }
    if (answer.body) ctx.body = answer.body;
  });
  const callback = provider.callback();

  return {
    handle(req, res, hook) {
      hooks.set(req, hook);
      void callback(req, res);
    },
    async verify(token) {
      if (!token) return "missing";
      const found = await provider.ClientCredentials.find(token, { ignoreExpiration: true });
      if (!found) return "unknown";
      if (revoked.has(token)) return "revoked";
      if (found.isExpired) return "expired";
      return undefined;
    },
    issued: () => [...issued],
    revoke(token) {
      const targets = token === undefined ? issued : issued.filter((t) => t === token);
      let n = 0;
      for (const t of targets) {
        if (!revoked.has(t)) {
          revoked.add(t);
          n++;
        }
      }
      return n;
    },
    setTtl(seconds) {
      ttlS = seconds;
    },
    ttl: () => ttlS,
  };
}
