import { tcpAddressToString, type DestinationProfile } from "@meshtls/api";
import { describe, expect, it } from "vitest";
import { createStaticRegistry, type RegistrySnapshot } from "./registry.js";
import { API_SERVICE, cleanupsAfterEach, eventually, openGetProfile, startServer } from "./test-support.js";

const snapshot: RegistrySnapshot = {
  services: [
    API_SERVICE,
    {
      name: "db",
      namespace: "data",
      ports: [{ port: 5432, targetPort: 5432 }],
      endpoints: [
        { address: "127.0.3.1", meshed: true, serviceAccount: "db", inboundPort: 4143, weight: 10000, protocolHints: { opaquePorts: [5432], skippedPorts: [] } },
      ],
    },
  ],
};

describe("Destination.GetProfile", () => {
  const cleanups = cleanupsAfterEach();

  async function setup() {
    const registry = createStaticRegistry(snapshot);
    const server = await startServer({ registry, trustDomain: "example.org", controlNamespace: "linkerd" });
    cleanups.push(server.stop);
    return { registry, server };
  }

  async function first(address: string, path: string, contextToken = ""): Promise<DestinationProfile> {
    const s = openGetProfile(address, path, contextToken);
    cleanups.push(s.close);
    await eventually(() => s.profiles.length > 0 || s.error() !== undefined, 5000, `a profile for ${path}`);
    if (s.error()) throw s.error();
    return s.profiles[0]!;
  }

  it("answers a service name, a short name and a name without a port with the fully qualified name and Linkerd's default retry budget", async () => {
    const { server } = await setup();
    for (const [path, token] of [["api.default.svc.cluster.local:80", ""], ["api:80", '{"ns":"default"}'], ["api.default.svc.cluster.local", ""]] as const) {
      const profile = await first(server.address, path, token);
      expect(profile.fullyQualifiedName, path).toBe("api.default.svc.cluster.local");
      expect(profile.endpoint, path).toBeUndefined();
      expect(profile.opaqueProtocol).toBe(false);
      expect(profile.retryBudget).toEqual({ retryRatio: expect.closeTo(0.2, 5), minRetriesPerSecond: 10, ttl: { seconds: 10n, nanos: 0 } });
    }
    // An unknown service still gets its name: the proxy's Get then learns it does not exist.
    expect((await first(server.address, "nope.default.svc.cluster.local:80")).fullyQualifiedName).toBe("nope.default.svc.cluster.local");
  });

  it("answers a ClusterIP with the service's name, a pod IP with its endpoint (identity, hint), an unknown IP with its bare address", async () => {
    const { server } = await setup();
    expect((await first(server.address, "10.96.0.10:80")).fullyQualifiedName).toBe("api.default.svc.cluster.local");
    const pod = await first(server.address, "127.0.1.1:8080");
    expect(pod.fullyQualifiedName).toBe("");
    const id = "api.default.serviceaccount.identity.linkerd.example.org";
    expect(pod.endpoint?.tlsIdentity).toEqual({ strategy: { $case: "dnsLikeIdentity", value: { name: id } }, serverName: { name: id } });
    expect(tcpAddressToString(pod.endpoint!.addr!)).toBe("127.0.1.1:8080");
    const opaque = await first(server.address, "127.0.3.1:5432");
    expect(opaque.opaqueProtocol).toBe(true);
    expect(opaque.endpoint?.protocolHint).toEqual({ protocol: { $case: "opaque", value: {} }, opaqueTransport: { inboundPort: 4143 } });
    const unknown = await first(server.address, "192.0.2.9:443");
    expect(unknown.endpoint?.tlsIdentity).toBeUndefined();
    expect(tcpAddressToString(unknown.endpoint!.addr!)).toBe("192.0.2.9:443");
  });

  it("sends a new profile when a registry change alters it, and nothing when it does not", async () => {
    const { server, registry } = await setup();
    const s = openGetProfile(server.address, "127.0.1.1:8080");
    cleanups.push(s.close);
    await eventually(() => s.profiles.length === 1);
    registry.set({ services: [...snapshot.services] });
    await new Promise((r) => setTimeout(r, 200));
    expect(s.profiles).toHaveLength(1);
    registry.set({ services: snapshot.services.slice(1) });
    await eventually(() => s.profiles.length === 2, 5000, "a second profile");
    expect(s.profiles[1]?.endpoint?.tlsIdentity).toBeUndefined();
  });

  it("refuses malformed paths with INVALID_ARGUMENT and counts its streams against the same limits as Get", async () => {
    const { server } = await setup();
    await expect(first(server.address, "api:0")).rejects.toMatchObject({ code: 3 });
    await first(server.address, "api.default.svc.cluster.local:80");
    expect(server.handle.openStreams()).toBe(1);
  });
});
