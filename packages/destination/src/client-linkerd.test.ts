import { Server, ServerCredentials, status, type ServerWritableStream } from "@grpc/grpc-js";
import { DestinationProfile, DestinationService, ipToTcpAddress, type DestinationServer, type GetDestination, type Update, type WeightedAddr } from "@meshtls/api";
import { afterEach, describe, expect, it } from "vitest";
import { createDestinationClient } from "./client.js";

// A destination server that answers as Linkerd's does, where it differs from
// meshtls's (controller/api/destination/server.go, endpoint_translator.go):
// NOT_FOUND for an unknown service, no first message for a service without
// endpoints, uri_like_identity with server_name for external workloads,
// authority_override for gateways, h2/opaque hints.
function weighted(ip: string, port: number, extra: Partial<WeightedAddr>): WeightedAddr {
  return { addr: ipToTcpAddress(ip, port), weight: 10000, metricLabels: {}, tlsIdentity: undefined, protocolHint: undefined, authorityOverride: undefined, ...extra };
}

const PROFILES: Record<string, DestinationProfile> = {
  // A ClusterIP: the service's name, which the client then resolves with Get.
  "10.96.0.30:80": DestinationProfile.fromPartial({ fullyQualifiedName: "external.shop.svc.cluster.local" }),
  // A pod IP: the endpoint itself.
  "127.0.6.1:8080": DestinationProfile.fromPartial({
    endpoint: weighted("127.0.6.1", 8080, { tlsIdentity: { strategy: { $case: "dnsLikeIdentity", value: { name: "pod.shop.serviceaccount.identity.linkerd.cluster.local" } }, serverName: undefined } }),
  }),
  // An address nobody knows: an empty profile.
  "192.0.2.9:443": DestinationProfile.fromPartial({}),
};

const ANSWERS: Record<string, (call: ServerWritableStream<GetDestination, Update>) => void> = {
  "missing.shop.svc.cluster.local:80": (call) => call.emit("error", { code: status.NOT_FOUND, details: "Service shop.missing not found" }),
  "empty.shop.svc.cluster.local:80": () => undefined,
  "external.shop.svc.cluster.local:80": (call) =>
    call.write({
      update: {
        $case: "add",
        value: {
          metricLabels: { service: "external" },
          addrs: [
            weighted("127.0.4.1", 8080, {
              tlsIdentity: { strategy: { $case: "uriLikeIdentity", value: { uri: "spiffe://example.org/vm/1" } }, serverName: { name: "vm-1.external.example.org" } },
              protocolHint: { protocol: { $case: "h2", value: {} }, opaqueTransport: undefined },
            }),
            // A URI identity without server_name cannot be used: left out, never plaintext.
            weighted("127.0.4.2", 8080, { tlsIdentity: { strategy: { $case: "uriLikeIdentity", value: { uri: "spiffe://example.org/vm/2" } }, serverName: undefined } }),
          ],
        },
      },
    }),
  "remote.shop.svc.cluster.local:80": (call) =>
    call.write({
      update: {
        $case: "add",
        value: {
          metricLabels: {},
          addrs: [
            weighted("127.0.5.1", 4143, {
              tlsIdentity: { strategy: { $case: "dnsLikeIdentity", value: { name: "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local" } }, serverName: undefined },
              authorityOverride: { authorityOverride: "web.shop.svc.cluster.local:8080" },
              protocolHint: { protocol: { $case: "opaque", value: {} }, opaqueTransport: { inboundPort: 65535 } },
            }),
          ],
        },
      },
    }),
};

