import { describe, expect, it } from "vitest";
import { runCli } from "./helpers.ts";

describe("usage errors exit 2 with a message and no stack trace", () => {
  const cases: [string, string[], RegExp][] = [
    ["unknown command", ["frobnicate"], /^meshtls: unknown command 'frobnicate'/],
    ["unknown option", ["token", "keygen", "--out", "x", "--bogus"], /^meshtls: unknown option '--bogus'/],
    ["missing required option", ["token", "keygen"], /^meshtls: required option '--out <dir>' not specified/],
    ["bad duration", ["token", "mint", "--key", "k", "--namespace", "a", "--service-account", "b", "--lifetime", "ten"], /^meshtls: option '--lifetime <duration>' argument 'ten' is invalid\. invalid duration "ten"/],
    ["bad not-before", ["token", "mint", "--key", "k", "--namespace", "a", "--service-account", "b", "--not-before", "2030-13-45T00:00:00Z"], /^meshtls: option '--not-before <time>' argument .* is invalid/],
  ];
  for (const [name, args, pattern] of cases) {
    it(name, async () => {
      const result = await runCli(args);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(pattern);
      expect(result.stderr).not.toMatch(/\n\s+at /);
      expect(result.stdout).toBe("");
    });
  }

  it("--help and --version exit 0", async () => {
    const help = await runCli(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Usage: meshtls/);
    const version = await runCli(["--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
