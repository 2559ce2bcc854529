import { describe, expect, it } from "vitest";
import { isLoopback } from "@meshtls/runtime";
import { createBalancer, endpointKey } from "./balancer.js";
import type { Balancer } from "./balancer.js";
import type { Endpoint } from "./sources.js";

const ep = (port: number, weight = 1): Endpoint => ({ address: "10.0.0.1", port, weight, labels: {} });

describe("power-of-two-choices balancer", () => {
  it("prefers the less loaded of two candidates and spreads load", () => {
    const balancer = createBalancer();
    const endpoints = [ep(1), ep(2), ep(3), ep(4)];
    const releases: (() => void)[] = [];
    for (let i = 0; i < 400; i++) {
      const picked = balancer.pick(endpoints);
      expect(picked).toBeDefined();
      if (picked) releases.push(balancer.acquire(picked));
    }
    const loads = endpoints.map((e) => balancer.load(e));
    expect(loads.reduce((a, b) => a + b, 0)).toBe(400);
    // P2C keeps the spread tight (uniform random alone drifts much further).
    expect(Math.max(...loads) - Math.min(...loads)).toBeLessThanOrEqual(6);
    for (const release of releases) release();
    expect(endpoints.map((e) => balancer.load(e))).toEqual([0, 0, 0, 0]);
  });

  it("weights load, excludes tried endpoints, and releases once", () => {
    const balancer = createBalancer({ random: () => 0 });
    const heavy = ep(1, 1);
    const light = ep(2, 10);
    for (let i = 0; i < 5; i++) balancer.acquire(heavy);
    for (let i = 0; i < 5; i++) balancer.acquire(light);
    expect(balancer.pick([heavy, light])).toBe(light);
    expect(balancer.pick([heavy, light], new Set([endpointKey(light)]))).toBe(heavy);
    expect(balancer.pick([heavy], new Set([endpointKey(heavy)]))).toBeUndefined();
    const release = balancer.acquire(heavy);
    release();
    release();
    expect(balancer.load(heavy)).toBe(5);
  });
});

/**
 * Simulated milliseconds until `balancer` first picks `target` over `warm`, `warm` sampled at `sampleMs` every
 * `stepMs` meanwhile (`clock.now` moves on); undefined if not within `limitMs`.
 */
function msUntilPicked(balancer: Balancer, clock: { now: number }, warm: Endpoint, target: Endpoint, sampleMs: number, stepMs: number, limitMs: number): number | undefined {
  for (const start = clock.now; clock.now - start <= limitMs; clock.now += stepMs) {
    balancer.observe(warm, sampleMs);
    if (balancer.pick([warm, target]) === target) return clock.now - start;
  }
  return undefined;
}

describe("peak-EWMA latency estimates", () => {
  // tower's PeakEwma `default_decay`: a new endpoint starts at the default RTT, which decays toward 0.
  it("a new endpoint is picked over a warm one once its default RTT has decayed below the warm one's cost", () => {
    const clock = { now: 0 };
    const balancer = createBalancer({ now: () => clock.now, defaultRttMs: 30, decayMs: 10_000 });
    const [warm, added] = [ep(1), ep(2)];
    // The warm one's estimate goes from the default to its 2 ms samples over a minute of them.
    for (; clock.now <= 60_000; clock.now += 100) balancer.observe(warm, 2);
    expect(balancer.pick([warm, added])).toBe(warm);
    // 30 ms · e^(-t / 10 s) < 2 ms once t > 10 s · ln 15 ≈ 27.1 s.
    const firstPicked = msUntilPicked(balancer, clock, warm, added, 2, 100, 60_000);
    expect(firstPicked).toBeGreaterThan(20_000);
    expect(firstPicked).toBeLessThan(30_000);
  });

  it("a peak is taken at once and forgotten with the decay; a failed endpoint is tried again", () => {
    const clock = { now: 0 };
    const balancer = createBalancer({ now: () => clock.now, random: () => 0, decayMs: 10_000, failurePenaltyMs: 5000 });
    const [a, b] = [ep(1), ep(2)];
    for (; clock.now <= 100_000; clock.now += 100) {
      balancer.observe(a, 1);
      balancer.observe(b, 1);
    }
    balancer.fail(a);
    expect(balancer.pick([a, b])).toBe(b);
    clock.now += 10_000;
    balancer.observe(b, 1);
    expect(balancer.pick([a, b])).toBe(b);
    // 5 s · e^(-t / 10 s) falls below b's ~1 ms after ~85 s of no sample on a.
    const triedAgain = msUntilPicked(balancer, clock, b, a, 1, 500, 120_000);
    expect(triedAgain).toBeDefined();
    expect(triedAgain).toBeLessThan(120_000);
  });

  it("refuses a decay that is not above 0 or a negative default RTT (every estimate would be NaN)", () => {
    for (const options of [{ decayMs: 0 }, { decayMs: -1 }, { decayMs: Number.NaN }, { defaultRttMs: -1 }, { defaultRttMs: Number.NaN }]) {
      expect(() => createBalancer(options)).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    }
  });

  it("keeps at most 4,096 estimates however many endpoints come and go", () => {
    let now = 0;
    const balancer = createBalancer({ now: () => now });
    for (let port = 1; port <= 20_000; port++) {
      now += 1;
      balancer.fail(ep(port));
    }
    // The latest failure is still known (5 s, so a fresh endpoint at the 30 ms default wins); the first was dropped (a fresh one again, so it wins).
    expect(balancer.pick([ep(20_000), ep(30_000)])).toEqual(ep(30_000));
    expect(balancer.pick([ep(1), ep(20_000)])).toEqual(ep(1));
  });
});