describe("destination client against a Linkerd-like destination", () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function start(): Promise<{ address: string; calls: string[] }> {
    const server = new Server();
    const calls: string[] = [];
    const implementation: DestinationServer = {
      get: (call) => {
        calls.push(call.request.path);
        if (/^[0-9.]+:/.test(call.request.path)) {
          call.emit("error", { code: status.INVALID_ARGUMENT, details: "IP queries not supported by Get API" });
          return;
        }
        if (/\s/.test(call.request.path)) {
          call.emit("error", { code: status.INVALID_ARGUMENT, details: "invalid authority" });
          return;
        }
        ANSWERS[call.request.path]?.(call);
      },
      getProfile: (call) => {
        calls.push(`profile ${call.request.path}`);
        const profile = PROFILES[call.request.path];
        if (profile) call.write(profile);
        else call.emit("error", { code: status.UNIMPLEMENTED, details: "not here" });
      },
    };
    server.addService(DestinationService, implementation);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
    );
    cleanups.push(() => server.forceShutdown());
    return { address: `127.0.0.1:${port}`, calls };
  }

  it("reads NOT_FOUND as an unknown service at once, and retries in case it appears", async () => {
    const { address, calls } = await start();
    const client = createDestinationClient({ address, backoff: { initialMs: 50, maxMs: 100, jitter: 0 } });
    cleanups.push(() => client.close());
    const resolution = client.resolve("missing.shop.svc.cluster.local:80");
    expect(await resolution.ready({ timeoutMs: 5000 })).toEqual({ exists: false, endpoints: [] });
    await new Promise((r) => setTimeout(r, 400));
    expect(calls.filter((c) => c.startsWith("missing")).length).toBeGreaterThan(1);
  });

  it("reads a silent stream as no endpoints after initialTimeoutMs, not before", async () => {
    const { address } = await start();
    const client = createDestinationClient({ address, initialTimeoutMs: 300 });
    cleanups.push(() => client.close());
    const started = Date.now();
    const resolution = client.resolve("empty.shop.svc.cluster.local:80");
    expect(await resolution.ready({ timeoutMs: 5000 })).toEqual({ exists: true, endpoints: [] });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  it("keeps a URI identity with its server_name, leaves out one without, and keeps authority_override and hints", async () => {
    const { address } = await start();
    const client = createDestinationClient({ address });
    cleanups.push(() => client.close());
    const external = await client.resolve("external.shop.svc.cluster.local:80").ready({ timeoutMs: 5000 });
    expect(external.endpoints).toEqual([
      { address: "127.0.4.1", port: 8080, weight: 10000, identity: "spiffe://example.org/vm/1", serverName: "vm-1.external.example.org", protocolHint: "h2", labels: { service: "external" } },
    ]);
    const remote = await client.resolve("remote.shop.svc.cluster.local:80").ready({ timeoutMs: 5000 });
    // Linkerd ignores an inbound_port of 65535 (pb.rs).
    expect(remote.endpoints).toEqual([
      {
        address: "127.0.5.1",
        port: 4143,
        weight: 10000,
        identity: "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
        protocolHint: "opaque",
        authorityOverride: "web.shop.svc.cluster.local:8080",
        labels: {},
      },
    ]);
  });

  it("looks an IP:port that Get refuses up with GetProfile: a ClusterIP through its service's Get, a pod IP as its endpoint, an unknown IP as itself", async () => {
    const { address, calls } = await start();
    const client = createDestinationClient({ address });
    cleanups.push(() => client.close());
    const service = await client.resolve("10.96.0.30:80").ready({ timeoutMs: 5000 });
    expect(service.endpoints.map((e) => [e.address, e.identity])).toEqual([["127.0.4.1", "spiffe://example.org/vm/1"]]);
    expect(calls).toEqual(expect.arrayContaining(["10.96.0.30:80", "profile 10.96.0.30:80", "external.shop.svc.cluster.local:80"]));
    const pod = await client.resolve("127.0.6.1:8080").ready({ timeoutMs: 5000 });
    expect(pod.endpoints).toEqual([{ address: "127.0.6.1", port: 8080, weight: 10000, identity: "pod.shop.serviceaccount.identity.linkerd.cluster.local", labels: {} }]);
    const unknown = await client.resolve("192.0.2.9:443").ready({ timeoutMs: 5000 });
    expect(unknown.endpoints).toEqual([{ address: "192.0.2.9", port: 443, weight: 10000, labels: {} }]);
    // A name Get refuses is refused: GetProfile is only for IP lookups.
    await expect(client.resolve("bad name:80").ready({ timeoutMs: 5000 })).rejects.toMatchObject({ code: "ERR_RESOLUTION_REJECTED" });
    expect(calls).not.toContain("profile bad name:80");
  });
});

