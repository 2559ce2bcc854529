// Two meshed pods with no registry file anywhere: the fake API server holds
// the pods (as `meshtls inject` writes them), their Service, EndpointSlice and
// ServiceAccounts, and reviews their projected tokens; meshtls-identity and
// meshtls-destination run with `--source kubernetes`; two real meshtls-proxy
// processes run with inject's env as the kubelet would expand it. curl goes
// through A's outbound to B's service, and both proxies count the connection
// as mTLS with the identities the pods' ServiceAccounts imply.
//
// No iptables here: what the nat rules would send to B's proxy (a connection to
// B's pod IP on the application's port) reaches it because B's inbound
// listens there, on B's pod IP; the application itself listens on
// 127.0.0.1, where inject's env says. B is meshed, so the destination hints
// h2 and A's proxy carries curl's HTTP/1 request over one mTLS HTTP/2
// connection. (The `config.linkerd.io/opaque-ports` route, with
// opaque_transport to B's 4143, is not used: B's inbound does not detect TLS
// on a connection to an opaque workload port, which such a connection is
// when nothing redirected it.)
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { injectObject } from "@meshtls/kubernetes";
import { FAKE_RESOURCES, fakeApiKubeconfig, startFakeApiServer, type FakeApiServer, type KubeObject } from "@meshtls/kubernetes/testing";
import { exportPrivateKey, generateKeyPair, importPrivateKey, issueLeaf, pemEncode, toDer } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mainJs, repoRoot, waitFor } from "./support.ts";

const run = promisify(execFile);
const cliBin = path.join(repoRoot, "apps/cli/dist/main.js");
const identityBin = path.join(repoRoot, "apps/identity/dist/main.js");
const proxyBin = path.join(repoRoot, "apps/proxy/dist/main.js");
const NS = "shop";
const idOf = (sa: string): string => `${sa}.${NS}.serviceaccount.identity.meshtls.cluster.local`;
// Pod IPs on loopback (127.0.0.0/8), unlikely to be used by another test.
const POD_IP = { client: "127.61.0.1", web: "127.61.0.2" };

type Json = Record<string, unknown>;
type EnvVar = { name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } };

