import { describe, expect, it } from "vitest";
import { runCli } from "./helpers.ts";

describe("usage errors exit 2 with a message and no stack trace", () => {
  const cases: [string, string[], RegExp][] = [
    ["unknown command", ["frobnicate"], /^meshtls: unknown command 'frobnicate'/],
    ["unknown option", ["token", "keygen", "--out", "x", "--bogus"], /^meshtls: unknown option '--bogus'/],
    ["missing required option", ["token", "keygen"], /^meshtls: required option '--out <dir>' not specified/],
    ["bad duration", ["token", "mint", "--key", "k", "--namespace", "a", "--service-account", "b", "--lifetime", "ten"], /^meshtls: option '--lifetime <duration>' argument 'ten' is invalid\. --lifetime: "ten" is not a duration; use a number with a unit/],
    ["certs create without --out", ["certs", "create"], /^meshtls: required option '--out <dir>' not specified/],
    ["certs issuer without --ca-key", ["certs", "issuer", "--ca-cert", "a", "--out", "b"], /^meshtls: required option '--ca-key <file>' not specified/],
    ["inspect without a file", ["inspect"], /^meshtls: missing required argument 'file\|host:port'/],
    ["check with nothing to check", ["check"], /^meshtls: nothing to check: give --anchors and --issuer-dir, --identity-addr, --proxy-admin, or --kubernetes/],
    ["check --issuer-dir without --anchors", ["check", "--issuer-dir", "b"], /^meshtls: --issuer-dir needs --anchors/],
    ["check with a bad --proxy-admin", ["check", "--proxy-admin", "localhost"], /^meshtls: "localhost" is not host:port/],
    ["inspect with a bad address", ["inspect", "no-port-here", "--sni", "a.b"], /^meshtls: "no-port-here" is not host:port/],
    ["demo with a too short --lifetime", ["demo", "--lifetime", "1s"], /^meshtls: --lifetime must be at least 5s/],
    ["demo with a bad --duration", ["demo", "--duration", "forever"], /^meshtls: option '--duration <duration>' argument 'forever' is invalid/],
    ["check with a bad --warn", ["check", "--anchors", "a", "--issuer-dir", "b", "--warn", "soon"], /^meshtls: option '--warn <duration>' argument 'soon' is invalid/],
    ["certs bundle without files", ["certs", "bundle", "--out", "x"], /^meshtls: missing required argument 'certs'/],
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
