import type { AddressInfo } from "node:net";
import { Command, Option } from "commander";
import { Counter, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { ConfigError, createAdminServer, isLoopback, parseAddress, parseBooleanEnv, parseCommandLine, parseCount, parseDurationMs } from "./index.ts";

describe("config values", () => {
  it("parses durations with units, and refuses anything else naming the flag", () => {
    expect(parseDurationMs("24h", "--x")).toBe(86_400_000);
    expect(parseDurationMs("1h30m", "--x")).toBe(5_400_000);
    expect(parseDurationMs(" 500ms ", "--x")).toBe(500);
    expect(parseDurationMs("7d", "--x")).toBe(604_800_000);
    expect(parseDurationMs("1.5s", "--x")).toBe(1500);
    expect(() => parseDurationMs("soon", "--lifetime")).toThrow(/--lifetime: "soon" is not a duration/);
    expect(() => parseDurationMs("10", "--lifetime")).toThrow(ConfigError);
    expect(() => parseDurationMs("", "--lifetime")).toThrow(/--lifetime: empty duration/);
  });

  it("parses host:port, [v6]:port and :port", () => {
    expect(parseAddress("127.0.0.1:8080", "--listen")).toEqual({ host: "127.0.0.1", port: 8080 });
    expect(parseAddress("[::1]:0", "--listen")).toEqual({ host: "::1", port: 0 });
    expect(parseAddress(":8086", "--listen")).toEqual({ host: "0.0.0.0", port: 8086 });
    for (const bad of ["8080", "host:99999", "[::1]", "a:b:1"]) {
      expect(() => parseAddress(bad, "--listen"), bad).toThrow(/--listen: ".*" is not host:port/);
    }
  });

  it("parses counts within their range, and refuses anything else naming the flag and the range", () => {
    expect(parseCount("100", "--cap", { min: 1, max: 1000 })).toBe(100);
    expect(parseCount(" 1 ", "--cap", { min: 1, max: 1000 })).toBe(1);
    for (const bad of ["0", "1001", "-1", "1.5", "1e3", "", "ten"]) {
      expect(() => parseCount(bad, "--cap", { min: 1, max: 1000 }), bad).toThrow(/--cap: ".*" is not a whole number from 1 to 1000/);
    }
  });

  it("knows loopback hosts", () => {
    expect(["localhost", "127.0.0.1", "127.0.1.2", "::1", "::ffff:127.0.0.1", "::FFFF:127.0.0.1"].every((host) => isLoopback(host))).toBe(true);
    expect([undefined, "0.0.0.0", "10.0.0.1", "::", "128.0.0.1", "::ffff:10.0.0.1"].some((host) => isLoopback(host))).toBe(false);
  });

  it("reads boolean variables strictly", () => {
    expect(parseBooleanEnv({}, "B")).toBe(false);
    expect(parseBooleanEnv({ B: "true" }, "B")).toBe(true);
    expect(parseBooleanEnv({ B: "1" }, "B")).toBe(true);
    expect(parseBooleanEnv({ B: "FALSE" }, "B")).toBe(false);
    expect(parseBooleanEnv({ B: "0" }, "B")).toBe(false);
    expect(parseBooleanEnv({ B: "" }, "B")).toBe(false);
    expect(() => parseBooleanEnv({ B: "yes" }, "B")).toThrow(/B: "yes" is not a boolean/);
  });

  it("parses a command line against the environment it is given, not the process's", () => {
    const program = new Command("t").exitOverride().addOption(new Option("--name <n>").env("MESHTLS_TEST_NAME").default("d"));
    parseCommandLine(program, ["node", "t"], { MESHTLS_TEST_NAME: "from-env" });
    expect(program.opts()["name"]).toBe("from-env");
    expect(process.env["MESHTLS_TEST_NAME"]).toBeUndefined();
  });
});

describe("admin server", () => {
  it("serves /live, /ready with its reason, /metrics, and refuses other methods and paths", async () => {
    const registry = new Registry();
    new Counter({ name: "runtime_test_total", help: "test", registers: [registry] }).inc();
    let ready: { ok: boolean; reason?: string } = { ok: false, reason: "no issuer" };
    const server = createAdminServer({ registry, ready: () => ready });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      expect((await fetch(`${base}/live`)).status).toBe(200);
      const notReady = await fetch(`${base}/ready`);
      expect([notReady.status, await notReady.text()]).toEqual([503, "not ready: no issuer\n"]);
      ready = { ok: true };
      expect((await fetch(`${base}/ready`)).status).toBe(200);
      expect(await (await fetch(`${base}/metrics`)).text()).toMatch(/^runtime_test_total 1$/m);
      expect((await fetch(`${base}/metrics`, { method: "POST" })).status).toBe(405);
      expect((await fetch(`${base}/nope`)).status).toBe(404);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
