// meshtls-destination --source kubernetes: lookups by IP (ClusterIP, then pod
// IPs of any Running pod not in the host network, then hostIP:hostPort), by
// StatefulSet hostname, internalTrafficPolicy: Local, and ServerAuthorization,
// each against the loopback fake API server and read back with buf curl (a
// client built from the proto files only).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fakeApiKubeconfig, startFakeApiServer, type FakeApiServer, type KubeObject } from "@meshtls/kubernetes/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addrKey, addrsOf, bufCurl, bufCurlGet, ipv4Int, startDestination, waitFor, type BufStream, type DestinationProcess, type JsonAddr } from "./support.ts";

const NS = "shop";
const identityOf = (sa: string): string => `${sa}.${NS}.serviceaccount.identity.meshtls.cluster.local`;

interface PodSpec {
  name: string;
  ip: string;
  sa?: string;
  node?: string;
  phase?: string;
  hostNetwork?: boolean;
  hostIP?: string;
  ports?: { containerPort: number; hostPort?: number }[];
  labels?: Record<string, string>;
}

function pod(p: PodSpec): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: p.name, namespace: NS, labels: { "linkerd.io/control-plane-ns": "meshtls", ...p.labels } },
    spec: {
      serviceAccountName: p.sa ?? p.name,
      nodeName: p.node ?? "n1",
      ...(p.hostNetwork ? { hostNetwork: true } : {}),
      containers: [
        { name: "app", ports: p.ports ?? [{ containerPort: 8080 }] },
        { name: "linkerd-proxy", env: [{ name: "LINKERD2_PROXY_INBOUND_LISTEN_ADDR", value: "0.0.0.0:4143" }] },
      ],
    },
    status: { phase: p.phase ?? "Running", podIP: p.ip, podIPs: [{ ip: p.ip }], hostIP: p.hostIP ?? "10.2.0.9", hostIPs: [{ ip: p.hostIP ?? "10.2.0.9" }] },
  };
}

function service(name: string, spec: Record<string, unknown>): KubeObject {
  return { apiVersion: "v1", kind: "Service", metadata: { name, namespace: NS }, spec: { ports: [{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }], ...spec } };
}

function slice(serviceName: string, members: { pod: string; ip: string; hostname?: string }[], port = 8080): KubeObject {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name: `${serviceName}-1`, namespace: NS, labels: { "kubernetes.io/service-name": serviceName } },
    addressType: "IPv4",
    ports: [{ name: "http", port, protocol: "TCP" }],
    endpoints: members.map((m) => ({
      addresses: [m.ip],
      conditions: { ready: true },
      ...(m.hostname === undefined ? {} : { hostname: m.hostname }),
      targetRef: { kind: "Pod", namespace: NS, name: m.pod },
    })),
  };
}

/** A Get stream's current endpoints ("ip:port" → identity, "" without one), from its adds and removes. */
function endpointsOf(stream: BufStream): Map<string, string> {
  const out = new Map<string, string>();
  for (const message of stream.messages) {
    for (const a of addrsOf(message, "remove")) out.delete(addrKey(a));
    for (const a of addrsOf(message, "add")) out.set(addrKey(a), a.tlsIdentity?.dnsLikeIdentity?.name ?? "");
  }
  return out;
}

interface JsonProfile {
  fullyQualifiedName?: string;
  opaqueProtocol?: boolean;
  endpoint?: JsonAddr;
}

