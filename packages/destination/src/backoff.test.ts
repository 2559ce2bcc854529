import { describe, expect, it } from "vitest";
import { RECONNECT_BACKOFF, reconnectDelayMs } from "./backoff.js";

describe("reconnectDelayMs", () => {
  it("doubles from 1 s to the 30 s cap", () => {
    const delays = Array.from({ length: 8 }, (_, attempt) => reconnectDelayMs({ ...RECONNECT_BACKOFF, attempt, random: () => 0 }));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    expect(reconnectDelayMs({ ...RECONNECT_BACKOFF, attempt: 10_000, random: () => 0 })).toBe(30_000);
  });

  it("shortens each delay by 0–20 %, never lengthens it", () => {
    expect(reconnectDelayMs({ ...RECONNECT_BACKOFF, attempt: 0, random: () => 0.999_999 })).toBe(800);
    expect(reconnectDelayMs({ ...RECONNECT_BACKOFF, attempt: 9, random: () => 0.5 })).toBe(27_000);
    for (let attempt = 0; attempt < 12; attempt++) {
      const delay = reconnectDelayMs({ ...RECONNECT_BACKOFF, attempt, random: Math.random });
      const base = Math.min(30_000, 1000 * 2 ** attempt);
      expect(delay).toBeGreaterThanOrEqual(base * 0.8);
      expect(delay).toBeLessThanOrEqual(base);
    }
  });
});