describe("endpoints set aside after a failed connect", () => {
  it("are not picked for a backoff doubling from 1 s to 30 s, reset by a success", () => {
    let now = 0;
    // No decay within the test: every endpoint costs the default, so all of them are picked once none is set aside.
    const balancer = createBalancer({ now: () => now, decayMs: Number.POSITIVE_INFINITY });
    const [a, b, c] = [ep(1), ep(2), ep(3)];
    const endpoints = [a, b, c];
    const picks = (): Set<number> => new Set(Array.from({ length: 60 }, () => balancer.pick(endpoints)?.port ?? 0));
    expect(balancer.setAside(a)).toBe(1000);
    expect(balancer.isSetAside(a)).toBe(true);
    expect(picks()).toEqual(new Set([2, 3]));
    now = 1000;
    expect(balancer.isSetAside(a)).toBe(false);
    expect(picks()).toEqual(new Set([1, 2, 3]));
    expect([balancer.setAside(a), balancer.setAside(a), balancer.setAside(a), balancer.setAside(a), balancer.setAside(a), balancer.setAside(a)]).toEqual([2000, 4000, 8000, 16_000, 30_000, 30_000]);
    now = 29_999 + 1000;
    expect(balancer.isSetAside(a)).toBe(true);
    balancer.connected(a);
    expect(balancer.isSetAside(a)).toBe(false);
    expect(balancer.setAside(a)).toBe(1000);
  });

  it("are all picked from when every one is set aside (availability fails open), tried ones still excluded", () => {
    const balancer = createBalancer({ now: () => 0, random: () => 0 });
    const [a, b] = [ep(1), ep(2)];
    balancer.setAside(a);
    balancer.setAside(b);
    expect(balancer.pick([a, b])).toBeDefined();
    expect(balancer.pick([a, b], new Set([endpointKey(a)]))).toBe(b);
    expect(balancer.pick([a, b], new Set([endpointKey(a), endpointKey(b)]))).toBeUndefined();
    // One back: only it is picked.
    balancer.connected(b);
    expect(new Set(Array.from({ length: 20 }, () => balancer.pick([a, b])))).toEqual(new Set([b]));
  });
});

describe("admin loopback check", () => {
  it("accepts 127/8, ::1 and mapped loopback only", () => {
    expect(isLoopback("127.0.0.1")).toBe(true);
    expect(isLoopback("127.0.1.2")).toBe(true);
    expect(isLoopback("::1")).toBe(true);
    expect(isLoopback("::ffff:127.0.0.1")).toBe(true);
    expect(isLoopback("10.0.0.1")).toBe(false);
    expect(isLoopback("::ffff:10.0.0.1")).toBe(false);
    expect(isLoopback("128.0.0.1")).toBe(false);
    expect(isLoopback(undefined)).toBe(false);
  });
});
