/**
 * The snapshot feed (issue: the edge as it really is): isolates get the prepared snapshot through
 * the named `SnapshotFeed` fetch entrypoint, whose answers carry the Cache-Control and ETag that let
 * Workers Cache share one object call per upper tier per TTL. Errors are never cacheable, and the
 * feed cannot be reached from outside the Worker.
 */
import { exports } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { FEED_PATH } from "../../src/gateway/snapshot-feed.ts";
import { loadPrepared } from "../../src/vehicles/prepared.ts";
import {
  advanceClock,
  coldStart,
  expectNoLeaks,
  health,
  observe,
  observeJson,
  sandbox,
  sandboxCounts,
  type VehicleListBody,
} from "../support/harness.ts";
import { expectProblem } from "../support/problem.ts";

const feed = () => (exports as unknown as { SnapshotFeed: Fetcher }).SnapshotFeed;
const feedGet = (path = FEED_PATH, init?: RequestInit) => feed().fetch(`https://feed.internal${path}`, init);

beforeEach(async () => {
  await coldStart();
});

describe("the snapshot feed", () => {
  it("a cold isolate's snapshot arrives through the feed: one feed answer from the object, one partner fetch", async () => {
    const first = await observeJson<VehicleListBody>("/v1/vehicles?limit=3");
    expect(first.status).toBe(200);
    expect(first.headers.get("cache-status")).toMatch(/^gateway-object; fwd=miss; stored/);
    for (let i = 0; i < 20; i++) expect((await observe("/v1/vehicles?limit=1")).status).toBe(200);
    const h = await health();
    expect(h.body.gateway.counters).toMatchObject({ feedRequests: 1, partnerRequests: 1 });
    expect(h.body.isolate).toMatchObject({ gatewayCalls: 1, fills: 1 });
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("answers with the prepared snapshot, its ETag, and Cache-Control for the rest of the TTL", async () => {
    const res = await feedGet();
    expect(res.status).toBe(200);
    // Whole seconds left of the 30 s TTL, rounded down (a shared cache must not keep it longer).
    expect(res.headers.get("cache-control")).toMatch(/^public, max-age=(29|30), stale-while-revalidate=120$/);
    const etag = res.headers.get("etag");
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/);
    const fetchedAt = Number(res.headers.get("x-gateway-fetched-at"));
    const p = loadPrepared({
      data: new Uint8Array(await res.arrayBuffer()),
      etag: etag as string,
      fetchedAt,
      count: Number(res.headers.get("x-gateway-count")),
      dropped: Number(res.headers.get("x-gateway-dropped")),
    });
    expect(p.count).toBe(2000);
    // 10 s later the same snapshot is fresh for 20 s more: a shared cache keeps it exactly that long.
    advanceClock(10_000);
    const later = await feedGet();
    expect(later.headers.get("etag")).toBe(etag);
    expect(later.headers.get("cache-control")).toMatch(/^public, max-age=(19|20), stale-while-revalidate=120$/);
    await later.body?.cancel();
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });

  it("an error answer is never cacheable, and carries no secret", async () => {
    await sandbox.faults({ token: { kind: "invalidClient" } });
    const res = await feedGet();
    expect(res.status).toBe(502);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const text = await res.text();
    expect(JSON.parse(text)).toMatchObject({ code: "token_client_rejected", status: 502 });
    await expectNoLeaks({ extra: [text] });
    expect((await sandboxCounts()).vehicles).toBe(0);
  });

  it("is not reachable from outside: no public path leads to it, and it answers only GET /snapshot", async () => {
    for (const path of [FEED_PATH, `/v1${FEED_PATH}`, "/__feed", "/SnapshotFeed/snapshot"]) {
      expectProblem(await observe(path), { status: 404, code: "not_found" });
    }
    for (const [path, method] of [
      ["/", "GET"],
      ["/v1/vehicles", "GET"],
      [FEED_PATH, "POST"],
    ] as const) {
      const res = await feedGet(path, { method });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(res.headers.get("cache-control")).toBe("no-store");
    }
    expect(await sandboxCounts()).toEqual({ token: 0, vehicles: 0, unexpected: 0, steal: 0 });
  });
});