/** A node binary whose JSON log lines are collected; `waitFor` resolves with the first line of that msg. */
function startLogged(file: string, args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; waitFor: (msg: string) => Promise<Json>; output: () => string } {
  const child = spawn(process.execPath, [file, ...args], { stdio: ["ignore", "pipe", "pipe"], env });
  let out = "";
  let pending = "";
  const lines: Json[] = [];
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stdout!.setEncoding("utf8").on("data", (c: string) => {
    out += c;
    pending += c;
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const text = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (text.startsWith("{")) lines.push(JSON.parse(text) as Json);
    }
  });
  const waitForMsg = (msg: string): Promise<Json> =>
    waitFor(() => lines.find((l) => l.msg === msg), 30_000, `"${msg}" from ${path.basename(path.dirname(path.dirname(file)))}`, () =>
      child.exitCode !== null ? `exited ${child.exitCode}:\n${out}` : undefined,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n${out}`);
    });
  return { child, waitFor: waitForMsg, output: () => out };
}

/** What the kubelet does with the proxy's env: downward-API values from the pod, `$(VAR)` of earlier variables expanded. */
function kubeletEnv(env: EnvVar[], fields: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env) {
    const raw = e.value ?? fields[e.valueFrom!.fieldRef.fieldPath]!;
    out[e.name] = raw.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => out[name] ?? all);
  }
  return out;
}

/** The value of one Prometheus sample whose labels include all of `labels` (summed over the matches). */
function sample(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)\{(.*)\} (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = Object.fromEntries([...m[2]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

describe("two injected pods meshed by identity and destination in Kubernetes mode, no registry file", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "meshtls-kube-mesh-"));
  const file = (name: string): string => path.join(dir, name);
  const children: ChildProcess[] = [];
  let api: FakeApiServer;
  let app: http.Server;

  beforeAll(async () => {
    for (const bin of [cliBin, identityBin, proxyBin, mainJs]) if (!existsSync(bin)) throw new Error(`${bin} is missing: build meshtls-identity, meshtls-destination, meshtls-proxy and the meshtls CLI first`);
    await run(process.execPath, [cliBin, "certs", "create", "--out", dir]);
    api = await startFakeApiServer({
      bearerToken: "control-plane-sa-token",
      resources: [...FAKE_RESOURCES, { group: "", version: "v1", plural: "serviceaccounts", kind: "ServiceAccount", namespaced: true }],
      tokens: {
        "projected-client-token": { username: `system:serviceaccount:${NS}:client`, audiences: ["identity.l5d.io"] },
        "projected-web-token": { username: `system:serviceaccount:${NS}:web`, audiences: ["identity.l5d.io"] },
      },
    });
    app = http.createServer((req, res) => res.end(`hello from web: ${req.method} ${req.url}\n`));
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
  }, 60_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    await Promise.all(children.map((c) => new Promise((resolve) => (c.exitCode !== null ? resolve(null) : c.once("exit", resolve)))));
    app?.close();
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A leaf of the mesh's issuer for a control-plane service's identity (what its own certificate would be). */
  async function leafFor(identity: string): Promise<{ key: string; cert: string }> {
    const issuerCert = toDer(readFileSync(file("issuer.crt"), "utf8"), "CERTIFICATE");
    const issuerKey = await importPrivateKey(readFileSync(file("issuer.key"), "utf8"));
    const keyPair = await generateKeyPair();
    const leaf = await issueLeaf({ issuer: { certificate: issuerCert, privateKey: issuerKey.privateKey }, publicKey: keyPair.publicKey, identity });
    return { key: (await exportPrivateKey(keyPair.privateKey)) as string, cert: pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuerCert) };
  }

  it("curl through A's outbound reaches B's service over mTLS, both proxies counting the pods' ServiceAccount identities", async () => {
    const anchorsPem = readFileSync(file("ca.crt"), "utf8");
    const appPort = (app.address() as AddressInfo).port;

    // The cluster as the API server holds it: the namespace, two ServiceAccounts, two pods as `meshtls inject`
    // writes them (scheduled and Running), web's Service and its EndpointSlice.
    api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
    for (const sa of ["client", "web"]) api.apply({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: sa, namespace: NS } } as KubeObject);
    const injected = (name: string, sa: string, ip: string, spec: Json, annotations: Record<string, string> = {}): KubeObject & { spec: { initContainers: { name: string; env: EnvVar[] }[] } } => {
      const pod = { apiVersion: "v1", kind: "Pod", metadata: { name, namespace: NS, labels: { app: sa }, annotations }, spec: { serviceAccountName: sa, nodeName: "node-1", ...spec } };
      const object = injectObject(pod, { trustAnchorsPem: anchorsPem }).object as KubeObject & { spec: { initContainers: { name: string; env: EnvVar[] }[] } };
      return { ...object, status: { phase: "Running", podIP: ip, podIPs: [{ ip }], hostIP: "127.61.255.1" } } as never;
    };
    const clientPod = injected("client-0", "client", POD_IP.client, { containers: [{ name: "curl", image: "curl:8", ports: [{ containerPort: 8080 }] }] });
    const webPod = injected("web-0", "web", POD_IP.web, { containers: [{ name: "web", image: "web:1", ports: [{ name: "http", containerPort: appPort }] }] });
    expect(webPod.metadata.labels?.["linkerd.io/control-plane-ns"]).toBe("meshtls");
    api.apply(clientPod);
    api.apply(webPod);
    api.apply({ apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: NS }, spec: { clusterIP: "127.61.128.10", clusterIPs: ["127.61.128.10"], ports: [{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }] } });
    api.apply({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "web-x1", namespace: NS, labels: { "kubernetes.io/service-name": "web" } },
      addressType: "IPv4",
      ports: [{ name: "http", port: appPort, protocol: "TCP" }],
      endpoints: [{ addresses: [POD_IP.web], conditions: { ready: true }, targetRef: { kind: "Pod", namespace: NS, name: "web-0" } }],
    });

    // The control plane: one kubeconfig for both services, nothing else about the workloads.
    writeFileSync(file("kubeconfig"), fakeApiKubeconfig(api.url, "control-plane-sa-token"));
    const base = { PATH: process.env.PATH ?? "", HOME: dir };
    const identity = startLogged(identityBin, ["--source", "kubernetes", "--kubeconfig", file("kubeconfig"), "--trust-anchors", file("ca.crt"), "--issuer-dir", dir, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], base);
    children.push(identity.child);
    const identityListening = await identity.waitFor("listening");

    const proxyEnvOf = (pod: typeof clientPod): Record<string, string> => {
      const container = pod.spec.initContainers.find((c) => c.name === "linkerd-proxy")!;
      return kubeletEnv(container.env, { "metadata.name": pod.metadata.name, "metadata.namespace": NS, "spec.nodeName": "node-1", "spec.serviceAccountName": String((pod.spec as Json).serviceAccountName) });
    };
    const clientEnv = proxyEnvOf(clientPod);
    const webEnv = proxyEnvOf(webPod);
    const destinationLeaf = await leafFor(webEnv.MESHTLS_PROXY_DESTINATION_NAME!);
    writeFileSync(file("destination.crt"), destinationLeaf.cert);
    writeFileSync(file("destination.key"), destinationLeaf.key);
    const destination = startLogged(
      mainJs,
      ["--source", "kubernetes", "--kubeconfig", file("kubeconfig"), "--tls-cert", file("destination.crt"), "--tls-key", file("destination.key"), "--listen", "127.0.0.1:0", "--policy-addr", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
      base,
    );
    children.push(destination.child);
    const destinationListening = await destination.waitFor("listening");

    // Each pod's proxy: inject's env, unchanged but for what a cluster provides and a test machine cannot
    // (service DNS names become the loopback services, listeners bind the pod's IP or free ports, the
    // projected token and trust roots are files under the pod's root, and no nat rules: transparent mode off,
    // curl names A's outbound as its HTTP proxy; tests/netns runs the injected proxies behind meshtls init's rules).
    const startProxy = async (name: string, env: Record<string, string>, token: string, inbound: string) => {
      const root = file(`${name}-root`);
      await mkdir(path.dirname(path.join(root, env.MESHTLS_PROXY_TOKEN_FILE!)), { recursive: true });
      await writeFile(path.join(root, env.MESHTLS_PROXY_TOKEN_FILE!), token);
      await mkdir(path.dirname(path.join(root, env.MESHTLS_PROXY_TRUST_ANCHORS!)), { recursive: true });
      await writeFile(path.join(root, env.MESHTLS_PROXY_TRUST_ANCHORS!), anchorsPem);
      const proxy = startLogged(
        proxyBin,
        [],
        {
          ...env,
          MESHTLS_PROXY_TOKEN_FILE: path.join(root, env.MESHTLS_PROXY_TOKEN_FILE!),
          MESHTLS_PROXY_TRUST_ANCHORS: path.join(root, env.MESHTLS_PROXY_TRUST_ANCHORS!),
          MESHTLS_PROXY_IDENTITY_ADDR: String(identityListening.grpc),
          MESHTLS_PROXY_DESTINATION_ADDR: String(destinationListening.grpcAddress),
          MESHTLS_PROXY_POLICY_ADDR: String(destinationListening.policyAddress),
          MESHTLS_PROXY_INBOUND: inbound,
          MESHTLS_PROXY_OUTBOUND: "127.0.0.1:0",
          MESHTLS_PROXY_ADMIN: "127.0.0.1:0",
          MESHTLS_PROXY_TRANSPARENT: "false",
          PATH: process.env.PATH ?? "",
        },
      );
      children.push(proxy.child);
      const listening = await proxy.waitFor("listening");
      await proxy.waitFor("first certificate obtained: ready");
      return { ...proxy, listening };
    };
    // B's inbound where the nat rules would have sent A's connection: B's pod IP, the application's port.
    expect(webEnv.MESHTLS_PROXY_WORKLOAD).toBe(`127.0.0.1:${appPort}`);
    const web = await startProxy("web", webEnv, "projected-web-token", `${POD_IP.web}:${appPort}`);
    const client = await startProxy("client", clientEnv, "projected-client-token", `${POD_IP.client}:0`);
    expect(clientEnv.MESHTLS_PROXY_IDENTITY).toBe(idOf("client"));
    expect(webEnv.MESHTLS_PROXY_IDENTITY).toBe(idOf("web"));

    // Both certificates came from TokenReviews of the projected tokens, with Linkerd's audience.
    const reviews = api.requests().filter((r) => r.path.endsWith("/tokenreviews")).map((r) => (r.body as { spec: { token: string; audiences: string[] } }).spec);
    expect(reviews).toEqual(expect.arrayContaining([
      { token: "projected-web-token", audiences: ["identity.l5d.io"] },
      { token: "projected-client-token", audiences: ["identity.l5d.io"] },
    ]));

    // curl, as the client pod's application would, through its proxy's outbound, to the service's name.
    const { stdout } = await run("curl", ["-sS", "--max-time", "20", "-x", `http://${String(client.listening.outbound)}`, `http://web.${NS}.svc.cluster.local/hello`]);
    expect(stdout).toBe("hello from web: GET /hello\n");

    const metricsOf = async (admin: unknown): Promise<string> => (await fetch(`http://${String(admin)}/metrics`)).text();
    const clientMetrics = await metricsOf(client.listening.admin);
    const webMetrics = await metricsOf(web.listening.admin);
    // A's outbound leg to B: mTLS, B's identity verified, dialled at B's pod IP.
    expect(sample(clientMetrics, "tcp_open_total", { direction: "outbound", peer: "dst", tls: "true", server_id: idOf("web"), target_addr: `${POD_IP.web}:${appPort}` }), clientMetrics).toBeGreaterThanOrEqual(1);
    expect(sample(clientMetrics, "tcp_open_total", { direction: "outbound", peer: "dst", tls: "no_identity" })).toBe(0);
    // B's inbound leg from A: mTLS with A's identity.
    expect(sample(webMetrics, "tcp_open_total", { direction: "inbound", peer: "src", tls: "true", client_id: idOf("client") }), webMetrics).toBeGreaterThanOrEqual(1);
    expect(sample(webMetrics, "tcp_open_total", { direction: "inbound", peer: "src", tls: "no_identity" })).toBe(0);

    // No registry file anywhere: neither control-plane service was given one, and the folder holds none.
    for (const c of [identity, destination]) expect(c.child.spawnargs.join(" ")).not.toMatch(/--registry|--token-jwks/);
    expect(readdirSync(dir).filter((n) => /registry|\.ya?ml$/.test(n))).toEqual([]);
  }, 180_000);
});

