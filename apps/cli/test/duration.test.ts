import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { describeExpiry, formatDurationMs, parseDurationMs } from "../src/duration.ts";
import { CliError } from "../src/errors.ts";

describe("parseDurationMs", () => {
  it("accepts d, h, m, s units and combinations", () => {
    expect(parseDurationMs("87600h", "--x")).toBe(87_600 * 3_600_000);
    expect(parseDurationMs("30d", "--x")).toBe(30 * 86_400_000);
    expect(parseDurationMs("1h30m", "--x")).toBe(5_400_000);
    expect(parseDurationMs("90s", "--x")).toBe(90_000);
    expect(parseDurationMs("1.5h", "--x")).toBe(5_400_000);
    expect(parseDurationMs("-10m", "--x", { allowNegative: true })).toBe(-600_000);
  });

  it("rejects malformed input with a usage error", () => {
    for (const bad of ["", "10", "h", "10x", "-10m", "1h 30m", "10H", "1e9h", "99999999999d"]) {
      expect(() => parseDurationMs(bad, "--x"), bad).toThrow(CliError);
      try {
        parseDurationMs(bad, "--x");
      } catch (error) {
        expect((error as CliError).code).toBe("ERR_USAGE");
        expect((error as CliError).exitCode).toBe(2);
      }
    }
  });

  it("never throws anything but CliError on arbitrary strings", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (text) => {
        try {
          const ms = parseDurationMs(text, "--x");
          expect(Number.isFinite(ms)).toBe(true);
        } catch (error) {
          expect(error).toBeInstanceOf(CliError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("round-trips whole units", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100_000 }), fc.constantFrom("d", "h", "m", "s"), (n, unit) => {
        const factor = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1_000 }[unit];
        expect(parseDurationMs(`${n}${unit}`, "--x")).toBe(n * factor);
      }),
    );
  });
});

describe("formatDurationMs / describeExpiry", () => {
  it("uses at most two units", () => {
    expect(formatDurationMs(0)).toBe("0s");
    expect(formatDurationMs(45_000)).toBe("45s");
    expect(formatDurationMs(86_340_000)).toBe("23h 59m");
    expect(formatDurationMs(365 * 86_400_000 + 3_600_000 + 5_000)).toBe("365d 1h");
  });

  it("says expires in / expired ago", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    expect(describeExpiry(new Date("2026-01-02T00:00:00Z"), now)).toBe("expires in 1d");
    expect(describeExpiry(new Date("2025-12-31T22:00:00Z"), now)).toBe("expired 2h ago");
  });
});
