import { Client, credentials, type ServiceError } from "@grpc/grpc-js";
import fc from "fast-check";
import { DestinationClient as GrpcDestinationClient, tcpAddressToString, type Update } from "@meshtls/api";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createStaticRegistry, type RegistrySnapshot } from "./registry.js";
import { API_SERVICE, cleanupsAfterEach, eventually, openGet, startServer } from "./test-support.js";

const snapshot: RegistrySnapshot = {
  services: [
    {
      ...API_SERVICE,
      endpoints: [
        ...API_SERVICE.endpoints,
        { address: "fd00::2", meshed: true, serviceAccount: "api", inboundPort: 4243, weight: 10000 },
        { address: "127.0.2.1", meshed: false, serviceAccount: "default", inboundPort: 4143, weight: 10000 },
      ],
    },
  ],
};

describe("Destination.Get server", () => {
  const cleanups = cleanupsAfterEach();

  async function setup() {
    const registry = createStaticRegistry(snapshot);
    const metrics = new Registry();
    const server = await startServer({ registry, metrics, trustDomain: "example.org", controlNamespace: "meshtls" });
    cleanups.push(server.stop);
    return { registry, metrics, server };
  }

  it("first sends every endpoint with identity, server name and inbound port; unmeshed without identity", async () => {
    const { server } = await setup();
    const s = openGet(server.address, "api.default.svc.cluster.local:80");
    cleanups.push(s.close);
    await eventually(() => s.updates.length > 0);
    const first = s.updates[0]?.update;
    expect(first?.$case).toBe("add");
    if (first?.$case !== "add") return;
    expect(first.value.metricLabels).toEqual({ namespace: "default", service: "api" });
    const byAddr = Object.fromEntries(first.value.addrs.map((a) => [tcpAddressToString(a.addr!), a]));
    expect(Object.keys(byAddr).sort()).toEqual(["127.0.1.1:8080", "127.0.2.1:8080", "[fd00::2]:8080"]);
    const id = "api.default.serviceaccount.identity.meshtls.example.org";
    expect(byAddr["127.0.1.1:8080"]?.tlsIdentity).toEqual({ strategy: { $case: "dnsLikeIdentity", value: { name: id } }, serverName: { name: id } });
    expect(byAddr["127.0.1.1:8080"]?.protocolHint?.opaqueTransport).toEqual({ inboundPort: 4143 });
    expect(byAddr["127.0.1.1:8080"]?.metricLabels).toEqual({ pod: "api-0", serviceaccount: "api", control_plane_ns: "meshtls" });
    expect(byAddr["[fd00::2]:8080"]?.protocolHint?.opaqueTransport).toEqual({ inboundPort: 4243 });
    expect(byAddr["127.0.2.1:8080"]?.tlsIdentity).toBeUndefined();
    expect(byAddr["127.0.2.1:8080"]?.protocolHint).toBeUndefined();
  });

  it("resolves short names with the context token's namespace; unknown services get no_endpoints{exists:false}", async () => {
    const { server } = await setup();
    const paths = ["api:80", "api.default:80", "api.default.svc:80", "API.default.svc.cluster.local.:80", "10.96.0.10:80"];
    for (const path of paths) {
      const s = openGet(server.address, path, '{"ns":"default","nodeName":"n1","pod":"web-0"}');
      cleanups.push(s.close);
      await eventually(() => s.updates.length > 0);
      expect(s.updates[0]?.update?.$case, path).toBe("add");
    }
    const other = openGet(server.address, "api:80", '{"ns":"other"}');
    const unknown = openGet(server.address, "nope.default.svc.cluster.local:80");
    const wrongPort = openGet(server.address, "api.default.svc.cluster.local:81");
    cleanups.push(other.close, unknown.close, wrongPort.close);
    await eventually(() => other.updates.length > 0 && unknown.updates.length > 0 && wrongPort.updates.length > 0);
    expect(other.updates[0]?.update).toEqual({ $case: "noEndpoints", value: { exists: false } });
    expect(unknown.updates[0]?.update).toEqual({ $case: "noEndpoints", value: { exists: false } });
    expect(wrongPort.updates[0]?.update).toEqual({ $case: "noEndpoints", value: { exists: true } });
  });

  it("answers <ip>:<port> with that endpoint and its identity, and unknown IPs without identity", async () => {
    const { server } = await setup();
    const s = openGet(server.address, "127.0.1.1:8080");
    const v6 = openGet(server.address, "[fd00::2]:8080");
    const stranger = openGet(server.address, "192.0.2.7:443");
    cleanups.push(s.close, v6.close, stranger.close);
    await eventually(() => s.updates.length > 0 && v6.updates.length > 0 && stranger.updates.length > 0);
    const add = s.updates[0]?.update;
    expect(add?.$case === "add" && add.value.addrs.map((a) => [tcpAddressToString(a.addr!), a.tlsIdentity?.serverName?.name])).toEqual([
      ["127.0.1.1:8080", "api.default.serviceaccount.identity.meshtls.example.org"],
    ]);
    const add6 = v6.updates[0]?.update;
    expect(add6?.$case === "add" && add6.value.addrs[0]?.addr?.ip?.ip).toEqual({ $case: "ipv6", value: { first: 0xfd00n << 48n, last: 2n } });
    const other = stranger.updates[0]?.update;
    expect(other?.$case === "add" && other.value.addrs.map((a) => [tcpAddressToString(a.addr!), a.tlsIdentity])).toEqual([
      ["192.0.2.7:443", undefined],
    ]);
  });

  it("refuses malformed paths with INVALID_ARGUMENT", async () => {
    const { server, metrics } = await setup();
    for (const path of ["", "api:", "api:0", "api:http", "a.b.c.d.e:80", "fd00::1:80", "x".repeat(5000) + ":80", "[zz]:80", "a_b:80"]) {
      const s = openGet(server.address, path);
      cleanups.push(s.close);
      await eventually(() => s.error() !== undefined);
      expect(s.error()?.code, path).toBe(3);
    }
    expect(await metrics.getSingleMetricAsString("destination_get_requests_total")).toContain('result="invalid_argument"} 9');
  });

  it("refuses bytes that are not a GetDestination with INVALID_ARGUMENT on Get and GetProfile (grpc-js alone: INTERNAL), counted", async () => {
    const { server, metrics } = await setup();
    const client = new Client(server.address, credentials.createInsecure());
    cleanups.push(() => client.close());
    const raw = (bytes: Buffer): Buffer => bytes;
    for (const path of ["/io.linkerd.proxy.destination.Destination/Get", "/io.linkerd.proxy.destination.Destination/GetProfile"]) {
      // Field 1 with wire type 7: no decoder accepts it.
      const call = client.makeServerStreamRequest(path, raw, raw, Buffer.from([0x0f, 0x01]));
      const error = await new Promise<ServiceError>((resolve) => call.on("error", resolve));
      expect([error.code, error.details], path).toEqual([3, expect.stringMatching(/request is not a valid protobuf message/)]);
    }
    expect(await metrics.getSingleMetricAsString("destination_get_requests_total")).toContain('result="invalid_argument"} 2');
  });

  it("sends remove and add on registry changes to every open stream, and no_endpoints when a service goes", async () => {
    const { server, registry } = await setup();
    const streams = [0, 1, 2].map(() => openGet(server.address, "api.default.svc.cluster.local:80"));
    cleanups.push(...streams.map((s) => s.close));
    await eventually(() => streams.every((s) => s.updates.length === 1));
    expect(server.handle.watchedTargets()).toBe(1);
    expect(server.handle.openStreams()).toBe(3);
    const [a, b, c] = snapshot.services[0]!.endpoints;
    registry.set({ services: [{ ...snapshot.services[0]!, endpoints: [a!, { ...b!, weight: 5 }, { ...c!, address: "127.0.2.2" }] }] });
    await eventually(() => streams.every((s) => s.updates.length === 3));
    for (const s of streams) {
      const [, remove, add] = s.updates.map((u) => u.update);
      expect(remove?.$case === "remove" && remove.value.addrs.map((x) => tcpAddressToString(x))).toEqual(["127.0.2.1:8080"]);
      expect(add?.$case === "add" && add.value.addrs.map((x) => [tcpAddressToString(x.addr!), x.weight])).toEqual([
        ["[fd00::2]:8080", 5],
        ["127.0.2.2:8080", 10000],
      ]);
    }
    registry.set({ services: [] });
    await eventually(() => streams.every((s) => s.updates.length === 5));
    expect(streams[0]!.updates[3]?.update?.$case).toBe("remove");
    expect(streams[0]!.updates[4]?.update).toEqual({ $case: "noEndpoints", value: { exists: false } });
    streams.forEach((s) => s.close());
    await eventually(() => server.handle.openStreams() === 0 && server.handle.watchedTargets() === 0);
  });

  it("answers any path and context token with a first message or INVALID_ARGUMENT, and keeps serving", async () => {
    const { server } = await setup();
    const client = new GrpcDestinationClient(server.address, credentials.createInsecure());
    cleanups.push(() => client.close());
    const pathArb = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.string({ unit: fc.constantFrom(..."api.default.svc:8[]0f:1"), maxLength: 40 }),
      fc.tuple(fc.ipV4(), fc.integer({ min: -1, max: 70000 })).map(([ip, port]) => `${ip}:${port}`),
    );
    const tokenArb = fc.oneof(fc.string({ maxLength: 40 }), fc.json({ maxDepth: 2 }), fc.constant('{"ns":"default"}'));
    await fc.assert(
      fc.asyncProperty(pathArb, tokenArb, async (path, contextToken) => {
        const outcome = await new Promise<string>((resolve) => {
          const call = client.get({ scheme: "k8s", path, contextToken });
          call.once("data", (u: Update) => {
            resolve(u.update?.$case ?? "empty");
            call.cancel();
          });
          call.on("error", (e: ServiceError) => resolve(e.code === 1 ? "cancelled" : `code ${e.code}`));
        });
        expect(["add", "noEndpoints", "code 3"]).toContain(outcome);
      }),
      { numRuns: 150 },
    );
    await eventually(() => server.handle.openStreams() === 0, 5000, "every stream to close");
  });
});