describe("meshtls-destination --source kubernetes: IP, hostname and node-local lookups, ServerAuthorization", () => {
  let dir: string;
  let api: FakeApiServer;
  let server: DestinationProcess;
  const open: BufStream[] = [];

  const get = (authority: string, node?: string): BufStream => {
    const s = bufCurlGet({ port: server.grpcPort, path: authority, contextToken: JSON.stringify({ ns: NS, pod: "client", ...(node === undefined ? {} : { nodeName: node }) }), timeoutMs: 120_000 });
    open.push(s);
    return s;
  };
  const profile = (authority: string): BufStream => {
    const s = bufCurl({ port: server.grpcPort, method: "io.linkerd.proxy.destination.Destination/GetProfile", body: { scheme: "", path: authority, contextToken: JSON.stringify({ ns: NS, pod: "client" }) }, timeoutMs: 120_000 });
    open.push(s);
    return s;
  };
  const last = (s: BufStream): JsonProfile | undefined => s.messages.at(-1) as JsonProfile | undefined;
  const failed = (): string | undefined => server.failed();

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "meshtls-kube-lookups-"));
    api = await startFakeApiServer({ bearerToken: "destination-sa-token" });
    api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
    // web: a ClusterIP service of two pods on two nodes; web-local: the same pods, internalTrafficPolicy Local.
    api.apply(pod({ name: "web-1", sa: "web", ip: "10.1.0.1", node: "n1" }));
    api.apply(pod({ name: "web-2", sa: "web", ip: "10.1.0.2", node: "n2" }));
    api.apply(service("web", { clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10"] }));
    api.apply(slice("web", [{ pod: "web-1", ip: "10.1.0.1" }, { pod: "web-2", ip: "10.1.0.2" }]));
    api.apply(service("web-local", { clusterIP: "10.96.0.11", internalTrafficPolicy: "Local" }));
    api.apply(slice("web-local", [{ pod: "web-1", ip: "10.1.0.1" }, { pod: "web-2", ip: "10.1.0.2" }]));
    // db: a headless service of a StatefulSet's pods with hostnames.
    api.apply(pod({ name: "db-0", sa: "db", ip: "10.1.0.20" }));
    api.apply(pod({ name: "db-1", sa: "db", ip: "10.1.0.21" }));
    api.apply(service("db", { clusterIP: "None", ports: [{ name: "http", port: 5432, targetPort: "http" }] }));
    api.apply(slice("db", [{ pod: "db-0", ip: "10.1.0.20", hostname: "db-0" }, { pod: "db-1", ip: "10.1.0.21", hostname: "db-1" }], 5432));
    // In no service: a Running pod, a Pending one, a host-network agent with a host port, a pod with a host port.
    api.apply(pod({ name: "lonely", ip: "10.1.0.50" }));
    api.apply(pod({ name: "starting", ip: "10.1.0.51", phase: "Pending" }));
    api.apply(pod({ name: "agent", ip: "10.2.0.1", hostIP: "10.2.0.1", hostNetwork: true, ports: [{ containerPort: 9100, hostPort: 9100 }] }));
    api.apply(pod({ name: "edge", ip: "10.1.0.60", hostIP: "10.2.0.2", ports: [{ containerPort: 443, hostPort: 8443 }] }));
    await writeFile(path.join(dir, "kubeconfig"), fakeApiKubeconfig(api.url, "destination-sa-token"));
    server = await startDestination({ kubeconfig: path.join(dir, "kubeconfig"), home: dir });
  });
  afterAll(async () => {
    for (const s of open) s.close();
    await server?.stop();
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("by IP: ClusterIP, then any Running pod's IP (in a service or not), never a host-network pod's, then hostIP:hostPort; a pod that starts running gets its identity on the open streams", async () => {
    const cluster = profile("10.96.0.10:80");
    const lonelyGet = get("10.1.0.50:8080");
    const lonely = profile("10.1.0.50:8080");
    const inService = profile("10.1.0.2:8080");
    const startingGet = get("10.1.0.51:8080");
    const starting = profile("10.1.0.51:8080");
    const agentHostPort = profile("10.2.0.1:9100");
    const agentOtherPort = profile("10.2.0.1:8080");
    const edgeHostPort = get("10.2.0.2:8443");
    const edgeOtherPort = profile("10.2.0.2:443");
    const all = [cluster, lonelyGet, lonely, inService, startingGet, starting, agentHostPort, agentOtherPort, edgeHostPort, edgeOtherPort];
    await waitFor(() => (all.every((s) => s.messages.length > 0) ? true : undefined), 30_000, "every first answer", failed);

    expect(last(cluster)).toMatchObject({ fullyQualifiedName: "web.shop.svc.cluster.local" });
    expect(last(cluster)!.endpoint).toBeUndefined();
    expect(endpointsOf(lonelyGet)).toEqual(new Map([["10.1.0.50:8080", identityOf("lonely")]]));
    expect(addrsOf(lonelyGet.messages[0], "add")[0]!.metricLabels).toMatchObject({ namespace: NS, pod: "lonely", serviceaccount: "lonely" });
    expect(last(lonely)!.endpoint!.tlsIdentity).toEqual({ dnsLikeIdentity: { name: identityOf("lonely") }, serverName: { name: identityOf("lonely") } });
    expect(last(inService)!.endpoint!.tlsIdentity?.dnsLikeIdentity?.name).toBe(identityOf("web"));
    // Pending: found by IP but not described (Linkerd sends the address without pod metadata).
    expect(endpointsOf(startingGet)).toEqual(new Map([["10.1.0.51:8080", ""]]));
    expect(last(starting)!.endpoint!.tlsIdentity).toBeUndefined();
    // The host-network agent is no pod-network IP: only its host port finds it.
    expect(last(agentHostPort)!.endpoint!.tlsIdentity?.dnsLikeIdentity?.name).toBe(identityOf("agent"));
    expect(last(agentOtherPort)!.endpoint!.tlsIdentity).toBeUndefined();
    expect(endpointsOf(edgeHostPort)).toEqual(new Map([["10.2.0.2:8443", identityOf("edge")]]));
    expect(last(edgeOtherPort)!.endpoint!.tlsIdentity).toBeUndefined();

    const counts = all.map((s) => s.messages.length);
    api.apply(pod({ name: "starting", ip: "10.1.0.51" }));
    await waitFor(() => (endpointsOf(startingGet).get("10.1.0.51:8080") === identityOf("starting") ? true : undefined), 10_000, "the started pod's identity on Get", failed);
    await waitFor(() => (last(starting)?.endpoint?.tlsIdentity?.dnsLikeIdentity?.name === identityOf("starting") ? true : undefined), 10_000, "the started pod's identity on GetProfile", failed);
    // The pod's change concerned only its own address: every other stream got nothing.
    const after = all.map((s) => s.messages.length);
    expect(after.filter((n, i) => n !== counts[i])).toHaveLength(2);

    // The pod goes away: its address is nobody's again.
    api.remove("Pod", NS, "lonely");
    await waitFor(() => (last(lonely)?.endpoint?.tlsIdentity === undefined ? true : undefined), 10_000, "the deleted pod's address without identity", failed);
    await waitFor(() => (endpointsOf(lonelyGet).get("10.1.0.50:8080") === "" ? true : undefined), 10_000, "the deleted pod's address without identity on Get", failed);
  });

  it("<hostname>.<svc>.<ns>.svc.cluster.local: Get streams that pod only, GetProfile answers its endpoint", async () => {
    const one = get("db-1.db.shop.svc.cluster.local:5432");
    const whole = get("db.shop.svc.cluster.local:5432");
    const endpoint = profile("db-1.db.shop.svc.cluster.local:5432");
    await waitFor(() => (endpointsOf(one).size === 1 && endpointsOf(whole).size === 2 && endpoint.messages.length > 0 ? true : undefined), 30_000, "the db lookups", failed);
    expect(endpointsOf(one)).toEqual(new Map([["10.1.0.21:5432", identityOf("db")]]));
    expect(last(endpoint)!.fullyQualifiedName ?? "").toBe("");
    expect(last(endpoint)!.endpoint!.addr).toEqual({ ip: { ipv4: ipv4Int("10.1.0.21") }, port: 5432 });
    // The pod is rescheduled with a new IP: the hostname follows it.
    api.apply(pod({ name: "db-1", sa: "db", ip: "10.1.0.22" }));
    api.apply(slice("db", [{ pod: "db-0", ip: "10.1.0.20", hostname: "db-0" }, { pod: "db-1", ip: "10.1.0.22", hostname: "db-1" }], 5432));
    await waitFor(() => (endpointsOf(one).has("10.1.0.22:5432") && endpointsOf(one).size === 1 ? true : undefined), 10_000, "db-1's new address", failed);
    await waitFor(() => (last(endpoint)?.endpoint?.addr.ip.ipv4 === ipv4Int("10.1.0.22") ? true : undefined), 10_000, "db-1's new profile", failed);
  });

  it("internalTrafficPolicy: Local: each client gets the endpoints on its own node (from its context token), none without a node", async () => {
    const n1 = get("web-local.shop.svc.cluster.local:80", "n1");
    const n2 = get("web-local.shop.svc.cluster.local:80", "n2");
    const nowhere = get("web-local.shop.svc.cluster.local:80");
    const cluster = get("web.shop.svc.cluster.local:80", "n1");
    await waitFor(() => ([n1, n2, nowhere, cluster].every((s) => s.messages.length > 0) ? true : undefined), 30_000, "the web-local lookups", failed);
    expect([...endpointsOf(n1).keys()]).toEqual(["10.1.0.1:8080"]);
    expect([...endpointsOf(n2).keys()]).toEqual(["10.1.0.2:8080"]);
    expect(endpointsOf(nowhere).size).toBe(0);
    expect([...endpointsOf(cluster).keys()].sort()).toEqual(["10.1.0.1:8080", "10.1.0.2:8080"]);
    // web-2 moves to n1: n2's client loses it, n1's gains it.
    api.apply(pod({ name: "web-2", sa: "web", ip: "10.1.0.2", node: "n1" }));
    await waitFor(() => (endpointsOf(n1).size === 2 && endpointsOf(n2).size === 0 ? true : undefined), 10_000, "web-2 on n1", failed);
    // The policy is dropped: every client gets every endpoint.
    api.apply(service("web-local", { clusterIP: "10.96.0.11" }));
    await waitFor(() => (endpointsOf(nowhere).size === 2 ? true : undefined), 10_000, "web-local without Local", failed);
  });

  it("a ServerAuthorization reaches an open WatchPort within a second, with Linkerd's serverauthorization metadata", async () => {
    api.apply({
      apiVersion: "policy.linkerd.io/v1beta3",
      kind: "Server",
      metadata: { name: "web-http", namespace: NS, labels: { tier: "front" } },
      spec: { podSelector: { matchLabels: { "linkerd.io/control-plane-ns": "meshtls" } }, port: 8080, proxyProtocol: "HTTP/1" },
    });
    const watch = bufCurl({ port: server.policyPort, method: "io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort", body: { workload: JSON.stringify({ ns: NS, pod: "web-1" }), port: 8080 }, timeoutMs: 120_000 });
    open.push(watch);
    await waitFor(() => ((watch.messages.at(-1)?.labels as { name?: string } | undefined)?.name === "web-http" ? true : undefined), 10_000, "the Server on WatchPort", failed);
    expect(watch.messages.at(-1)!.authorizations ?? []).toEqual([]);
    const count = watch.messages.length;
    const appliedAt = Date.now();
    api.apply({
      apiVersion: "policy.linkerd.io/v1beta1",
      kind: "ServerAuthorization",
      metadata: { name: "web-from-api", namespace: NS },
      spec: { server: { selector: { matchLabels: { tier: "front" } } }, client: { meshTLS: { serviceAccounts: [{ name: "api", namespace: "backend" }] } } },
    });
    await waitFor(() => watch.messages[count], 5_000, "the ServerAuthorization on WatchPort", failed);
    const latencyMs = watch.receivedAt[count]! - appliedAt;
    console.log(`ServerAuthorization apply → WatchPort message: ${latencyMs} ms`);
    expect(latencyMs).toBeLessThan(1_000);
    expect(watch.messages[count]).toMatchObject({
      authorizations: [
        {
          metadata: { resource: { group: "policy.linkerd.io", kind: "serverauthorization", name: "web-from-api" } },
          labels: { group: "policy.linkerd.io", kind: "serverauthorization", name: "web-from-api" },
          authentication: { meshTLS: { identities: { identities: [{ name: "api.backend.serviceaccount.identity.meshtls.cluster.local" }] } } },
        },
      ],
    });
    // One the controller refuses (no client authentication) is left out with a warning naming it.
    api.apply({ apiVersion: "policy.linkerd.io/v1beta1", kind: "ServerAuthorization", metadata: { name: "broken", namespace: NS }, spec: { server: { name: "web-http" }, client: {} } });
    await waitFor(() => server.logs.find((l) => l.name === "broken" && String(l.msg).includes("left out")), 10_000, "the warning", failed);
  });
});
