import { runDurableObjectAlarm } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { advanceClock, coldStart, gatewayStub, get, sandbox } from "../support/harness.ts";

describe("harness", () => {
  beforeEach(coldStart);

  it("serves vehicles from the sandbox through the gateway object", async () => {
    const res = await get("/v1/vehicles?limit=3");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { vehicles: unknown[] };
    expect(body.vehicles).toHaveLength(3);
    const c = await sandbox.counters();
    expect(c.token.total).toBe(1);
    expect(c.vehicles.total).toBe(1);
  });

  it("moves the gateway object's clock: a token past its margin is refreshed by the alarm", async () => {
    await get("/v1/vehicles?limit=1");
    advanceClock(250_000);
    expect(await runDurableObjectAlarm(gatewayStub())).toBe(true);
    const c = await sandbox.counters();
    expect(c.token.total).toBe(2);
  });
});
