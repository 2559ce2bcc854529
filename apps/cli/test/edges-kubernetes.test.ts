import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { injectObject, type Pod } from "@meshtls/kubernetes";
import { fakeApiKubeconfig, startFakeApiServer, type FakeApiServer } from "@meshtls/kubernetes/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TapLine } from "../src/commands/tap.ts";
import type { LocalMesh, Workload } from "../src/demo/mesh.ts";
import { kubernetesEndpoints, podAdminPort, type Edge, type EdgeReport } from "../src/mesh/edges.ts";
import { startProcess, type ManagedProcess } from "../src/mesh/supervisor.ts";
import { cliBin, runCli } from "./helpers.ts";
import { eventually, startLocalMesh, startUnmeshedClient } from "./mesh-helpers.ts";

const API = "api.default.serviceaccount.identity.meshtls.cluster.local";
const WEB = "web.default.serviceaccount.identity.meshtls.cluster.local";

/** A pod as `meshtls inject` makes it (the proxy a native sidecar with its `linkerd-admin` port 4191), running at `ip`. */
function meshedPod(name: string, namespace: string, serviceAccount: string, ip: string, anchorsPem: string): Pod {
  const pod = { apiVersion: "v1", kind: "Pod", metadata: { name, namespace }, spec: { serviceAccountName: serviceAccount, containers: [{ name: "app", image: "app:1", ports: [{ containerPort: 8080 }] }] } };
  const injected = injectObject(pod, { trustAnchorsPem: anchorsPem }).object as Pod;
  return { ...injected, status: { phase: "Running", podIP: ip, podIPs: [{ ip }] } };
}

function edgeBetween(report: EdgeReport, source: string | null, destination: string, tls: string): Edge | undefined {
  return report.edges.find((e) => e.source.workload === source && e.destination.workload === destination && e.tls === tls);
}

describe("pods as edge sources", () => {
  it("a meshed pod is read at <pod IP>:<its linkerd-admin port>; env or the default port without one; unmeshed, pending and host-network pods are not read", () => {
    const base = { apiVersion: "v1", kind: "Pod", status: { phase: "Running" } };
    const pods: Pod[] = [
      { ...base, metadata: { name: "a", namespace: "shop" }, spec: { serviceAccountName: "api", containers: [{ name: "app" }, { name: "linkerd-proxy", ports: [{ name: "linkerd-admin", containerPort: 9991 }] }] }, status: { phase: "Running", podIP: "10.0.0.1" } },
      { ...base, metadata: { name: "b", namespace: "shop", labels: { "linkerd.io/control-plane-ns": "linkerd" } }, spec: { serviceAccountName: "web", initContainers: [{ name: "linkerd-proxy", env: [{ name: "LINKERD2_PROXY_ADMIN_LISTEN_ADDR", value: "0.0.0.0:4192" }] }] }, status: { phase: "Running", podIP: "fd00::2" } },
      { ...base, metadata: { name: "c", namespace: "shop" }, spec: { containers: [{ name: "linkerd-proxy" }] }, status: { phase: "Running", podIP: "10.0.0.3" } },
      { ...base, metadata: { name: "d", namespace: "shop" }, spec: { serviceAccountName: "batch", containers: [{ name: "job" }] }, status: { phase: "Running", podIP: "10.0.0.4" } },
      { ...base, metadata: { name: "e", namespace: "shop" }, spec: { containers: [{ name: "linkerd-proxy" }] }, status: { phase: "Pending" } },
      { ...base, metadata: { name: "f", namespace: "shop" }, spec: { hostNetwork: true, containers: [{ name: "linkerd-proxy" }] }, status: { phase: "Running", podIP: "192.168.1.5" } },
    ];
    expect(podAdminPort(pods[3]!, 4191)).toBeUndefined();
    const found = kubernetesEndpoints(pods, { controlNamespace: "meshtls", trustDomain: "cluster.local", adminPort: 4191 });
    expect(found.admins).toEqual(["10.0.0.1:9991", "[fd00::2]:4192", "10.0.0.3:4191"]);
    expect(found.registry).toEqual([
      { address: "10.0.0.1", workload: "shop/api", identity: "api.shop.serviceaccount.identity.meshtls.cluster.local", meshed: true },
      { address: "fd00::2", workload: "shop/web", identity: "web.shop.serviceaccount.identity.linkerd.cluster.local", meshed: true },
      { address: "10.0.0.3", workload: "shop/default", identity: "default.shop.serviceaccount.identity.meshtls.cluster.local", meshed: true },
      { address: "10.0.0.4", workload: "shop/batch", identity: null, meshed: false },
    ]);
  });
});

