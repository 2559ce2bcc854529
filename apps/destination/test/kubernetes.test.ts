import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fakeApiKubeconfig, startFakeApiServer, type FakeApiServer, type KubeObject } from "@meshtls/kubernetes/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addrKey, addrsOf, bufCurl, bufCurlGet, startDestination, waitFor, type BufStream, type DestinationProcess, type JsonAddr } from "./support.ts";

const NS = "shop";
const IDENTITY = "web.shop.serviceaccount.identity.meshtls.cluster.local";
const AUTHORITY = "web.shop.svc.cluster.local:80";

const ipOf = (i: number): string => `10.1.0.${i}`;

function pod(i: number, options: { meshed?: boolean; phase?: string } = {}): KubeObject {
  const labels: Record<string, string> = { app: "web", "pod-template-hash": "5d8f" };
  if (options.meshed ?? true) labels["linkerd.io/control-plane-ns"] = "meshtls";
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `web-${i}`, namespace: NS, labels, ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "web-5d8f", controller: true }] },
    spec: {
      serviceAccountName: "web",
      containers: [
        { name: "app", ports: [{ name: "http", containerPort: 8080 }] },
        { name: "linkerd-proxy", env: [{ name: "LINKERD2_PROXY_INBOUND_LISTEN_ADDR", value: "0.0.0.0:4143" }] },
      ],
    },
    status: { phase: options.phase ?? "Running", podIP: ipOf(i), podIPs: [{ ip: ipOf(i) }] },
  };
}

function service(portName: string): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "web", namespace: NS },
    spec: { clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10"], ports: [{ name: portName, port: 80, targetPort: portName, protocol: "TCP" }] },
  };
}

function slice(name: string, members: { i: number; ready?: boolean | null }[], port = { name: "http", port: 8080 }): KubeObject {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: NS, labels: { "kubernetes.io/service-name": "web" } },
    addressType: "IPv4",
    ports: [{ ...port, protocol: "TCP" }],
    endpoints: members.map(({ i, ready }) => ({
      addresses: [ipOf(i)],
      conditions: ready === null ? {} : { ready: ready ?? true },
      targetRef: { kind: "Pod", namespace: NS, name: `web-${i}` },
      zone: "zone-a",
    })),
  };
}

/** What Linkerd's rules make of the fake server's objects now: "ip:port" → identity ("" when unmeshed). */
function expectedFrom(api: FakeApiServer): Map<string, string> {
  const svc = api.get("Service", NS, "web") as { spec: { ports: { name: string; port: number }[] } } | undefined;
  const out = new Map<string, string>();
  if (svc === undefined) return out;
  const name = svc.spec.ports.find((p) => p.port === 80)?.name ?? "";
  for (const s of api.list("EndpointSlice") as unknown as { metadata: KubeObject["metadata"]; ports: { name: string; port: number }[]; endpoints: { addresses: string[]; conditions: { ready?: boolean }; targetRef: { name: string } }[] }[]) {
    if (s.metadata.labels?.["kubernetes.io/service-name"] !== "web") continue;
    const port = s.ports.find((p) => p.name === name)?.port;
    if (port === undefined) continue;
    for (const e of s.endpoints) {
      if (e.conditions.ready === false) continue;
      const p = api.get("Pod", NS, e.targetRef.name) as { metadata: KubeObject["metadata"]; status: { phase: string } } | undefined;
      if (p === undefined || p.status.phase !== "Running") continue;
      out.set(`${e.addresses[0]}:${port}`, p.metadata.labels?.["linkerd.io/control-plane-ns"] === "meshtls" ? IDENTITY : "");
    }
  }
  return out;
}

/** The client's view, rebuilt from the stream's add/remove messages; refuses a remove of an unknown endpoint and an add repeating one unchanged. */
function follow(stream: BufStream): { state: () => Map<string, string>; problems: string[]; addrs: () => Map<string, JsonAddr> } {
  const addrs = new Map<string, JsonAddr>();
  const problems: string[] = [];
  let seen = 0;
  const state = (): Map<string, string> => {
    for (; seen < stream.messages.length; seen++) {
      const message = stream.messages[seen];
      for (const a of addrsOf(message, "remove")) {
        if (!addrs.delete(addrKey(a))) problems.push(`remove of unknown ${addrKey(a)}`);
      }
      for (const a of addrsOf(message, "add")) {
        const before = addrs.get(addrKey(a));
        if (before !== undefined && JSON.stringify(before) === JSON.stringify(a)) problems.push(`duplicate add of ${addrKey(a)}`);
        addrs.set(addrKey(a), a);
      }
    }
    return new Map([...addrs].map(([k, a]) => [k, a.tlsIdentity?.dnsLikeIdentity?.name ?? ""]));
  };
  return { state, problems, addrs: () => (state(), addrs) };
}

