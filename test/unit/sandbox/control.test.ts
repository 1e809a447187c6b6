import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Sandbox, startSandbox } from "../../../sandbox/index.ts";
import { waitFor } from "../../support/wait.ts";

/** What a test running inside workerd does: plain fetch to the control API. */
async function control<T = Record<string, unknown>>(sb: Sandbox, method: string, route: string, body?: unknown) {
  const res = await fetch(`${sb.controlUrl}${route}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as T };
}

async function accessToken(sb: Sandbox): Promise<string> {
  const { id, secret } = sb.clients.post;
  const res = await fetch(sb.tokenUrl, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: id, client_secret: secret }),
  });
  return ((await res.json()) as { access_token: string }).access_token;
}

describe("sandbox control API over HTTP", () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await startSandbox({ port: 0, fleetSize: 20, tickMs: 0 });
  });
  afterAll(async () => {
    await sb.close();
  });

  it("describes itself", async () => {
    const { status, body } = await control(sb, "GET", "");
    expect(status).toBe(200);
    expect(body).toMatchObject({
      url: sb.url,
      tokenUrl: sb.tokenUrl,
      apiUrl: sb.apiUrl,
      clients: sb.clients,
      fleetSize: 20,
      tick: 0,
      tokenTtlS: 300,
    });
  });

  it("sets, lists and clears faults; rejects a bad spec with 400", async () => {
    const set = await control(sb, "POST", "/faults", { vehicles: [{ kind: "status", status: 503, times: 1 }] });
    expect(set.status).toBe(200);
    expect(set.body).toEqual({
      token: [],
      vehicles: [{ fault: { kind: "status", status: 503, times: 1 }, remaining: 1 }],
    });
    const token = await accessToken(sb);
    expect((await fetch(sb.vehiclesUrl, { headers: { authorization: `Bearer ${token}` } })).status).toBe(503);
    const listed = await control<{ vehicles: { remaining: number }[] }>(sb, "GET", "/faults");
    expect(listed.body.vehicles[0]).toMatchObject({ remaining: 0 });
    expect((await control(sb, "DELETE", "/faults")).body).toEqual({ token: [], vehicles: [] });

    const bad = await control(sb, "POST", "/faults", { token: { kind: "explode" } });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/kind/);
    expect((await control(sb, "POST", "/faults", { elsewhere: [] })).status).toBe(400);
  });

  it("counts, resets, revokes, tells secrets, shows the fleet and moves the clock", async () => {
    await control(sb, "POST", "/reset");
    const token = await accessToken(sb);
    const counters = await control(sb, "GET", "/counters");
    expect(counters.body).toMatchObject({ token: { total: 1, issued: 1 }, vehicles: { total: 0 }, unexpected: 0 });

    const secrets = await control(sb, "GET", "/secrets");
    expect(secrets.body.accessTokens).toContain(token);
    expect(secrets.body.fuelCardPins).toEqual(sb.secrets().fuelCardPins);

    expect((await control(sb, "POST", "/revoke", { token })).body).toEqual({ revoked: 1 });
    expect((await fetch(sb.vehiclesUrl, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    const other = await accessToken(sb);
    expect(((await control(sb, "POST", "/revoke")).body.revoked as number) >= 1).toBe(true);
    expect((await fetch(sb.vehiclesUrl, { headers: { authorization: `Bearer ${other}` } })).status).toBe(401);

    const fleetRes = await fetch(`${sb.controlUrl}/fleet`);
    expect(fleetRes.headers.get("x-sandbox-tick")).toBe("0");
    expect(await fleetRes.json()).toEqual(sb.fleet());
    expect((await control(sb, "POST", "/tick", { advance: 3 })).body).toEqual({ tick: 3, tickMs: 0 });
    expect(sb.tick()).toBe(3);

    expect((await control(sb, "POST", "/token-ttl", { seconds: 5 })).body).toEqual({ tokenTtlS: 5 });
    const res = await fetch(sb.tokenUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "client_credentials",
        client_id: sb.clients.post.id,
        client_secret: sb.clients.post.secret,
      }),
    });
    expect(((await res.json()) as { expires_in: number }).expires_in).toBe(5);
    await control(sb, "POST", "/token-ttl", { seconds: 300 });

    expect((await control(sb, "POST", "/counters/reset")).body).toMatchObject({ token: { total: 0 } });
    expect((await control(sb, "GET", "/nope")).status).toBe(404);
    // None of the control calls above were counted, not even the unknown one.
    expect(sb.counters().unexpected).toBe(0);
  });
});

describe("sandbox lifecycle", () => {
  it("starts fast and close() leaves no socket, server or timer behind", async () => {
    const kinds = ["TCPServerWrap", "TCPSocketWrap", "Timeout"];
    const count = () => process.getActiveResourcesInfo().filter((k) => kinds.includes(k)).length;
    const before = count();

    const start = performance.now();
    const sb = await startSandbox({ port: 0 });
    // Well under a second on an idle machine; the margin is for a loaded CI runner.
    expect(performance.now() - start).toBeLessThan(2000);

    // Keep-alive connections, a hung request, a stalled body and a trickle in flight.
    const { id, secret } = sb.clients.post;
    const tokenRes = await fetch(sb.tokenUrl, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", client_id: id, client_secret: secret }),
    });
    const { access_token } = (await tokenRes.json()) as { access_token: string };
    const auth = { headers: { authorization: `Bearer ${access_token}` } };
    await (await fetch(sb.vehiclesUrl, auth)).arrayBuffer();
    sb.setFaults({
      vehicles: [
        { kind: "hang", times: 1 },
        { kind: "slowBody", stallAfterBytes: 10, times: 1 },
        { kind: "slowBody", intervalMs: 1000 },
      ],
    });
    const hung = fetch(sb.vehiclesUrl, auth).catch(() => "dropped");
    const stalled = (await fetch(sb.vehiclesUrl, auth)).text().catch(() => "dropped");
    const trickling = (await fetch(sb.vehiclesUrl, auth)).text().catch(() => "dropped");
    sb.setFaults({ token: { kind: "latency", ms: 60_000 } });
    const delayed = fetch(sb.tokenUrl, { method: "POST" }).catch(() => "dropped");

    expect(count()).toBeGreaterThan(before);
    await sb.close();
    expect(await Promise.all([hung, stalled, trickling, delayed])).toEqual([
      "dropped",
      "dropped",
      "dropped",
      "dropped",
    ]);
    // Client-side sockets see the close asynchronously: give them a moment.
    await waitFor("the client sockets to close", () => count() <= before, 1_000, 20);
    expect(count()).toBeLessThanOrEqual(before);
  });

  it("the CLI prints one line and exits 0 on SIGTERM", async () => {
    const main = join(import.meta.dirname, "../../../sandbox/main.ts");
    const child = spawn(process.execPath, [main, "--port", "0", "--fleet-size", "10"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    await waitFor("the CLI's first line", () => out.includes("\n"), 10_000, 20);
    expect(out).toMatch(/^sandbox: token http:\/\/127\.0\.0\.1:\d+\/auth\/realms\/partner\/.* \(sandbox-only\)/);
    expect(out.trim().split("\n")).toHaveLength(1);
    const tokenUrl = /token (\S+)/.exec(out)![1]!;
    expect((await fetch(tokenUrl, { method: "POST" })).status).toBe(400);
    child.kill("SIGTERM");
    const [code] = await once(child, "exit");
    expect(code).toBe(0);
  }, 20_000);
});