describe("meshtls edges, tap and viz --kubernetes: the pods of a fake API server whose IPs are a local mesh's proxies", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let mesh: LocalMesh;
  let api: Workload;
  let web: Workload;
  let kube: FakeApiServer;
  let kubeconfig: string;
  let unmeshed: ManagedProcess | undefined;

  beforeAll(async () => {
    ({ dir, mesh, cleanup } = await startLocalMesh());
    // Each proxy's admin on its "pod IP" at the port inject declares (4191), as in a cluster.
    api = await mesh.startWorkload({ name: "api", ip: "127.0.1.82", proxyArgs: ["--admin", "127.0.1.82:4191"] });
    web = await mesh.startWorkload({ name: "web", ip: "127.0.1.81", calls: "api", callIntervalMs: 200, proxyArgs: ["--admin", "127.0.1.81:4191"] });
    unmeshed = startUnmeshedClient("127.0.1.83", api.inbound);
    await unmeshed.waitFor((l) => l.msg === "started", { timeoutMs: 20_000, what: "started" });

    const anchorsPem = await readFile(mesh.bundleFile, "utf8");
    kube = await startFakeApiServer({ bearerToken: "viewer-token" });
    kube.apply(meshedPod("api-0", "default", "api", api.ip, anchorsPem) as never);
    kube.apply(meshedPod("web-0", "default", "web", web.ip, anchorsPem) as never);
    kube.apply({ apiVersion: "v1", kind: "Pod", metadata: { name: "batch-0", namespace: "default" }, spec: { serviceAccountName: "batch", containers: [{ name: "job" }] }, status: { phase: "Running", podIP: "127.0.1.83" } } as never);
    // A meshed pod of another namespace whose proxy is not there.
    kube.apply(meshedPod("gone-0", "other", "gone", "127.0.1.89", anchorsPem) as never);
    kubeconfig = path.join(dir, "kubeconfig");
    await writeFile(kubeconfig, fakeApiKubeconfig(kube.url, "viewer-token"));
  }, 180_000);

  afterAll(async () => {
    await unmeshed?.stop();
    await mesh?.stop();
    await kube?.close();
    await cleanup?.();
  });

  it("edges -n default -o json: both proxies found from the pod specs, workloads named by the pods, web -> api secured, the unmeshed pod's connections to api plaintext", async () => {
    const report = await eventually("both edges", async () => {
      const result = await runCli(["edges", "--kubernetes", "--kubeconfig", kubeconfig, "-n", "default", "-o", "json", "--window", "1s"]);
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
      const r = JSON.parse(result.stdout) as EdgeReport;
      return edgeBetween(r, "default/web", "default/api", "true") !== undefined && edgeBetween(r, null, "default/api", "no_identity")?.active === true ? r : undefined;
    }, 60_000);
    expect(report.proxies.map((p) => [p.admin, p.workload, p.identity])).toEqual([["127.0.1.82:4191", "default/api", API], ["127.0.1.81:4191", "default/web", WEB]]);
    expect(edgeBetween(report, "default/web", "default/api", "true")).toMatchObject({ source: { identity: WEB }, destination: { identity: API, address: api.inbound }, secured: true });
    expect(edgeBetween(report, null, "default/api", "no_identity")).toMatchObject({ noTlsReason: "no_tls_from_remote" });
  });

  it("every namespace: the other namespace's pod is read at its IP too (not reachable here: named on stderr); a bad kubeconfig or no meshed pod is an error", async () => {
    const all = await runCli(["edges", "--kubernetes", "--kubeconfig", kubeconfig, "--window", "0s"]);
    expect(all.code).toBe(0);
    expect(all.stderr).toMatch(/proxy 127\.0\.1\.89:4191 not read/);
    expect(all.stdout).toMatch(/default\/web +default\/api .*SECURED ✓/);
    const empty = await runCli(["edges", "--kubernetes", "--kubeconfig", kubeconfig, "-n", "nowhere"]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/no meshed pod .* in namespace nowhere/);
    const denied = await runCli(["edges", "--kubernetes", "--kubeconfig", path.join(dir, "missing")]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/cannot list pods from the Kubernetes API/);
    const misuse = await runCli(["edges", "--proxy-admin", api.admin, "-n", "default"]);
    expect(misuse.code).toBe(2);
  });

  it("tap --kubernetes streams the pods' proxies; viz --kubernetes serves the same edges", async () => {
    const tap = await runCli(["tap", "--kubernetes", "--kubeconfig", kubeconfig, "-n", "default", "--workload", "default/web", "--max-events", "3", "-o", "json"], { timeoutMs: 30_000 });
    expect(tap.code).toBe(0);
    const lines = tap.stdout.trim().split("\n").map((l) => JSON.parse(l) as TapLine);
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l.proxy.workload === "default/web" || l.peerId === WEB).toBe(true);

    const viz = startProcess({ name: "viz", file: process.execPath, args: [cliBin, "viz", "--kubernetes", "--kubeconfig", kubeconfig, "-n", "default", "--listen", "127.0.0.1:0", "--interval", "500ms"] });
    try {
      const url = String((await viz.waitFor((l) => l.msg === "listening", { timeoutMs: 20_000, what: "listening" })).url);
      const report = await eventually("viz's edges", async () => {
        const res = await fetch(new URL("/api/edges", url));
        if (res.status !== 200) return undefined;
        const r = (await res.json()) as EdgeReport;
        return edgeBetween(r, "default/web", "default/api", "true") === undefined ? undefined : r;
      }, 20_000, 250);
      expect(report.proxies.map((p) => p.workload)).toEqual(["default/api", "default/web"]);
    } finally {
      await viz.stop();
    }
  }, 60_000);
});
