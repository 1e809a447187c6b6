/**
 * The error contract of this API (RFC 9457 problem+json) as the integration tests assert it, and
 * the check that no answer shows internals. Only `expect`: no cloudflare: or node: imports.
 */
import { expect } from "vitest";

/** An answer read in full: `Observed` (harness.ts) and `Seen` (leak-scan.ts) are both one. */
export interface ReadAnswer {
  status: number;
  headers: Headers;
  text: string;
}

/** An RFC 9457 problem document as the gateway writes it. */
export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  code: string;
  detail?: string;
  instance?: string;
  parameter?: string;
  [key: string]: unknown;
}

/** The members a problem document of this API may have. */
export const PROBLEM_MEMBERS = [
  "type",
  "title",
  "status",
  "code",
  "detail",
  "instance",
  "parameter",
  "settings",
  "authentication",
] as const;

/** Texts of the sandbox's fault answers and 401s: none may reach a client. */
export const PARTNER_TEXTS = [
  "<html",
  "<!DOCTYPE",
  "Please try again later",
  "Maintenance",
  "Internal Server Error",
  "Service Unavailable",
  "Moved",
  "too_many_requests",
  "invalid_token",
  "Token is not active",
  "Token expired",
  "Token revoked",
  "error_description",
  "Invalid client or Invalid client credentials",
  "Token issuance temporarily failed",
  "stolen",
  "127.0.0.2",
  "/steal",
  "Bearer realm",
  "sandbox_bug",
];

/**
 * Asserts an RFC 9457 problem answer: the status and `code` (whose type it names), a title,
 * problem+json, `no-store`, `nosniff`, only our own members, no stack trace or error name, no
 * partner text, no partner header passed through; and `Retry-After` when `want` names it
 * (`"absent"`, a number, or an inclusive [min, max]). Returns the parsed body.
 */
export function expectProblem(
  seen: ReadAnswer,
  want: { status: number; code: string; retryAfter?: "absent" | number | [number, number] },
): ProblemBody {
  const where = `${want.code}: ${seen.text.slice(0, 200)}`;
  expect(seen.status, where).toBe(want.status);
  expect(seen.headers.get("content-type"), where).toBe("application/problem+json");
  expect(seen.headers.get("cache-control"), where).toBe("no-store");
  expect(seen.headers.get("x-content-type-options"), where).toBe("nosniff");
  const body = JSON.parse(seen.text) as ProblemBody;
  expect(body, where).toMatchObject({
    type: `urn:sharenow-gateway:problem:${want.code}`,
    status: want.status,
    code: want.code,
  });
  expect(typeof body.title, where).toBe("string");
  const members: readonly string[] = PROBLEM_MEMBERS;
  for (const key of Object.keys(body)) expect(members.includes(key), `member ${key} in ${where}`).toBe(true);
  const retryAfter = seen.headers.get("retry-after");
  if (want.retryAfter === "absent") expect(retryAfter, where).toBeNull();
  else if (want.retryAfter !== undefined) {
    expect(retryAfter, where).toMatch(/^\d+$/);
    const n = Number(retryAfter);
    const [min, max] = typeof want.retryAfter === "number" ? [want.retryAfter, want.retryAfter] : want.retryAfter;
    expect(n, where).toBeGreaterThanOrEqual(min);
    expect(n, where).toBeLessThanOrEqual(max);
  }
  // No internal error names in a problem (nor the word stack anywhere).
  expect(seen.text, where).not.toMatch(/stack|TypeError|AppError/);
  expectNoInternals(seen);
  return body;
}

/** No stack trace, no partner text, no partner header: for any answer (problem or not). */
export function expectNoInternals(seen: ReadAnswer): void {
  const where = seen.text.slice(0, 200);
  expect(seen.text, where).not.toMatch(/\n\s+at\s|\bat\s+\S+\s+\(|\.(?:ts|js|mjs):\d+|\bstack\b/);
  for (const t of PARTNER_TEXTS) expect(seen.text, `partner text "${t}" in ${where}`).not.toContain(t);
  for (const h of ["www-authenticate", "location", "set-cookie", "server", "x-powered-by"]) {
    expect(seen.headers.get(h), `header ${h}`).toBeNull();
  }
}
