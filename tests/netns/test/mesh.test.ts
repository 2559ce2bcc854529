// The real meshtls-proxy in transparent mode: pods A and B as network
// namespaces on a bridge, each with `meshtls init`'s rules and `meshtls-proxy
// --transparent` running as the proxy's own UID (2102, which the rules
// exclude); one control plane in a namespace of its own on the bridge
// (meshtls-identity and meshtls-destination, both over TLS: no plaintext
// control plane). An unmodified curl in A reaches B's HTTP server: mTLS
// between the pods with the right identities, HTTP per request (detected on
// A's transparent listener). Pods C and D have no proxy: B's
// policy (from the destination's registry file) admits C and refuses D.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { proxyArgs, startControlPlane, writeMeshFiles } from "./control-plane.ts";
import type { ControlPlane } from "./control-plane.ts";
import { createPods, listNamespaces, sweepNamespaces } from "./pods.ts";
import type { Pod, Pods } from "./pods.ts";
import { cli, fixtures, follow, identityOf, node } from "./processes.ts";

const PREFIX = "mtls-nm-";
const PROXY_UID = 2102;
const CONTROL_PLANE_IP = "10.77.0.20";


describe("meshtls-proxy --transparent between pods", () => {
  let mesh: Pods | undefined;
  let dir: string;
  /** A copy of the running Node the proxy's UID may execute (the one on PATH lives under /root, mode 700). */
  let proxyNode: string;
  let controlPlane: ControlPlane;
  const marker = `marker-${randomBytes(8).toString("hex")}`;

  /** The proxy of one pod, as the proxy's UID; resolves once it is ready. */
  async function startProxy(pod: Pod, policy: string[]): Promise<void> {
    const proxy = follow(
      pod.spawn(proxyNode, proxyArgs(pod, controlPlane, policy), { uid: PROXY_UID, gid: PROXY_UID }),
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
    // The proxy's UID reads its token, the anchors, the checkout (mode 755) and this Node.
    await chmod(dir, 0o755);
    proxyNode = path.join(dir, "node");
    await copyFile(node, proxyNode);
    await chmod(proxyNode, 0o755);
    await writeMeshFiles(dir, { serviceAccounts: ["a", "b"], proxyUid: PROXY_UID, destinationLeaf: true });
    await writeFile(
      path.join(dir, "registry.yaml"),
      [
        "services:",
        "  - name: b",
        "    ports: [8080]",
        "    endpoints:",
        "      - { address: 10.77.0.22, serviceAccount: b }",
        // B's port 8080: only A's identity, and pod C's address without TLS.
        "workloads:",
        "  - { name: b, namespace: default, labels: { app: b }, ports: [{ name: http, port: 8080 }] }",
        "servers:",
        "  - { name: b-http, namespace: default, podSelector: { matchLabels: { app: b } }, port: http, accessPolicy: deny }",
        "authorizationPolicies:",
        "  - name: from-a",
        "    namespace: default",
        "    targetRef: { kind: Server, name: b-http }",
        "    requiredAuthenticationRefs: [{ kind: MeshTLSAuthentication, name: a-only }]",
        "  - name: from-pod-c",
        "    namespace: default",
        "    targetRef: { kind: Server, name: b-http }",
        "    requiredAuthenticationRefs: [{ kind: NetworkAuthentication, name: pod-c }]",
        "meshTLSAuthentications:",
        `  - { name: a-only, namespace: default, identities: ["${identityOf("a")}"] }`,
        "networkAuthentications:",
        "  - { name: pod-c, namespace: default, networks: [{ cidr: 10.77.0.23/32 }] }",
        "",
      ].join("\n"),
    );
    mesh = createPods(PREFIX, [
      { name: "cp", ip: CONTROL_PLANE_IP },
      { name: "a", ip: "10.77.0.21" },
      { name: "b", ip: "10.77.0.22" },
      // Outside the mesh: no rules, no proxy, not in the registry; C is also a server outside the mesh.
      { name: "c", ip: "10.77.0.23" },
      { name: "d", ip: "10.77.0.24" },
    ]);
    const { cp, a, b, c } = mesh.pods;
    for (const pod of [a!, b!]) pod.exec(node, [cli, "init", "--proxy-uid", String(PROXY_UID)]);
    for (const [pod, body] of [[b!, `hello from b ${marker}`], [c!, "hello from c"]] as const) {
      const server = pod.spawn(node, [path.join(fixtures, "http-server.ts"), "8080", body]);
      await new Promise<void>((resolve) => server.stdout?.once("data", () => resolve()));
    }
    // The one control plane: identity and destination (with its policy API) on the bridge, over TLS.
    controlPlane = await startControlPlane(cp!, dir, { listenIp: CONTROL_PLANE_IP, policyPort: 8090 });
    await Promise.all([
      startProxy(a!, []),
      // B asks the controller for its ports' policy and admits nobody until it answers.
      startProxy(b!, ["--policy-addr", controlPlane.policyAddr!, "--workload-name", '{"ns":"default","pod":"b"}', "--default-policy", "deny"]),
    ]);
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
    // HTTP detected on the transparent listener: the request went per request over the mesh, its authority curl's.
    expect(aMetrics).toMatch(new RegExp(`response_total\\{direction="outbound",authority="10\\.77\\.0\\.22:8080",[^}]*tls="true",server_id="${identityOf("b").replaceAll(".", "\\.")}",status_code="200",classification="success"[^}]*\\} 1`));
    expect(bMetrics).toMatch(new RegExp(`response_total\\{direction="inbound",[^}]*tls="true",client_id="${identityOf("a").replaceAll(".", "\\.")}",status_code="200",classification="success"[^}]*\\} 1`));
  });

  it("reaches an address outside the mesh from A in plaintext, counted as such", () => {
    const { a } = mesh!.pods;
    expect(a!.exec("curl", ["-sS", "--max-time", "15", "http://10.77.0.23:8080/"])).toBe("hello from c peer=10.77.0.21\n");
    const aMetrics = a!.exec("curl", ["-s", "http://127.0.0.1:4191/metrics"]);
    expect(aMetrics).toMatch(/tcp_open_total\{direction="outbound",peer="dst",target_addr="10\.77\.0\.23:8080",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"\} 1/);
  });

  it("lets a client without a proxy reach B as B's policy allows (pod C's address), in plaintext, counted as such", async () => {
    const { b, c } = mesh!.pods;
    // B admits nobody until the controller's policy arrives (--default-policy deny): wait for it.
    let body = "";
    for (let i = 0; i < 75 && !body.startsWith("hello from b"); i++) {
      try {
        body = c!.exec("curl", ["-sS", "--max-time", "5", "http://10.77.0.22:8080/"]);
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
    expect(body).toBe(`hello from b ${marker} peer=127.0.0.1\n`);
    const bMetrics = b!.exec("curl", ["-s", "http://127.0.0.1:4191/metrics"]);
    expect(bMetrics).toMatch(/tcp_open_total\{direction="inbound",peer="src",[^}]*tls="no_identity",no_tls_reason="no_tls_from_remote"\} [1-9]/);
    expect(bMetrics).toMatch(/inbound_tcp_authz_allow_total\{[^}]*authz_name="from-pod-c"[^}]*\} [1-9]/);
  });

  it("refuses a client without a proxy that B's policy does not allow (pod D), and counts it", () => {
    const { b, d } = mesh!.pods;
    // C's first tries, before the policy arrived, were refused too: count D's refusal alone.
    const denied = (): number =>
      b!
        .exec("curl", ["-s", "http://127.0.0.1:4191/metrics"])
        .split("\n")
        .filter((line) => line.startsWith("inbound_tcp_authz_deny_total{") && line.includes('srv_name="b-http"'))
        .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
    const before = denied();
    let outcome: string;
    try {
      outcome = d!.exec("curl", ["-sS", "--max-time", "15", "-w", "\ncode=%{http_code}", "http://10.77.0.22:8080/"]);
    } catch (error) {
      outcome = `curl failed: ${String((error as { stderr?: string }).stderr)}`;
    }
    expect(outcome).not.toContain("hello from b");
    expect(denied()).toBe(before + 1);
  });

  it("runs the proxies as their own UID", () => {
    for (const pod of [mesh!.pods.a!, mesh!.pods.b!]) {
      const owners = pod.exec("ss", ["-Htlnpe", "sport", "=", ":4143"]);
      expect(owners).toMatch(/uid:2102/);
    }
  });

  it("removes every namespace it made", () => {
    mesh!.destroy();
    expect(listNamespaces(PREFIX)).toEqual([]);
  });
});
