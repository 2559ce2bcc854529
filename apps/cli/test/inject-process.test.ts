import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { injectObject } from "@meshtls/kubernetes";
import { FAKE_RESOURCES, fakeApiKubeconfig, startFakeApiServer, type FakeApiServer } from "@meshtls/kubernetes/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCerts } from "../src/commands/certs-create.ts";
import { createTestLeaf } from "../src/commands/certs-leaf.ts";
import { scrapeMetrics } from "../src/mesh/admin-client.ts";
import { locateBinary } from "../src/mesh/binaries.ts";
import { createMemoryOutput } from "../src/output.ts";

type Json = Record<string, unknown>;
const WEB = "web.shop.serviceaccount.identity.meshtls.cluster.local";
const OPS = "ops.shop.serviceaccount.identity.meshtls.cluster.local";

/** Starts a node binary; resolves with the first stdout JSON line `msg` matches. */
function startLogged(file: string, args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; waitFor: (msg: string) => Promise<Json>; output: () => string } {
  const child = spawn(process.execPath, [file, ...args], { stdio: ["ignore", "pipe", "pipe"], env });
  let out = "";
  const lines: Json[] = [];
  const waiters: { msg: string; resolve: (line: Json) => void }[] = [];
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stdout!.setEncoding("utf8").on("data", (c: string) => {
    out += c;
    for (const text of c.split("\n")) {
      if (!text.startsWith("{")) continue;
      const line = JSON.parse(text) as Json;
      lines.push(line);
      for (const w of waiters.filter((w) => w.msg === line.msg)) w.resolve(line);
    }
  });
  const waitFor = (msg: string): Promise<Json> =>
    new Promise((resolve, reject) => {
      const seen = lines.find((l) => l.msg === msg);
      if (seen !== undefined) return resolve(seen);
      const timer = setTimeout(() => reject(new Error(`no "${msg}" within 30 s:\n${out}`)), 30_000);
      waiters.push({ msg, resolve: (line) => (clearTimeout(timer), resolve(line)) });
      child.once("exit", (code) => reject(new Error(`exited ${code} before "${msg}":\n${out}`)));
    });
  return { child, waitFor, output: () => out };
}

/** What the kubelet does with the proxy's env: downward-API values from the pod, `$(VAR)` of earlier variables expanded. */
function kubeletEnv(env: { name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } }[], pod: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env) {
    const raw = e.value ?? pod[e.valueFrom!.fieldRef.fieldPath]!;
    out[e.name] = raw.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => out[name] ?? all);
  }
  return out;
}

