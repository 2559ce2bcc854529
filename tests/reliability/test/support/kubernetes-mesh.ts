// The mesh of mesh.ts with meshtls-destination in Kubernetes mode: service b, its pods and its EndpointSlice
// live in the fake API server (`@meshtls/kubernetes/testing`), which the destination reaches through a TCP gate
// that can take the API server away and bring it back on the same address.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { createDestinationClient } from "@meshtls/destination";
import { injectObject } from "@meshtls/kubernetes";
import { fakeApiKubeconfig, startFakeApiServer } from "@meshtls/kubernetes/testing";
import type { FakeApiServer, KubeObject } from "@meshtls/kubernetes/testing";
import { bins } from "@meshtls/hostile-suite/test/support/processes.ts";
import { authorityB, ControlPlaneProcess, createIdentity, createMeshFiles, freePort, poll, startApp, startProxy, stopAll } from "./mesh.ts";
import type { Endpoint, MeshFiles, ProxyProcess } from "./mesh.ts";
import type { Proc } from "./mesh.ts";
import { startTcpGate } from "./tcp-gate.ts";
import type { TcpGate } from "./tcp-gate.ts";
import { requestVia } from "./traffic.ts";

/** The bearer token the control plane presents to the fake API server. */
const CONTROL_PLANE_TOKEN = "control-plane-sa-token";
export const NAMESPACE = "default";

export interface KubernetesMesh {
  files: MeshFiles;
  api: FakeApiServer;
  /** What the destination (and anything given `kubeconfig`) dials instead of the API server. */
  gate: TcpGate;
  /** A kubeconfig naming the API server through the gate. */
  kubeconfig: string;
  identity: ControlPlaneProcess;
  destination: ControlPlaneProcess;
  a: ProxyProcess;
  b: Endpoint[];
  /** The port every endpoint of b serves on (its proxy's inbound, the EndpointSlice's port). */
  podPort: number;
  /** Rewrites b's EndpointSlice with these endpoints (a MODIFIED event). */
  setEndpoints(endpoints: readonly Endpoint[]): string;
  /** A pod of namespace `default` as the injector would write it (`injected`) or as created without it. */
  pod(name: string, ip: string, options: { injected: boolean }): KubeObject;
  proxies(): Proc[];
  close(): Promise<void>;
}

/**
 * Identity (file tokens), the fake API server holding namespace `default`, service b, pods b-1…b-n (injected,
 * Running) and b's EndpointSlice, the destination with `--source kubernetes`, proxy A on 127.0.`net`.100 and
 * b's endpoints on 127.0.`net`.1…: each endpoint's proxy listens on the pod's IP at the slice's port (where the
 * nat rules would send A's connection; the destination hints h2, so A dials it there), its app beside it.
 * Ready once A reaches every endpoint the slice names (`initial`, default all).
 */
