import { credentials, type ServiceError } from "@grpc/grpc-js";
import { DestinationClient, DestinationProfile, tcpAddressToString, type Update } from "@meshtls/api";
import { afterEach, describe, expect, it } from "vitest";
import type { EndpointRegistry, RegistryChange, RegistryEndpoint, RegistryService, RegistrySnapshot, RegistryWorkload } from "./registry.js";
import { eventually, startServer } from "./test-support.js";

const endpoint = (address: string, extra: Partial<RegistryEndpoint> = {}): RegistryEndpoint => ({ address, meshed: true, serviceAccount: "sa", inboundPort: 4143, weight: 10_000, ...extra });

/**
 * A registry as the Kubernetes source is one: it says which services and
 * addresses each change concerns, keeps the other services' objects, and
 * finds workloads by IP (counting the lookups).
 */
function createRegistry(initial: RegistryService[], initialWorkloads: Record<string, RegistryWorkload> = {}) {
  let snapshot: RegistrySnapshot = { services: initial };
  let workloads = { ...initialWorkloads };
  let lookups = 0;
  const listeners = new Set<(snapshot: RegistrySnapshot, change?: RegistryChange) => void>();
  const registry: EndpointRegistry = {
    list: () => snapshot,
    watch(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    findWorkload(ip) {
      lookups++;
      return workloads[ip];
    },
  };
  return {
    registry,
    /** Replaces (or deletes) the service `key`, or a workload (`ip`), and says so. */
    change(edit: { service?: [string, RegistryService | undefined]; workload?: [string, RegistryWorkload | undefined] }) {
      const services = new Set<string>();
      const addresses = new Set<string>();
      if (edit.service !== undefined) {
        const [key, next] = edit.service;
        snapshot = { services: [...snapshot.services.filter((s) => `${s.name}.${s.namespace}` !== key), ...(next === undefined ? [] : [next])] };
        services.add(key);
      }
      if (edit.workload !== undefined) {
        const [ip, next] = edit.workload;
        workloads = { ...workloads };
        if (next === undefined) delete workloads[ip];
        else workloads[ip] = next;
        addresses.add(ip);
      }
      for (const listener of listeners) listener(snapshot, { services, addresses });
    },
    /** A registry that never changes, holding the same now (for a fresh server). */
    frozen(): EndpointRegistry {
      const s = snapshot;
      const w = workloads;
      return { list: () => s, watch: () => () => undefined, findWorkload: (ip) => w[ip] };
    },
    lookups: () => lookups,
  };
}

function openProfile(address: string, path: string) {
  const client = new DestinationClient(address, credentials.createInsecure());
  const profiles: DestinationProfile[] = [];
  const call = client.getProfile({ scheme: "", path, contextToken: "" });
  call.on("data", (p: DestinationProfile) => profiles.push(p));
  call.on("error", (e: ServiceError) => (e.code === 1 ? undefined : profiles.push(DestinationProfile.fromPartial({ fullyQualifiedName: `error ${e.code}` }))));
  return {
    profiles,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

function openGet(address: string, path: string, contextToken = "") {
  const client = new DestinationClient(address, credentials.createInsecure());
  const updates: Update[] = [];
  const call = client.get({ scheme: "k8s", path, contextToken });
  call.on("data", (u: Update) => updates.push(u));
  call.on("error", () => undefined);
  return {
    updates,
    /** The endpoints the stream's adds and removes leave, as "ip:port". */
    current(): string[] {
      const set = new Set<string>();
      for (const u of updates) {
        if (u.update?.$case === "add") for (const a of u.update.value.addrs) set.add(tcpAddressToString(a.addr!));
        if (u.update?.$case === "remove") for (const a of u.update.value.addrs) set.delete(tcpAddressToString(a));
      }
      return [...set].sort();
    },
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

const encoded = (p: DestinationProfile | undefined): string => (p === undefined ? "" : Buffer.from(DestinationProfile.encode(p).finish()).toString("base64"));

describe("Destination lookups: workloads by IP, hostnames, node-local services, change-driven GetProfile", () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("an IP that is no ClusterIP is the registry's workload (pod IP or hostIP:hostPort), for Get and GetProfile; unknown IPs stay identity-less", async () => {
    const reg = createRegistry([{ name: "web", namespace: "shop", clusterIP: "10.96.0.1", ports: [{ port: 80, targetPort: 8080 }], endpoints: [endpoint("10.0.0.1")] }], {
      "10.0.0.9": { namespace: "batch", endpoint: endpoint("10.0.0.9", { serviceAccount: "job", pod: "job-1", protocolHints: { opaquePorts: [5432], skippedPorts: [] } }) },
    });
    const server = await startServer({ registry: reg.registry });
    cleanups.push(server.stop);
    const pod = openGet(server.address, "10.0.0.9:5432");
    const profile = openProfile(server.address, "10.0.0.9:5432");
    cleanups.push(pod.close, profile.close);
    await eventually(() => pod.updates.length > 0 && profile.profiles.length > 0);
    const add = pod.updates[0]!.update;
    expect(add?.$case).toBe("add");
    const addr = add?.$case === "add" ? add.value.addrs[0] : undefined;
    expect(addr?.tlsIdentity?.strategy).toEqual({ $case: "dnsLikeIdentity", value: { name: "job.batch.serviceaccount.identity.meshtls.cluster.local" } });
    expect(add?.$case === "add" ? add.value.metricLabels : {}).toEqual({ namespace: "batch" });
    expect(profile.profiles[0]!.endpoint?.tlsIdentity).toEqual(addr?.tlsIdentity);
    expect(profile.profiles[0]!.opaqueProtocol).toBe(true);
    // With a workload lookup, a service endpoint's IP is found through the registry too (Linkerd indexes pods, not endpoints).
    const viaService = openProfile(server.address, "10.0.0.1:8080");
    cleanups.push(viaService.close);
    await eventually(() => viaService.profiles.length > 0);
    expect(viaService.profiles[0]!.endpoint?.tlsIdentity).toBeUndefined();
  });

  it("<hostname>.<svc>.<ns>.svc.<domain> streams only that endpoint; its GetProfile is that endpoint", async () => {
    const reg = createRegistry([
      {
        name: "db",
        namespace: "data",
        ports: [{ port: 5432, targetPort: 5432 }],
        endpoints: [endpoint("10.0.1.1", { hostname: "db-0" }), endpoint("10.0.1.2", { hostname: "db-1" })],
      },
    ]);
    const server = await startServer({ registry: reg.registry });
    cleanups.push(server.stop);
    const one = openGet(server.address, "db-1.db.data.svc.cluster.local:5432");
    const all = openGet(server.address, "db.data.svc.cluster.local:5432");
    const profile = openProfile(server.address, "db-1.db.data.svc.cluster.local:5432");
    const missing = openProfile(server.address, "db-7.db.data.svc.cluster.local:5432");
    cleanups.push(one.close, all.close, profile.close, missing.close);
    await eventually(() => one.current().length === 1 && all.current().length === 2 && profile.profiles.length > 0 && missing.profiles.length > 0);
    expect(one.current()).toEqual(["10.0.1.2:5432"]);
    expect(tcpAddressToString(profile.profiles[0]!.endpoint!.addr!)).toBe("10.0.1.2:5432");
    expect(profile.profiles[0]!.fullyQualifiedName).toBe("");
    expect(missing.profiles[0]!.endpoint).toBeUndefined();
    // db-1 moves to another IP: the hostname stream follows it.
    reg.change({ service: ["db.data", { name: "db", namespace: "data", ports: [{ port: 5432, targetPort: 5432 }], endpoints: [endpoint("10.0.1.1", { hostname: "db-0" }), endpoint("10.0.1.3", { hostname: "db-1" })] }] });
    await eventually(() => one.current()[0] === "10.0.1.3:5432" && profile.profiles.length === 2);
    expect(tcpAddressToString(profile.profiles[1]!.endpoint!.addr!)).toBe("10.0.1.3:5432");
  });

  it("internalTrafficPolicy Local: only the endpoints on the client's node, none without a node; switching the policy re-filters open streams", async () => {
    const svc = (local: boolean): RegistryService => ({
      name: "cache",
      namespace: "shop",
      ports: [{ port: 6379, targetPort: 6379 }],
      endpoints: [endpoint("10.0.2.1", { nodeName: "n1" }), endpoint("10.0.2.2", { nodeName: "n2" }), endpoint("10.0.2.3", { nodeName: "n1" })],
      ...(local ? { internalTrafficPolicy: "Local" as const } : {}),
    });
    const reg = createRegistry([svc(true)]);
    const server = await startServer({ registry: reg.registry });
    cleanups.push(server.stop);
    const n1 = openGet(server.address, "cache.shop.svc.cluster.local:6379", '{"ns":"shop","nodeName":"n1","pod":"a"}');
    const n2 = openGet(server.address, "cache.shop.svc.cluster.local:6379", '{"ns":"shop","nodeName":"n2","pod":"b"}');
    const none = openGet(server.address, "cache.shop.svc.cluster.local:6379", '{"ns":"shop","pod":"c"}');
    cleanups.push(n1.close, n2.close, none.close);
    await eventually(() => n1.updates.length > 0 && n2.updates.length > 0 && none.updates.length > 0);
    expect(n1.current()).toEqual(["10.0.2.1:6379", "10.0.2.3:6379"]);
    expect(n2.current()).toEqual(["10.0.2.2:6379"]);
    expect(none.current()).toEqual([]);
    expect(none.updates[0]!.update).toEqual({ $case: "noEndpoints", value: { exists: true } });
    expect(server.handle.watchedTargets()).toBe(3);
    reg.change({ service: ["cache.shop", svc(false)] });
    const everyone = ["10.0.2.1:6379", "10.0.2.2:6379", "10.0.2.3:6379"];
    await eventually(() => [n1, n2, none].every((s) => JSON.stringify(s.current()) === JSON.stringify(everyone)), 5000, "every endpoint for every client");
  });

  it("GetProfile streams are recomputed only for changes that concern them, and always equal a fresh server's answer", async () => {
    const svc = (name: string, ips: string[], clusterIP?: string, opaque: number[] = []): RegistryService => ({
      name,
      namespace: "default",
      ...(clusterIP === undefined ? {} : { clusterIP }),
      ports: [{ port: 80, targetPort: 8080 }],
      endpoints: ips.map((ip) => endpoint(ip, { serviceAccount: name, protocolHints: { opaquePorts: opaque, skippedPorts: [] } })),
    });
    const pod = (sa: string): RegistryWorkload => ({ namespace: "default", endpoint: endpoint("", { serviceAccount: sa }) });
    const reg = createRegistry([svc("a", ["10.0.0.1"], "10.96.0.1"), svc("b", ["10.0.0.2"], "10.96.0.2")], { "10.0.0.1": pod("a"), "10.0.0.2": pod("b") });
    const server = await startServer({ registry: reg.registry });
    cleanups.push(server.stop);
    const paths = ["a.default.svc.cluster.local:80", "10.96.0.1:80", "10.96.0.2:80", "10.96.0.3:80", "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"];
    const streams = new Map(paths.map((p) => [p, openProfile(server.address, p)]));
    for (const s of streams.values()) cleanups.push(s.close);
    await eventually(() => [...streams.values()].every((s) => s.profiles.length > 0));

    // The IP targets' first answers: 4 lookups (10.0.0.1, .2, .3 and 10.96.0.3, nobody's ClusterIP yet; a ClusterIP never asks the registry).
    expect(reg.lookups()).toBe(4);
    const steps: [string, Parameters<typeof reg.change>[0], number][] = [
      // A change to service a concerns a's name and ClusterIP only: no workload is looked up again.
      ["a's endpoints become opaque", { service: ["a.default", svc("a", ["10.0.0.1"], "10.96.0.1", [8080])] }, 0],
      ["pod 10.0.0.3 appears", { workload: ["10.0.0.3", pod("c")] }, 1],
      ["pod 10.0.0.2 changes its service account", { workload: ["10.0.0.2", pod("b2")] }, 1],
      ["c takes ClusterIP 10.96.0.3", { service: ["c.default", svc("c", ["10.0.0.3"], "10.96.0.3")] }, 0],
      // 10.96.0.2 was b's ClusterIP: now it is looked up as a workload.
      ["b is deleted", { service: ["b.default", undefined] }, 1],
      // 10.96.0.1 is a's no more (looked up), 10.96.0.2 is a's now.
      ["a moves to b's ClusterIP", { service: ["a.default", svc("a", ["10.0.0.1"], "10.96.0.2")] }, 1],
    ];
    for (const [step, edit, lookups] of steps) {
      const before = new Map([...streams].map(([p, s]) => [p, s.profiles.length]));
      const lookupsBefore = reg.lookups();
      reg.change(edit);
      const fresh = await startServer({ registry: reg.frozen() });
      try {
        for (const path of paths) {
          const expected = openProfile(fresh.address, path);
          try {
            await eventually(() => expected.profiles.length > 0, 5000, `${step}: fresh ${path}`);
            await eventually(() => encoded(streams.get(path)!.profiles.at(-1)) === encoded(expected.profiles[0]), 5000, `${step}: ${path} to equal a fresh server's`);
          } finally {
            expected.close();
          }
        }
      } finally {
        await fresh.stop();
      }
      expect(reg.lookups() - lookupsBefore, `${step}: workload lookups`).toBe(lookups);
      // Only streams whose answer changed got a message, and one each.
      for (const [path, s] of streams) {
        const added = s.profiles.length - before.get(path)!;
        expect(added, `${step}: ${path}`).toBeLessThanOrEqual(1);
        if (added === 1) expect(encoded(s.profiles.at(-1)), `${step}: ${path}`).not.toBe(encoded(s.profiles.at(-2)));
      }
    }
  });
});
