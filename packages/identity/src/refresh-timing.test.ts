import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { backoffDelayMs, refreshDelayMs } from "./refresh-timing.ts";

const t0 = new Date("2026-01-01T00:00:00Z");
const at = (ms: number) => new Date(t0.getTime() + ms);

describe("refreshDelayMs", () => {
  it("refreshes at 70 % of the remaining lifetime", () => {
    expect(refreshDelayMs({ now: t0, notAfter: at(100_000) })).toBe(70_000);
    expect(refreshDelayMs({ now: t0, notAfter: at(24 * 3600_000 + 20_000) })).toBe((24 * 3600_000 + 20_000) * 0.7);
  });
  it("clamps to at least 10 s and at most 24 h", () => {
    expect(refreshDelayMs({ now: t0, notAfter: at(12_000) })).toBe(10_000);
    expect(refreshDelayMs({ now: t0, notAfter: at(30 * 24 * 3600_000) })).toBe(24 * 3600_000);
  });
  it("never waits past expiry, and refreshes at once when expired", () => {
    expect(refreshDelayMs({ now: t0, notAfter: at(5_000) })).toBe(3_500);
    expect(refreshDelayMs({ now: t0, notAfter: at(-1) })).toBe(0);
  });
  it("always lands strictly before expiry", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 400 * 24 * 3600_000 }), (remaining) => {
        const delay = refreshDelayMs({ now: t0, notAfter: at(remaining) });
        return delay < remaining && delay >= 0 && delay <= 24 * 3600_000;
      }),
    );
  });
});

describe("backoffDelayMs", () => {
  it("doubles up to the cap, minus jitter", () => {
    const base = { initialMs: 1000, maxMs: 8000, jitter: 0.2 };
    expect([0, 1, 2, 3, 4, 40].map((attempt) => backoffDelayMs({ attempt, ...base, random: () => 0 }))).toEqual([1000, 2000, 4000, 8000, 8000, 8000]);
    expect(backoffDelayMs({ attempt: 2, ...base, random: () => 0.5 })).toBe(3600);
    // With the current certificate's end in view: at most a quarter of the time left, never under the first delay.
    const now = new Date(0);
    expect([0, 1, 2, 3].map((attempt) => backoffDelayMs({ attempt, ...base, random: () => 0, notAfter: new Date(9000), now }))).toEqual([1000, 2000, 2250, 2250]);
    expect(backoffDelayMs({ attempt: 3, ...base, random: () => 0, notAfter: new Date(2000), now })).toBe(1000);
    expect(backoffDelayMs({ attempt: 3, ...base, random: () => 0, notAfter: new Date(-1), now })).toBe(8000);
  });
});