describe("a proxy started with exactly inject's env and files, against identity in Kubernetes mode", () => {
  let dir: string;
  let api: FakeApiServer;
  let app: http.Server;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "meshtls-inject-process-"));
    await createCerts({ outDir: path.join(dir, "certs") }, createMemoryOutput());
    await mkdir(path.join(dir, "issuer"));
    for (const f of ["issuer.crt", "issuer.key"]) await writeFile(path.join(dir, "issuer", f), await readFile(path.join(dir, "certs", f)));
    api = await startFakeApiServer({
      bearerToken: "identity-sa-token",
      resources: [...FAKE_RESOURCES, { group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", namespaced: true }],
      tokens: { "projected-web-token": { username: "system:serviceaccount:shop:web", audiences: ["identity.l5d.io"] } } });
    app = http.createServer((_req, res) => res.end("hello from web\n"));
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
  }, 60_000);

  afterAll(async () => {
    for (const c of children) c.kill("SIGTERM");
    await Promise.all(children.map((c) => new Promise((resolve) => (c.exitCode !== null ? resolve(null) : c.once("exit", resolve)))));
    app?.close();
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("gets its certificate from meshtls-identity --source kubernetes (TokenReview of the projected token) and serves mTLS to a meshed client", async () => {
    const anchorsPem = await readFile(path.join(dir, "certs", "ca.crt"), "utf8");
    // The trust-roots ConfigMap, stored in the API server; the kubelet would mount its key as a file.
    api.apply({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "meshtls-identity-trust-roots", namespace: "meshtls" }, data: { "ca-bundle.crt": anchorsPem } } as never);
    const configMap = api.get("ConfigMap", "meshtls", "meshtls-identity-trust-roots") as unknown as { data: Record<string, string> };

    const appPort = (app.address() as AddressInfo).port;
    const pod = { apiVersion: "v1", kind: "Pod", metadata: { name: "web-0", namespace: "shop" }, spec: { serviceAccountName: "web", containers: [{ name: "web", image: "web:1", ports: [{ containerPort: appPort }] }] } };
    const injected = injectObject(pod, { trustAnchorsPem: anchorsPem }).object as { spec: { initContainers: Json[]; volumes: Json[] } };
    const proxy = injected.spec.initContainers.find((c) => c.name === "linkerd-proxy")! as { env: never; volumeMounts: { name: string; mountPath: string }[] };
    const env = kubeletEnv(proxy.env, { "metadata.name": "web-0", "metadata.namespace": "shop", "spec.nodeName": "node-1", "spec.serviceAccountName": "web" });

    // The pod's files, under a folder standing for its root: the mounts inject declares, filled as the kubelet fills them.
    const root = path.join(dir, "pod-root");
    const mountOf = (volume: string): string => path.join(root, proxy.volumeMounts.find((m) => m.name === volume)!.mountPath);
    const token = injected.spec.volumes.find((v) => v.name === "linkerd-identity-token") as { projected: { sources: { serviceAccountToken: { path: string; audience: string } }[] } };
    expect(token.projected.sources[0]!.serviceAccountToken.audience).toBe("identity.l5d.io");
    await mkdir(mountOf("linkerd-identity-token"), { recursive: true });
    await writeFile(path.join(mountOf("linkerd-identity-token"), token.projected.sources[0]!.serviceAccountToken.path), "projected-web-token");
    await mkdir(mountOf("linkerd-trust-roots"), { recursive: true });
    await writeFile(path.join(mountOf("linkerd-trust-roots"), "ca-bundle.crt"), configMap.data["ca-bundle.crt"]!);
    expect(path.join(root, env.MESHTLS_PROXY_TOKEN_FILE!)).toBe(path.join(mountOf("linkerd-identity-token"), "linkerd-identity-token"));

    // The identity service in Kubernetes mode, reviewing tokens with the fake API server.
    await writeFile(path.join(dir, "kubeconfig"), fakeApiKubeconfig(api.url, "identity-sa-token"));
    const identity = startLogged(locateBinary("meshtls-identity"), ["--source", "kubernetes", "--kubeconfig", path.join(dir, "kubeconfig"), "--trust-anchors", path.join(dir, "certs", "ca.crt"), "--issuer-dir", path.join(dir, "issuer"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], { PATH: process.env.PATH ?? "", HOME: dir });
    children.push(identity.child);
    const listening = await identity.waitFor("listening");
    expect(listening.serverName).toBe(env.MESHTLS_PROXY_IDENTITY_NAME);

    // inject's env, unchanged but for what a cluster provides and a test machine cannot: service DNS names
    // become the loopback services (destination and policy: a closed port, the proxy keeps its defaults), the
    // pod's listeners take free loopback ports, and file paths live under the pod's root.
    const proxyEnv: Record<string, string> = {
      ...env,
      MESHTLS_PROXY_TOKEN_FILE: path.join(root, env.MESHTLS_PROXY_TOKEN_FILE!),
      MESHTLS_PROXY_TRUST_ANCHORS: path.join(root, env.MESHTLS_PROXY_TRUST_ANCHORS!),
      MESHTLS_PROXY_IDENTITY_ADDR: String(listening.grpc),
      MESHTLS_PROXY_DESTINATION_ADDR: "127.0.0.1:9",
      MESHTLS_PROXY_POLICY_ADDR: "127.0.0.1:9",
      MESHTLS_PROXY_INBOUND: "127.0.0.1:0",
      MESHTLS_PROXY_OUTBOUND: "127.0.0.1:0",
      MESHTLS_PROXY_ADMIN: "127.0.0.1:0",
      PATH: process.env.PATH ?? "",
    };
    expect(env.MESHTLS_PROXY_WORKLOAD).toBe(`127.0.0.1:${appPort}`);
    const meshed = startLogged(locateBinary("meshtls-proxy"), [], proxyEnv);
    children.push(meshed.child);
    const proxyListening = await meshed.waitFor("listening");
    await meshed.waitFor("first certificate obtained: ready");
    // The TokenReview the identity service made for it: the projected token, with Linkerd's audience.
    const review = api.requests().find((r) => r.path.endsWith("/tokenreviews"));
    expect(review?.body).toMatchObject({ spec: { token: "projected-web-token", audiences: ["identity.l5d.io"] } });

    // A meshed client (a leaf of the same issuer) over mTLS: the proxy presents web's certificate, checks the client's, forwards to the app.
    await createTestLeaf({ identity: OPS, issuerDir: path.join(dir, "issuer"), outDir: path.join(dir, "ops"), lifetimeMs: 3_600_000 }, createMemoryOutput());
    const inbound = String(proxyListening.inbound);
    const port = Number(inbound.slice(inbound.lastIndexOf(":") + 1));
    const { reply, peer } = await new Promise<{ reply: string; peer: tls.PeerCertificate }>((resolve, reject) => {
      const socket = tls.connect({ host: "127.0.0.1", port, servername: WEB, ca: anchorsPem, cert: readFileSync(path.join(dir, "ops", "leaf.crt")), key: readFileSync(path.join(dir, "ops", "leaf.key")) }, () => {
        const peerCert = socket.getPeerCertificate();
        socket.write("GET / HTTP/1.0\r\n\r\n");
        let text = "";
        socket.setEncoding("utf8").on("data", (c: string) => (text += c));
        socket.on("end", () => resolve({ reply: text, peer: peerCert }));
      });
      socket.on("error", reject);
    });
    expect(peer.subjectaltname).toContain(`DNS:${WEB}`);
    expect(reply).toContain("hello from web");
    const samples = await scrapeMetrics({ address: String(proxyListening.admin) });
    const counted = samples.filter((s) => s.name === "tcp_open_total" && s.labels.direction === "inbound" && s.labels.tls === "true" && s.labels.client_id === OPS);
    expect(counted.length, JSON.stringify(samples.filter((s) => s.name === "tcp_open_total"))).toBe(1);
  }, 120_000);
});

