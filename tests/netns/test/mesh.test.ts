// The real meshtls-proxy in transparent mode: pods A and B as network
// namespaces on a bridge, each with `meshtls init`'s rules, its own
// meshtls-identity and meshtls-destination on loopback (same issuer and
// registry: they stand in for one control plane), and `meshtls-proxy
// --transparent` running with the proxy's GID. An unmodified curl in A reaches
// B's HTTP server: mTLS between the pods with the right identities.
import { execFileSync, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPods, listNamespaces, sweepNamespaces } from "./pods.ts";
import type { Pod, Pods } from "./pods.ts";

const PREFIX = "mtls-nm-";
const PROXY_GID = 2102;
const require = createRequire(import.meta.url);
const binary = (pkg: string): string => path.join(path.dirname(require.resolve(`${pkg}/package.json`)), "dist", "main.js");
const cli = binary("meshtls");
const node = process.execPath;
const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures");
const identityOf = (sa: string): string => `${sa}.default.serviceaccount.identity.meshtls.cluster.local`;

/** JSON log lines of a process, and a wait for one whose `msg` matches. */
function follow(child: ChildProcess, what: string): { lines: Record<string, unknown>[]; waitFor(msg: string, timeoutMs?: number): Promise<Record<string, unknown>> } {
  const lines: Record<string, unknown>[] = [];
  let text = "";
  let stderr = "";
  const waiters = new Set<() => void>();
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    text += chunk;
    const parts = text.split("\n");
    text = parts.pop() ?? "";
    for (const part of parts) {
      try {
        lines.push(JSON.parse(part) as Record<string, unknown>);
      } catch {
        lines.push({ msg: part });
      }
    }
    for (const waiter of waiters) waiter();
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  return {
    lines,
    waitFor: (msg, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${what}: no "${msg}" in ${timeoutMs} ms; log ${JSON.stringify(lines.slice(-10))}; stderr ${stderr.slice(-2000)}`));
        }, timeoutMs);
        const check = (): void => {
          const found = lines.find((line) => line.msg === msg);
          if (found === undefined) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found);
        };
        waiters.add(check);
        check();
      }),
  };
}

describe("meshtls-proxy --transparent between pods", () => {
  let mesh: Pods | undefined;
  let dir: string;
  const marker = `marker-${randomBytes(8).toString("hex")}`;

  /** Control plane and proxy of one pod; resolves once the proxy is ready. */
  async function startPod(pod: Pod): Promise<void> {
    const identity = follow(
      pod.spawn(node, [binary("meshtls-identity"), "--trust-anchors", path.join(dir, "certs", "ca.crt"), "--issuer-dir", path.join(dir, "issuer"), "--token-jwks", path.join(dir, "tokens", "jwks.json"), "--listen", "127.0.0.1:9443", "--admin", "127.0.0.1:0"]),
      `identity in ${pod.name}`,
    );
    const destination = follow(
      pod.spawn(node, [binary("meshtls-destination"), "--registry", path.join(dir, "registry.yaml"), "--listen", "127.0.0.1:8086", "--admin", "127.0.0.1:0", "--policy-addr", "127.0.0.1:0", "--insecure-plaintext"]),
      `destination in ${pod.name}`,
    );
    const { serverName } = await identity.waitFor("listening");
    await destination.waitFor("listening");
    const proxy = follow(
      pod.spawn(
        node,
        [
          binary("meshtls-proxy"),
          "--transparent",
          "--identity", identityOf(pod.name),
          "--token-file", path.join(dir, "tokens", `${pod.name}.jwt`),
          "--trust-anchors", path.join(dir, "certs", "ca.crt"),
          "--identity-addr", "127.0.0.1:9443",
          "--identity-name", String(serverName),
          "--destination-addr", "127.0.0.1:8086",
          "--destination-insecure-plaintext",
          "--context-token", '{"ns":"default"}',
          "--inbound", "0.0.0.0:4143",
          "--outbound", "127.0.0.1:4140",
          "--admin", "127.0.0.1:4191",
          "--workload", "127.0.0.1:8080",
        ],
        { gid: PROXY_GID },
      ),
      `proxy in ${pod.name}`,
    );
    await proxy.waitFor("listening");
    for (let i = 0; ; i++) {
      try {
        if (pod.exec("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:4191/ready"]) === "200") return;
      } catch {
        // not yet
      }
      if (i > 100) throw new Error(`proxy in ${pod.name} not ready; log ${JSON.stringify(proxy.lines.slice(-10))}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  beforeAll(async () => {
    sweepNamespaces(PREFIX);
    dir = await mkdtemp(path.join(os.tmpdir(), "meshtls-netns-"));
    const run = (...args: string[]): void => {
      execFileSync(node, [cli, ...args], { encoding: "utf8" });
    };
    run("certs", "create", "--out", path.join(dir, "certs"));
    await mkdir(path.join(dir, "issuer"));
    for (const file of ["issuer.crt", "issuer.key"]) await copyFile(path.join(dir, "certs", file), path.join(dir, "issuer", file));
    run("token", "keygen", "--out", path.join(dir, "tokens"));
    for (const sa of ["a", "b"]) {
      run("token", "mint", "--key", path.join(dir, "tokens", "token-signer.key"), "--namespace", "default", "--service-account", sa, "--out", path.join(dir, "tokens", `${sa}.jwt`));
    }
    await writeFile(
      path.join(dir, "registry.yaml"),
      ["services:", "  - name: b", "    ports: [8080]", "    endpoints:", "      - { address: 10.77.0.22, serviceAccount: b }", ""].join("\n"),
    );
    mesh = createPods(PREFIX, [
      { name: "a", ip: "10.77.0.21" },
      { name: "b", ip: "10.77.0.22" },
      // Outside the mesh: no rules, no proxy, not in the registry.
      { name: "c", ip: "10.77.0.23" },
    ]);
    const { a, b, c } = mesh.pods;
    for (const pod of [a!, b!]) pod.exec(node, [cli, "init", "--proxy-gid", String(PROXY_GID)]);
    for (const [pod, body] of [[b!, `hello from b ${marker}`], [c!, "hello from c"]] as const) {
      const server = pod.spawn(node, [path.join(fixtures, "http-server.ts"), "8080", body]);
      await new Promise<void>((resolve) => server.stdout?.once("data", () => resolve()));
    }
    await Promise.all([startPod(a!), startPod(b!)]);
  });

  afterAll(async () => {
    mesh?.destroy();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("carries an unmodified curl from A to B over mTLS with both identities, no byte of it in clear between the pods", async () => {
    const { a, b } = mesh!.pods;
    const capture = path.join(dir, "bridge.pcap");
    const tcpdump = spawn("ip", ["netns", "exec", `${PREFIX}node`, "tcpdump", "-i", "va", "--immediate-mode", "-U", "-s", "0", "-w", capture, "tcp"], { stdio: ["ignore", "ignore", "pipe"] });
    await new Promise<void>((resolve) => tcpdump.stderr.once("data", () => resolve())); // "listening on br0"
    const body = a!.exec("curl", ["-sS", "--max-time", "15", "-H", `x-marker: ${marker}`, "http://10.77.0.22:8080/"]);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    tcpdump.kill("SIGINT");
    await new Promise((resolve) => tcpdump.once("exit", resolve));
    expect(body).toBe(`hello from b ${marker} peer=127.0.0.1\n`);
    const captured = await readFile(capture);
    expect(captured.length).toBeGreaterThan(1000);
    expect(captured.includes(Buffer.from(marker))).toBe(false);
    expect(captured.includes(Buffer.from("hello from b"))).toBe(false);
    const aMetrics = a!.exec("curl", ["-s", "http://127.0.0.1:4191/metrics"]);
    const bMetrics = b!.exec("curl", ["-s", "http://127.0.0.1:4191/metrics"]);
    expect(aMetrics).toMatch(new RegExp(`tcp_open_total\\{direction="outbound",peer="dst",target_addr="10\\.77\\.0\\.22:4143",tls="true",server_id="${identityOf("b").replaceAll(".", "\\.")}"\\} [1-9]`));
    expect(bMetrics).toMatch(new RegExp(`tcp_open_total\\{direction="inbound",peer="src",[^}]*tls="true",client_id="${identityOf("a").replaceAll(".", "\\.")}"\\} [1-9]`));
  });

  it("reaches an address outside the mesh from A in plaintext, counted as such", () => {
    const { a } = mesh!.pods;
    expect(a!.exec("curl", ["-sS", "--max-time", "15", "http://10.77.0.23:8080/"])).toBe("hello from c peer=10.77.0.21\n");
    const aMetrics = a!.exec("curl", ["-s", "http://127.0.0.1:4191/metrics"]);
    expect(aMetrics).toMatch(/tcp_open_total\{direction="outbound",peer="dst",target_addr="10\.77\.0\.23:8080",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"\} 1/);
  });

  it("lets a client without a proxy reach B as B's policy allows, in plaintext, counted as such", () => {
    const { b, c } = mesh!.pods;
    expect(c!.exec("curl", ["-sS", "--max-time", "15", "http://10.77.0.22:8080/"])).toBe(`hello from b ${marker} peer=127.0.0.1\n`);
    const bMetrics = b!.exec("curl", ["-s", "http://127.0.0.1:4191/metrics"]);
    expect(bMetrics).toMatch(/tcp_open_total\{direction="inbound",peer="src",[^}]*tls="no_identity",no_tls_reason="no_tls_from_remote"\} 1/);
  });

  it("removes every namespace it made", () => {
    mesh!.destroy();
    expect(listNamespaces(PREFIX)).toEqual([]);
  });
});
