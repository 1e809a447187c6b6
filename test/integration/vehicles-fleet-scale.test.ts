/**
 * The real fleet's size: 20,000 vehicles (about 8 MB of JSON) through the Worker in workerd, the
 * gateway object and the Cache API. One transfer per isolate for a cold burst, and a paginated
 * walk that returns every VIN exactly once.
 */
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { coldStart, health, observe, sandbox, sandboxCounts, type VehicleListBody } from "../support/harness.ts";

const FLEET = 20_000;

beforeEach(async () => {
  await coldStart();
  await sandbox.fleetSize(FLEET);
});
afterAll(async () => {
  await sandbox.reset();
});

describe("fleet scale: 20,000 vehicles", () => {
  it("300 concurrent cold requests: all answered, one object call and one L1 load for the isolate", async () => {
    const queries = ["limit=50", "near=52.52,13.405&radius=2000&limit=20", "bbox=13.3,52.45,13.5,52.6&limit=100"];
    const answers = await Promise.all(
      Array.from({ length: 300 }, (_, i) => observe(`/v1/vehicles?${queries[i % queries.length]}`)),
    );
    const fetchedAt = new Set<string>();
    for (const a of answers) {
      expect(a.status).toBe(200);
      const body = JSON.parse(a.text) as VehicleListBody;
      fetchedAt.add(body.fetchedAt);
    }
    expect(fetchedAt.size).toBe(1);
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
    const h = await health();
    expect(h.body.gateway.snapshot.count).toBe(FLEET);
    expect(h.body.isolate).toMatchObject({ gatewayCalls: 1, cacheReads: 0, fills: 1, joined: 299, takeovers: 0 });
  });

  it("a paginated walk (limit 5,000, following next) returns every VIN once, in VIN order", async () => {
    const vins: string[] = [];
    let path: string | undefined = "/v1/vehicles";
    let pages = 0;
    let total = 0;
    while (path !== undefined) {
      const a = await observe(path);
      expect(a.status).toBe(200);
      const body = JSON.parse(a.text) as VehicleListBody & { next?: string };
      total = body.total;
      vins.push(...body.vehicles.map((v) => v.vin));
      expect(a.headers.get("link") ?? undefined).toBe(
        body.next === undefined ? undefined : `<${body.next}>; rel="next"`,
      );
      path = body.next;
      pages++;
      expect(pages).toBeLessThanOrEqual(5);
    }
    expect(total).toBe(FLEET);
    expect(pages).toBe(4);
    expect(vins).toHaveLength(FLEET);
    expect(new Set(vins).size).toBe(FLEET);
    expect([...vins].sort()).toEqual(vins);
    const fleet = (await sandbox.fleet()) as { vin: string }[];
    expect(new Set(vins)).toEqual(new Set(fleet.map((v) => v.vin.toUpperCase())));
    expect(await sandboxCounts()).toEqual({ token: 1, vehicles: 1, unexpected: 0, steal: 0 });
  });
});
