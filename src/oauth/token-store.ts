/**
 * Where the token survives a reset: the persisted record (Durable Object storage, or memory), its
 * fingerprint of the settings that obtained it, and the same record as the replicas share it
 * (JSON in their store). The broker (token-broker.ts) decides when to read and write; this module
 * knows the record's shape and never logs the token.
 */
import type { Config } from "../config.ts";
import { errorName } from "../errors.ts";
import type { AccessToken } from "../gateway/types.ts";
import { sha256Hex } from "../hash.ts";
import type { KeyValueStore, Logger } from "../ports.ts";

/** Storage key of the persisted token. */
export const TOKEN_STORE_KEY = "oauth:token";

/** What is persisted: enough to reuse the token after a reset, and to tell whether it is ours. */
export interface StoredToken {
  value: string;
  expiresAt: number;
  obtainedAt: number;
  /** sha256 of the settings that obtained it; any change of them retires the token. */
  fingerprint: string;
}

/** The non-secret identity of a token: the first 16 hex characters of its SHA-256. */
export async function tokenId(value: string): Promise<string> {
  return (await sha256Hex(value)).slice(0, 16);
}

/**
 * The fingerprint of the settings that obtain a token. JSON of an array separates the fields
 * unambiguously (no "a|b" + "c" == "a" + "b|c"); the hash keeps the secret out of storage metadata.
 */
export function settingsFingerprint(
  config: Pick<Config, "tokenUrl" | "clientId" | "clientSecret" | "clientAuth" | "scope">,
): Promise<string> {
  return sha256Hex(
    JSON.stringify([
      "oauth-token-v1",
      config.tokenUrl,
      config.clientId,
      config.clientSecret,
      config.clientAuth,
      config.scope ?? null,
    ]),
  );
}

export function isStoredToken(s: unknown): s is StoredToken {
  if (typeof s !== "object" || s === null) return false;
  const t = s as Partial<StoredToken>;
  return (
    typeof t.value === "string" &&
    typeof t.expiresAt === "number" &&
    typeof t.obtainedAt === "number" &&
    typeof t.fingerprint === "string"
  );
}

/** The token a record holds (its id computed). */
export async function storedAccessToken(stored: StoredToken): Promise<AccessToken> {
  return {
    value: stored.value,
    id: await tokenId(stored.value),
    expiresAt: stored.expiresAt,
    obtainedAt: stored.obtainedAt,
  };
}

/** A record of the replicas' shared store (JSON text), or undefined when absent or unreadable. */
export function parseSharedRecord<T>(raw: string | undefined): T | undefined {
  if (raw === undefined) return undefined;
  try {
    return JSON.parse(raw) as T;
  } catch {
    return undefined;
  }
}

/**
 * The persisted token of one broker: read once after a reset, written after each refresh, deleted
 * when retired. Every store failure is logged (`token_store_failed`) and costs at most one token
 * request after a reset, never the token in hand.
 */
export class TokenStore {
  readonly #store: KeyValueStore;
  readonly #log: Logger;
  readonly #config: Config;
  #fingerprint: Promise<string> | undefined;

  constructor(opts: { store: KeyValueStore; log: Logger; config: Config }) {
    this.#store = opts.store;
    this.#log = opts.log;
    this.#config = opts.config;
  }

  /** The fingerprint of this broker's settings (computed once). */
  fingerprint(): Promise<string> {
    this.#fingerprint ??= settingsFingerprint(this.#config);
    return this.#fingerprint;
  }

  /**
   * The persisted token if there is one and it was obtained with these settings (whether it is
   * still usable is the caller's question). A token of other settings is deleted.
   */
  async load(): Promise<AccessToken | undefined> {
    let stored: unknown;
    try {
      stored = await this.#store.get<StoredToken>(TOKEN_STORE_KEY);
    } catch (err) {
      this.#logFailure("get", err);
      return undefined;
    }
    if (stored === undefined) return undefined;
    if (!isStoredToken(stored)) {
      this.#log.log("warn", "token_store_malformed");
      return undefined;
    }
    if (stored.fingerprint !== (await this.fingerprint())) {
      // A change of client id, secret, token URL, auth method or scope: that token is not ours now.
      this.#log.log("info", "token_retired", { reason: "settings_changed" });
      await this.delete();
      return undefined;
    }
    return storedAccessToken(stored);
  }

  /** Persists the token; returns its record (also what the replicas share). Never rejects. */
  async save(token: AccessToken): Promise<StoredToken> {
    const stored: StoredToken = {
      value: token.value,
      expiresAt: token.expiresAt,
      obtainedAt: token.obtainedAt,
      fingerprint: await this.fingerprint(),
    };
    try {
      await this.#store.put(TOKEN_STORE_KEY, stored);
    } catch (err) {
      // Losing persistence costs one token request after a reset, not this token.
      this.#logFailure("put", err);
    }
    return stored;
  }

  /** Deletes the persisted token (started at once, synchronously). Never rejects. */
  delete(): Promise<void> {
    return this.#store.delete(TOKEN_STORE_KEY).catch((err: unknown) => this.#logFailure("delete", err));
  }

  #logFailure(op: "get" | "put" | "delete", err: unknown): void {
    this.#log.log("warn", "token_store_failed", { op, error: errorName(err) });
  }
}
