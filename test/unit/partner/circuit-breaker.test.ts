import { describe, expect, it } from "vitest";
import { AppError } from "../../../src/errors.ts";
import {
  BREAKER_BASE_COOLDOWN_MS,
  BREAKER_FAILURE_THRESHOLD,
  BREAKER_MAX_COOLDOWN_MS,
  CircuitBreaker,
} from "../../../src/partner/circuit-breaker.ts";

function setup(opts: Partial<ConstructorParameters<typeof CircuitBreaker>[0]> = {}) {
  const clock = {
    t: 1_800_000_000_000,
    now() {
      return this.t;
    },
  };
  return { clock, breaker: new CircuitBreaker({ clock, ...opts }) };
}

function refusal(b: CircuitBreaker): AppError {
  try {
    b.acquire();
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }
  throw new Error("expected acquire() to refuse");
}

function fail(b: CircuitBreaker, n: number) {
  for (let i = 0; i < n; i++) {
    b.acquire();
    b.failure();
  }
}

describe("CircuitBreaker", () => {
  it("starts closed and lets calls through", () => {
    const { breaker } = setup();
    expect(breaker.state()).toEqual({ state: "closed", retryAt: undefined });
    expect(() => breaker.acquire()).not.toThrow();
  });

  it(`opens after ${BREAKER_FAILURE_THRESHOLD} consecutive failures, for the base cool-down`, () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD - 1);
    expect(breaker.state().state).toBe("closed");
    fail(breaker, 1);
    expect(breaker.state()).toEqual({ state: "open", retryAt: clock.t + BREAKER_BASE_COOLDOWN_MS });
    expect(refusal(breaker)).toMatchObject({
      code: "partner_circuit_open",
      status: 503,
      retryAfterS: BREAKER_BASE_COOLDOWN_MS / 1000,
    });
    clock.t += BREAKER_BASE_COOLDOWN_MS - 1500;
    expect(refusal(breaker).retryAfterS).toBe(2);
  });

  it("a success in between resets the consecutive count", () => {
    const { breaker } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD - 1);
    breaker.acquire();
    breaker.success();
    fail(breaker, BREAKER_FAILURE_THRESHOLD - 1);
    expect(breaker.state().state).toBe("closed");
  });

  it("half-open lets exactly one trial through; success closes and resets the cool-down", () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    clock.t += BREAKER_BASE_COOLDOWN_MS;
    expect(breaker.state()).toEqual({ state: "half-open", retryAt: undefined });
    breaker.acquire(); // the trial
    expect(refusal(breaker)).toMatchObject({ code: "partner_circuit_open", retryAfterS: 1 });
    breaker.success();
    expect(breaker.state().state).toBe("closed");
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    expect(refusal(breaker).retryAfterS).toBe(BREAKER_BASE_COOLDOWN_MS / 1000);
  });

  it("a failed trial reopens with a doubled cool-down, capped", () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    let cooldown = BREAKER_BASE_COOLDOWN_MS;
    const seen: number[] = [];
    for (let i = 0; i < 6; i++) {
      clock.t += cooldown;
      breaker.acquire();
      breaker.failure();
      cooldown = Math.min(cooldown * 2, BREAKER_MAX_COOLDOWN_MS);
      seen.push(refusal(breaker).retryAfterS!);
    }
    expect(seen).toEqual([60, 120, 240, 300, 300, 300]);
  });

  it("release() frees the trial slot without a verdict", () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    clock.t += BREAKER_BASE_COOLDOWN_MS;
    breaker.acquire();
    breaker.release();
    expect(breaker.state().state).toBe("half-open");
    expect(() => breaker.acquire()).not.toThrow();
  });

  it("a trial that never reports back loses its slot after the lease", () => {
    const { breaker, clock } = setup({ trialLeaseMs: 5_000 });
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    clock.t += BREAKER_BASE_COOLDOWN_MS;
    breaker.acquire();
    clock.t += 4_999;
    refusal(breaker);
    clock.t += 1;
    expect(() => breaker.acquire()).not.toThrow();
  });

  it("holdUntil: refuses with the Retry-After code and the remaining seconds, then lets calls through", () => {
    const { breaker, clock } = setup();
    breaker.holdUntil(clock.t + 10_000, "partner_rate_limited");
    expect(breaker.state()).toEqual({ state: "closed", retryAt: clock.t + 10_000 });
    expect(refusal(breaker)).toMatchObject({ code: "partner_rate_limited", retryAfterS: 10 });
    clock.t += 9_001;
    expect(refusal(breaker).retryAfterS).toBe(1);
    clock.t += 999;
    expect(() => breaker.acquire()).not.toThrow();
    expect(breaker.state().retryAt).toBeUndefined();
  });

  it("holdUntil: a later window wins; an earlier one does not shorten it", () => {
    const { breaker, clock } = setup();
    breaker.holdUntil(clock.t + 20_000, "partner_unavailable");
    breaker.holdUntil(clock.t + 5_000, "partner_rate_limited");
    expect(refusal(breaker)).toMatchObject({ code: "partner_unavailable", retryAfterS: 20 });
  });

  it("reports whichever of the open breaker and the Retry-After window ends later", () => {
    const { breaker, clock } = setup();
    fail(breaker, BREAKER_FAILURE_THRESHOLD);
    breaker.holdUntil(clock.t + 90_000, "partner_rate_limited");
    expect(refusal(breaker)).toMatchObject({ code: "partner_rate_limited", retryAfterS: 90 });
    expect(breaker.state()).toEqual({ state: "open", retryAt: clock.t + 90_000 });
  });
});