describe("meshtls-destination --source kubernetes (EndpointSlices, Services, Pods from a loopback fake API server)", () => {
  let dir: string;
  let api: FakeApiServer;
  let destination: DestinationProcess;
  let stream: BufStream;
  let view: ReturnType<typeof follow>;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "meshtls-kube-dest-"));
    api = await startFakeApiServer({ bearerToken: "destination-sa-token" });
    api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
    api.apply(service("http"));
    for (const i of [1, 2]) api.apply(pod(i));
    api.apply(slice("web-abc", [{ i: 1 }, { i: 2 }]));
    await writeFile(path.join(dir, "kubeconfig"), fakeApiKubeconfig(api.url, "destination-sa-token"));
    destination = await startDestination({ kubeconfig: path.join(dir, "kubeconfig"), home: dir });
    stream = bufCurlGet({ port: destination.grpcPort, path: AUTHORITY, contextToken: '{"ns":"shop","pod":"client"}', timeoutMs: 120_000 });
    view = follow(stream);
  });
  afterAll(async () => {
    stream?.close();
    await destination?.stop();
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Waits until the client's view equals what the fake server's objects imply, and no update was lost or repeated. */
  async function converges(step: string): Promise<void> {
    const expected = () => JSON.stringify([...expectedFrom(api)].sort());
    const actual = () => JSON.stringify([...view.state()].sort());
    await waitFor(() => (actual() === expected() ? true : undefined), 10_000, `${step}: ${actual()} to become ${expected()}`, destination.failed).catch((error: Error) => {
      throw new Error(`${error.message}; stream stderr: ${stream.messages.length} messages`);
    });
    expect(view.problems, step).toEqual([]);
  }

  it("sends what the fake API server holds, as deltas, through scale, readiness, port rename, relabel, slice delete and every kind of watch break", async () => {
    await converges("initial");
    expect(expectedFrom(api).size).toBe(2);
    const first = view.addrs().get("10.1.0.1:8080")!;
    expect(first.tlsIdentity).toEqual({ dnsLikeIdentity: { name: IDENTITY }, serverName: { name: IDENTITY } });
    expect(first.protocolHint).toEqual({ h2: {} });
    expect(first.metricLabels).toMatchObject({ pod: "web-1", serviceaccount: "web", deployment: "web", control_plane_ns: "meshtls", pod_template_hash: "5d8f", zone: "zone-a" });

    for (const i of [3, 4]) api.apply(pod(i));
    api.apply(slice("web-abc", [{ i: 1 }, { i: 2 }, { i: 3 }, { i: 4 }]));
    await converges("scale up to 4");
    const before = stream.messages.length;
    api.apply(slice("web-abc", [{ i: 1 }, { i: 2 }, { i: 3 }]));
    api.remove("Pod", NS, "web-4");
    await converges("scale down to 3");
    // Deltas: the scale-down is one remove, not a new snapshot of every endpoint.
    expect(stream.messages.slice(before).map((m) => Object.keys(m)[0])).toEqual(["remove"]);

    api.apply(slice("web-abc", [{ i: 1 }, { i: 2, ready: false }, { i: 3 }]));
    await converges("web-2 not ready");
    expect(view.state().has("10.1.0.2:8080")).toBe(false);
    api.apply(slice("web-abc", [{ i: 1 }, { i: 2, ready: null }, { i: 3 }]));
    await converges("web-2 readiness unknown counts as ready");
    expect(view.state().has("10.1.0.2:8080")).toBe(true);

    api.apply(service("main"));
    api.apply(slice("web-abc", [{ i: 1 }, { i: 2 }, { i: 3 }], { name: "main", port: 9090 }));
    await converges("named port renamed and moved to 9090");
    expect([...view.state().keys()].every((k) => k.endsWith(":9090"))).toBe(true);

    api.apply(pod(1, { meshed: false }));
    await converges("web-1 relabelled out of the mesh");
    expect(view.state().get("10.1.0.1:9090")).toBe("");
    expect(view.addrs().get("10.1.0.1:9090")!.protocolHint).toBeUndefined();

    api.apply(pod(5));
    api.apply(slice("web-def", [{ i: 5 }], { name: "main", port: 9090 }));
    await converges("second slice");
    api.remove("EndpointSlice", NS, "web-def");
    await converges("second slice deleted");

    expect(api.dropWatches()).toBeGreaterThan(0);
    api.apply(pod(6));
    api.apply(slice("web-abc", [{ i: 1 }, { i: 2 }, { i: 3 }, { i: 6 }], { name: "main", port: 9090 }));
    await converges("after a dropped watch");

    // Changes while the watches are down, then history forgotten: the watch resumes into an in-stream 410 and relists.
    api.dropWatches();
    api.apply(slice("web-abc", [{ i: 2 }, { i: 3 }, { i: 6 }], { name: "main", port: 9090 }));
    api.compact();
    await converges("after an in-stream 410");

    api.setGoneAs("status");
    api.dropWatches();
    api.apply(slice("web-abc", [{ i: 1 }, { i: 2 }, { i: 3 }], { name: "main", port: 9090 }));
    api.remove("Pod", NS, "web-6");
    api.compact();
    await converges("after an HTTP 410");

    const metrics = await (await fetch(`http://127.0.0.1:${destination.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/kubernetes_watch_ends_total\{resource="endpointslices",reason="gone"\} [2-9]/);
    expect(metrics).toMatch(/kubernetes_watch_ends_total\{resource="endpointslices",reason="dropped"\} [1-9]/);
    expect(metrics).toMatch(/kubernetes_lists_total\{resource="endpointslices",result="ok"\} [3-9]/);

    // What the client sent: bookmarks and a server-side timeout on every watch, as client-go does.
    const watches = api.requests().filter((r) => r.query.watch === "true");
    expect(watches.length).toBeGreaterThan(5);
    for (const w of watches) {
      expect(w.headers["authorization"]).toBe("Bearer destination-sa-token");
      expect(w.query).toMatchObject({ allowWatchBookmarks: "true", resourceVersion: expect.stringMatching(/^\d+$/) });
      expect(Number(w.query.timeoutSeconds)).toBeGreaterThanOrEqual(300);
      expect(Number(w.query.timeoutSeconds)).toBeLessThan(600);
    }
  });

  it("a policy CRD or namespace annotation change reaches an open WatchPort within a second", async () => {
    const server = (accessPolicy: string): KubeObject => ({
      apiVersion: "policy.linkerd.io/v1beta3",
      kind: "Server",
      metadata: { name: "web-http", namespace: NS },
      spec: { podSelector: { matchLabels: { app: "web" } }, port: "http", proxyProtocol: "HTTP/1", accessPolicy },
    });
    api.apply(server("deny"));
    api.apply({
      apiVersion: "policy.linkerd.io/v1alpha1",
      kind: "AuthorizationPolicy",
      metadata: { name: "from-api", namespace: NS },
      spec: { targetRef: { group: "policy.linkerd.io", kind: "Server", name: "web-http" }, requiredAuthenticationRefs: [{ kind: "MeshTLSAuthentication", name: "api-clients" }] },
    });
    api.apply({
      apiVersion: "policy.linkerd.io/v1alpha1",
      kind: "MeshTLSAuthentication",
      metadata: { name: "api-clients", namespace: NS },
      spec: { identityRefs: [{ kind: "ServiceAccount", name: "api", namespace: "backend" }] },
    });
    const workload = JSON.stringify({ ns: NS, pod: "web-2" });
    const watch = bufCurl({ port: destination.policyPort, method: "io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort", body: { workload, port: 8080 } });
    const other = bufCurl({ port: destination.policyPort, method: "io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort", body: { workload, port: 7000 } });
    try {
      const withAuthz = (m: Record<string, unknown> | undefined) => ((m?.authorizations as unknown[] | undefined)?.length ?? 0) > 0;
      await waitFor(() => (withAuthz(watch.messages.at(-1)) ? true : undefined), 10_000, "the Server with its AuthorizationPolicy");
      expect(watch.messages.at(-1)).toMatchObject({ labels: { kind: "server", name: "web-http" }, authorizations: [{ authentication: { meshTLS: { identities: { identities: [{ name: "api.backend.serviceaccount.identity.meshtls.cluster.local" }] } } } }] });
      const count = watch.messages.length;
      const editedAt = Date.now();
      api.apply(server("all-unauthenticated"));
      await waitFor(() => watch.messages[count], 5_000, "the edited Server");
      const latencyMs = watch.receivedAt[count]! - editedAt;
      console.log(`Server CRD edit → WatchPort message: ${latencyMs} ms`);
      expect(latencyMs).toBeLessThan(1_000);
      expect((watch.messages[count]!.authorizations as { metadata: unknown }[]).map((a) => a.metadata)).toEqual([
        { resource: { group: "policy.linkerd.io", kind: "authorizationpolicy", name: "from-api" } },
        { default: "all-unauthenticated" },
      ]);

      await waitFor(() => other.messages[0], 10_000, "the default policy of a port without a Server");
      expect(other.messages.at(-1)).toMatchObject({ labels: { kind: "default", name: "all-unauthenticated" } });
      const annotatedAt = Date.now();
      const before = other.messages.length;
      api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS, annotations: { "config.linkerd.io/default-inbound-policy": "deny" } } });
      await waitFor(() => other.messages[before], 5_000, "the namespace's default policy");
      expect(other.receivedAt[before]! - annotatedAt).toBeLessThan(1_000);
      expect(other.messages[before]).toMatchObject({ labels: { kind: "default", name: "deny" } });
    } finally {
      watch.close();
      other.close();
    }
  });
});
