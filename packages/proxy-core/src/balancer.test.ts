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

describe("endpoints set aside after a failed connect", () => {
  it("are not picked for a backoff doubling from 1 s to 30 s, reset by a success", () => {
    let now = 0;
    const balancer = createBalancer({ now: () => now });
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
