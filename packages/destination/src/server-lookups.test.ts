import { DestinationProfile, tcpAddressToString } from "@meshtls/api";
import { describe, expect, it } from "vitest";
import type { RegistryEndpoint, RegistryService, RegistryWorkload } from "./registry.js";
import { cleanupsAfterEach, createChangingRegistry, currentEndpoints, eventually, openGet, openGetProfile, startServer } from "./test-support.js";

const endpoint = (address: string, extra: Partial<RegistryEndpoint> = {}): RegistryEndpoint => ({ address, meshed: true, serviceAccount: "sa", inboundPort: 4143, weight: 10_000, ...extra });

const encoded = (p: DestinationProfile | undefined): string => (p === undefined ? "" : Buffer.from(DestinationProfile.encode(p).finish()).toString("base64"));

describe("Destination lookups: workloads by IP, hostnames, node-local services, change-driven GetProfile", () => {
  const cleanups = cleanupsAfterEach();

  it("an IP that is no ClusterIP is the registry's workload (pod IP or hostIP:hostPort), for Get and GetProfile; unknown IPs stay identity-less", async () => {
    const reg = createChangingRegistry([{ name: "web", namespace: "shop", clusterIP: "10.96.0.1", ports: [{ port: 80, targetPort: 8080 }], endpoints: [endpoint("10.0.0.1")] }], {
      "10.0.0.9": { namespace: "batch", endpoint: endpoint("10.0.0.9", { serviceAccount: "job", pod: "job-1", protocolHints: { opaquePorts: [5432], skippedPorts: [] } }) },
    });
    const server = await startServer({ registry: reg.registry });
    cleanups.push(server.stop);
    const pod = openGet(server.address, "10.0.0.9:5432");
    const profile = openGetProfile(server.address, "10.0.0.9:5432");
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
    const viaService = openGetProfile(server.address, "10.0.0.1:8080");
    cleanups.push(viaService.close);
    await eventually(() => viaService.profiles.length > 0);
    expect(viaService.profiles[0]!.endpoint?.tlsIdentity).toBeUndefined();
  });

  it("<hostname>.<svc>.<ns>.svc.<domain> streams only that endpoint; its GetProfile is that endpoint", async () => {
    const reg = createChangingRegistry([
      {
        name: "db",
        namespace: "data",
        ports: [{ port: 5432, targetPort: 5432 }],
        endpoints: [endpoint("10.0.1.1", { hostname: "db-0" }), endpoint("10.0.1.2", { hostname: "db-1" })],
      },
    ], {});
    const server = await startServer({ registry: reg.registry });
    cleanups.push(server.stop);
    const one = openGet(server.address, "db-1.db.data.svc.cluster.local:5432");
    const all = openGet(server.address, "db.data.svc.cluster.local:5432");
    const profile = openGetProfile(server.address, "db-1.db.data.svc.cluster.local:5432");
    const missing = openGetProfile(server.address, "db-7.db.data.svc.cluster.local:5432");
    cleanups.push(one.close, all.close, profile.close, missing.close);
    await eventually(() => currentEndpoints(one.updates).length === 1 && currentEndpoints(all.updates).length === 2 && profile.profiles.length > 0 && missing.profiles.length > 0);
    expect(currentEndpoints(one.updates)).toEqual(["10.0.1.2:5432"]);
    expect(tcpAddressToString(profile.profiles[0]!.endpoint!.addr!)).toBe("10.0.1.2:5432");
    expect(profile.profiles[0]!.fullyQualifiedName).toBe("");
    expect(missing.profiles[0]!.endpoint).toBeUndefined();
    // db-1 moves to another IP: the hostname stream follows it.
    reg.change({ service: ["db.data", { name: "db", namespace: "data", ports: [{ port: 5432, targetPort: 5432 }], endpoints: [endpoint("10.0.1.1", { hostname: "db-0" }), endpoint("10.0.1.3", { hostname: "db-1" })] }] });
    await eventually(() => currentEndpoints(one.updates)[0] === "10.0.1.3:5432" && profile.profiles.length === 2);
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
    const reg = createChangingRegistry([svc(true)], {});
    const server = await startServer({ registry: reg.registry });
    cleanups.push(server.stop);
    const n1 = openGet(server.address, "cache.shop.svc.cluster.local:6379", '{"ns":"shop","nodeName":"n1","pod":"a"}');
    const n2 = openGet(server.address, "cache.shop.svc.cluster.local:6379", '{"ns":"shop","nodeName":"n2","pod":"b"}');
    const none = openGet(server.address, "cache.shop.svc.cluster.local:6379", '{"ns":"shop","pod":"c"}');
    cleanups.push(n1.close, n2.close, none.close);
    await eventually(() => n1.updates.length > 0 && n2.updates.length > 0 && none.updates.length > 0);
    expect(currentEndpoints(n1.updates)).toEqual(["10.0.2.1:6379", "10.0.2.3:6379"]);
    expect(currentEndpoints(n2.updates)).toEqual(["10.0.2.2:6379"]);
    expect(currentEndpoints(none.updates)).toEqual([]);
    expect(none.updates[0]!.update).toEqual({ $case: "noEndpoints", value: { exists: true } });
    expect(server.handle.watchedTargets()).toBe(3);
    reg.change({ service: ["cache.shop", svc(false)] });
    const everyone = ["10.0.2.1:6379", "10.0.2.2:6379", "10.0.2.3:6379"];
    await eventually(() => [n1, n2, none].every((s) => JSON.stringify(currentEndpoints(s.updates)) === JSON.stringify(everyone)), 5000, "every endpoint for every client");
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
    const reg = createChangingRegistry([svc("a", ["10.0.0.1"], "10.96.0.1"), svc("b", ["10.0.0.2"], "10.96.0.2")], { "10.0.0.1": pod("a"), "10.0.0.2": pod("b") });
    const server = await startServer({ registry: reg.registry });
    cleanups.push(server.stop);
    const paths = ["a.default.svc.cluster.local:80", "10.96.0.1:80", "10.96.0.2:80", "10.96.0.3:80", "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"];
    const streams = new Map(paths.map((p) => [p, openGetProfile(server.address, p)]));
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
          const expected = openGetProfile(fresh.address, path);
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
