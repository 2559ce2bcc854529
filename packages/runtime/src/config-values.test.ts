import { describe, expect, it } from "vitest";
import { ConfigError } from "./errors.ts";
import { parseDurationMs } from "./config-values.ts";

describe("parseDurationMs", () => {
  it("sums unit parts, and refuses numbers without a unit, overlong text and more than 1000 years", () => {
    expect(parseDurationMs("87600h", "--x")).toBe(87_600 * 3_600_000);
    expect(parseDurationMs("1d2h3m4s5ms", "--x")).toBe(93_784_005);
    expect(parseDurationMs("0.5s", "--x")).toBe(500);
    for (const bad of ["7000", "-", "1h 30m", "h", "1y", "1e3s", "1".repeat(10) + "s", "1s".repeat(33)]) {
      expect(() => parseDurationMs(bad, "--x"), bad).toThrow(ConfigError);
    }
    expect(() => parseDurationMs("365001d", "--lifetime")).toThrow(/--lifetime: "365001d" is longer than 1000 years/);
  });

  it("takes a leading minus only when allowed", () => {
    expect(parseDurationMs("-1h", "--not-before", { allowNegative: true })).toBe(-3_600_000);
    expect(() => parseDurationMs("-1h", "--lifetime")).toThrow(/--lifetime: "-1h" is not a duration/);
  });
});
