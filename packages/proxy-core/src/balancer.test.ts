import { describe, expect, it } from "vitest";
import { isLoopback } from "@meshtls/runtime";
import { createBalancer, endpointKey } from "./balancer.js";
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