export async function startKubernetesMesh(options: { name: string; net: number; endpoints: number; initial?: number; namespaceAnnotations?: Record<string, string> }): Promise<KubernetesMesh> {
  const files = await createMeshFiles(options.name);
  const identity = await createIdentity(files, { lifetime: "24h" });
  const api = await startFakeApiServer({ bearerToken: CONTROL_PLANE_TOKEN });
  const gate = await startTcpGate(api.url.replace(/^http:\/\//, ""));
  const kubeconfig = path.join(files.dir, "kubeconfig");
  writeFileSync(kubeconfig, fakeApiKubeconfig(`http://${gate.address}`, CONTROL_PLANE_TOKEN));

  const podPort = await freePort(`127.0.${options.net}.1`);
  const anchorsPem = readFileSync(files.material.caFile, "utf8");
  const pod = (name: string, ip: string, o: { injected: boolean }): KubeObject => {
    const plain = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: NAMESPACE, labels: { app: "b" } },
      spec: { serviceAccountName: "b", nodeName: "node-1", containers: [{ name: "app", image: "registry.local/b:1", ports: [{ name: "http", containerPort: podPort, protocol: "TCP" }] }] },
    };
    const object = (o.injected ? injectObject(plain, { trustAnchorsPem: anchorsPem }).object : plain) as KubeObject;
    return { ...object, status: { phase: "Running", podIP: ip, podIPs: [{ ip }], hostIP: `127.0.${options.net}.254` } };
  };
  api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NAMESPACE, ...(options.namespaceAnnotations === undefined ? {} : { annotations: options.namespaceAnnotations }) } });
  api.apply({ apiVersion: "v1", kind: "Service", metadata: { name: "b", namespace: NAMESPACE }, spec: { ports: [{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }] } });
  const ips = Array.from({ length: options.endpoints }, (_, i) => `127.0.${options.net}.${i + 1}`);
  ips.forEach((ip, i) => api.apply(pod(`b-${i + 1}`, ip, { injected: true })));
  const slice = (endpoints: readonly { ip: string; pod: string }[]): KubeObject => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: "b-slice", namespace: NAMESPACE, labels: { "kubernetes.io/service-name": "b" } },
    addressType: "IPv4",
    ports: [{ name: "http", port: podPort, protocol: "TCP" }],
    endpoints: endpoints.map((e) => ({ addresses: [e.ip], conditions: { ready: true }, targetRef: { kind: "Pod", namespace: NAMESPACE, name: e.pod } })),
  });
  const podOf = (ip: string): string => `b-${ip.slice(ip.lastIndexOf(".") + 1)}`;
  const initial = ips.slice(0, options.initial ?? ips.length);
  api.apply(slice(initial.map((ip) => ({ ip, pod: podOf(ip) }))));

  const grpc = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const policy = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const admin = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const destination = new ControlPlaneProcess("destination", bins.destination, [
    "--source", "kubernetes",
    "--kubeconfig", kubeconfig,
    "--listen", grpc,
    "--policy-addr", policy,
    "--admin", admin,
    "--insecure-plaintext",
    "--cluster-networks", "127.0.0.0/8",
  ], grpc, admin, { tls: false });
  await destination.start();

  const b = await Promise.all(
    ips.map(async (ip, i): Promise<Endpoint> => {
      const app = await startApp(ip, `b${i + 1}`);
      const proxy = await startProxy(files.material, { name: `proxy-b${i + 1}`, sa: "b", ip, workloadPort: app.port, identity, destination, extra: ["--inbound", `${ip}:${podPort}`] });
      return { ip, app, proxy };
    }),
  );
  const a = await startProxy(files.material, { name: "proxy-a", sa: "a", ip: `127.0.${options.net}.100`, workloadPort: 1, identity, destination });

  const mesh: KubernetesMesh = {
    files,
    api,
    gate,
    kubeconfig,
    identity,
    destination,
    a,
    b,
    podPort,
    setEndpoints: (endpoints) => api.apply(slice(endpoints.map((e) => ({ ip: e.ip, pod: podOf(e.ip) })))),
    pod,
    proxies: () => [a.proc, ...b.map((e) => e.proxy.proc)],
    async close() {
      await Promise.all(b.map((e) => e.app.close()));
      await stopAll();
      await gate.close();
      await api.close();
    },
  };
  const names = new Set(initial.map((ip) => `200 b${ip.slice(ip.lastIndexOf(".") + 1)}`));
  const seen = new Set<string>();
  const up = await poll(async () => {
    const batch = await Promise.all(Array.from({ length: 10 }, () => requestVia(a.outbound, authorityB)));
    for (const o of batch) if (o.ok) seen.add(o.result);
    return batch.every((o) => o.ok) && [...names].every((n) => seen.has(n)) ? true : undefined;
  }, 60_000, 300);
  if (up !== true) {
    await mesh.close();
    throw new Error(`A never reached every endpoint of b in the slice (answered: ${[...seen].join(", ")}): the mesh did not come up`);
  }
  return mesh;
}


/** What the destination serves for an authority, as each update arrived. */
export interface EndpointWitness {
  /** Each set of endpoint IPs (sorted) and when it arrived (ms since the epoch). */
  readonly sets: { at: number; ips: string[] }[];
  /** When the first set equal to `ips` arrived at or after `since`, waiting up to `timeoutMs`. */
  served(ips: readonly string[], since: number, timeoutMs: number): Promise<number | undefined>;
  close(): void;
}

/**
 * A second Get stream on `authority`, beside A's: the same answers A's proxy gets, timestamped, so that a case can
 * tell when the destination served a change apart from when A's balancer first picked a new endpoint.
 */
export function watchEndpoints(destination: string, authority: string): EndpointWitness {
  const client = createDestinationClient({ address: destination, contextToken: '{"ns":"default"}' });
  const resolution = client.resolve(authority);
  const sets: { at: number; ips: string[] }[] = [];
  resolution.subscribe((set) => sets.push({ at: Date.now(), ips: set.endpoints.map((e) => e.address).sort() }));
  return {
    sets,
    served: (ips, since, timeoutMs) => {
      const wanted = [...ips].sort().join(",");
      return poll(() => sets.find((s) => s.at >= since && s.ips.join(",") === wanted)?.at, timeoutMs, 20);
    },
    close() {
      resolution.close();
      client.close();
    },
  };
}
