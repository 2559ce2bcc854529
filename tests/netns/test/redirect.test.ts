// Two pods as network namespaces on a bridge, both with `meshtls init`'s rules
// and a stand-in proxy that reads original destinations: an unmodified curl in
// pod A reaches the HTTP server in pod B through both redirects.
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildRules, expectedSaveLines } from "@meshtls/transparent";
import { createPods, listNamespaces, sweepNamespaces } from "./pods.ts";
import type { Pods } from "./pods.ts";

const PREFIX = "mtls-nn-";
const PROXY_GID = 2102;
const fixtures = path.dirname(fileURLToPath(import.meta.url));
const cli = path.join(path.dirname(createRequire(import.meta.url).resolve("meshtls/package.json")), "dist", "main.js");
const node = process.execPath;

/** Lines a process prints, and a wait for the first matching one. */
function lines(child: ChildProcess): { all: string[]; wait(match: (line: string) => boolean, timeoutMs?: number): Promise<string> } {
  const all: string[] = [];
  const waiters: (() => void)[] = [];
  let buffered = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split("\n");
    buffered = parts.pop() ?? "";
    all.push(...parts);
    for (const waiter of waiters) waiter();
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  return {
    all,
    wait: (match, timeoutMs = 20_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching line in ${timeoutMs} ms; stdout ${JSON.stringify(all)}; stderr ${stderr}`)), timeoutMs);
        const check = (): void => {
          const found = all.find(match);
          if (found !== undefined) {
            clearTimeout(timer);
            resolve(found);
          }
        };
        waiters.push(check);
        check();
      }),
  };
}

describe("pods as network namespaces with meshtls init's rules", () => {
  let mesh: Pods | undefined;
  const marker = `marker-${randomBytes(8).toString("hex")}`;
  const logs: Record<string, ReturnType<typeof lines>> = {};

  beforeAll(async () => {
    sweepNamespaces(PREFIX);
    mesh = createPods(PREFIX, [
      { name: "a", ip: "10.77.0.11" },
      { name: "b", ip: "10.77.0.12" },
    ]);
    const { a, b } = mesh.pods;
    for (const pod of [a!, b!]) pod.exec(node, [cli, "init", "--proxy-gid", String(PROXY_GID)]);
    logs.server = lines(b!.spawn(node, [path.join(fixtures, "fixtures", "http-server.ts"), "8080", `hello from b ${marker}`]));
    logs.inbound = lines(b!.spawn(node, [path.join(fixtures, "fixtures", "stand-in-proxy.ts"), "inbound", "4143"], { gid: PROXY_GID }));
    logs.outbound = lines(a!.spawn(node, [path.join(fixtures, "fixtures", "stand-in-proxy.ts"), "outbound", "4140"], { gid: PROXY_GID }));
    for (const log of Object.values(logs)) await log.wait((line) => line.includes("listening"));
  });

  afterAll(() => {
    mesh?.destroy();
  });

  it("installs proxy-init's rules and the redirect check's (meshtls init's default probe) in each pod, and a second init changes nothing", () => {
    const expected = expectedSaveLines(buildRules({ proxyGid: PROXY_GID, redirectCheckProbe: { host: "1.1.1.1", port: 20001 } }));
    for (const pod of Object.values(mesh!.pods)) {
      const saved = (): string[] => pod.exec("iptables-save", ["-t", "nat"]).split("\n").filter((line) => line.startsWith("-A ") || line.startsWith(":PROXY"));
      expect(saved()).toEqual(expected);
      expect(pod.exec(node, [cli, "init", "--proxy-gid", String(PROXY_GID)])).toMatch(/IPv4 .*nothing changed\nIPv6 .*nothing changed/);
      expect(saved()).toEqual(expected);
    }
  });

  it("carries an unmodified curl from pod A to pod B's server through both redirects", async () => {
    const { a } = mesh!.pods;
    const body = a!.exec("curl", ["-sS", "--max-time", "10", "http://10.77.0.12:8080/"]);
    // The server saw the inbound stand-in (loopback), not the client: the connection went through both.
    expect(body).toBe(`hello from b ${marker} peer=127.0.0.1\n`);
    const outbound = JSON.parse(await logs.outbound!.wait((line) => line.includes('"dst"'))) as { dst: unknown };
    expect(outbound.dst).toEqual({ address: "10.77.0.12", port: 8080, family: 4, redirected: true });
    const inbound = JSON.parse(await logs.inbound!.wait((line) => line.includes('"dst"'))) as { client: string; dst: unknown };
    expect(inbound.dst).toEqual({ address: "10.77.0.12", port: 8080, family: 4, redirected: true });
    expect(inbound.client).toMatch(/^10\.77\.0\.11:\d+$/);
  });

  it("answers a connection to the stand-in's own port as direct, never forwarding it to itself", async () => {
    const { b } = mesh!.pods;
    // From inside pod B to its own IP: leaves through lo (not redirected) and reaches the listener directly.
    expect(b!.exec("curl", ["-sS", "--max-time", "10", "--http0.9", "http://10.77.0.12:4143/"])).toBe("direct connection: not forwarded\n");
    const record = JSON.parse(await logs.inbound!.wait((line) => line.includes('"redirected":false'))) as { dst: unknown };
    expect(record.dst === null || (record.dst as { redirected: boolean }).redirected === false).toBe(true);
  });

  it("removes every namespace, veth and rule it made", () => {
    mesh!.destroy();
    expect(listNamespaces(PREFIX)).toEqual([]);
  });
});
