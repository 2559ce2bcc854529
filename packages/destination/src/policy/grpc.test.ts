import { credentials, Metadata, Server, ServerCredentials, status, type ServiceError } from "@grpc/grpc-js";
import { InboundServerPoliciesClient, type InboundServer } from "@meshtls/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createStaticRegistry } from "../registry.js";
import { eventually } from "../test-support.js";
import { createInboundPolicyController, policySourceOf } from "./controller.js";
import { createInboundPolicyServer, type InboundPolicyServerHandle } from "./grpc.js";
import { EMPTY_POLICY_MODEL } from "./model.js";

const workload = { name: "web-0", namespace: "shop", labels: {}, ports: [], opaquePorts: [] };

describe("InboundServerPolicies over grpc-js on loopback", () => {
  const registry = createStaticRegistry({ services: [], policy: { ...EMPTY_POLICY_MODEL, workloads: [workload] } });
  const server = new Server();
  let handle: InboundPolicyServerHandle;
  let client: InboundServerPoliciesClient;

  beforeAll(async () => {
    handle = createInboundPolicyServer({ controller: createInboundPolicyController({ source: policySourceOf(registry) }), maxStreamsPerPeer: 2 });
    server.addService(handle.definition, handle.implementation);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    client = new InboundServerPoliciesClient(`127.0.0.1:${port}`, credentials.createInsecure());
  });
  afterAll(() => {
    client.close();
    handle.close();
    server.forceShutdown();
  });

  const getPort = (workloadText: string, port: number) =>
    new Promise<{ error: ServiceError | null; server?: InboundServer }>((resolve) =>
      client.getPort({ workload: workloadText, port }, (error, value) => resolve(value === undefined ? { error } : { error, server: value })),
    );

  it("GetPort: the policy, INVALID_ARGUMENT for a bad workload or port, NOT_FOUND for an unknown workload", async () => {
    expect((await getPort('{"ns":"shop","pod":"web-0"}', 80)).server?.labels).toEqual({ group: "", kind: "default", name: "all-unauthenticated" });
    expect((await getPort("not json {", 80)).error?.code).toBe(status.INVALID_ARGUMENT);
    expect((await getPort("shop:web-0", 0)).error?.code).toBe(status.INVALID_ARGUMENT);
    expect((await getPort("shop:web-0", 65536)).error?.code).toBe(status.INVALID_ARGUMENT);
    const unknown = (await getPort("shop:nope", 80)).error;
    expect([unknown?.code, unknown?.details]).toEqual([status.NOT_FOUND, "unknown server"]);
  });

  it("GetPort and WatchPort: bytes that are not a PortSpec get INVALID_ARGUMENT (grpc-js alone: INTERNAL)", async () => {
    const raw = (bytes: Buffer): Buffer => bytes;
    // Field 1 with wire type 7: no decoder accepts it.
    const malformed = Buffer.from([0x0f, 0x01]);
    const unary = await new Promise<ServiceError>((resolve) =>
      client.makeUnaryRequest("/io.linkerd.proxy.inbound.InboundServerPolicies/GetPort", raw, raw, malformed, new Metadata(), (e) => resolve(e as ServiceError)),
    );
    expect([unary.code, unary.details]).toEqual([status.INVALID_ARGUMENT, expect.stringMatching(/^the GetPort request is not a valid protobuf message/)]);
    const watch = client.makeServerStreamRequest("/io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort", raw, raw, malformed);
    const streamed = await new Promise<ServiceError>((resolve) => watch.on("error", resolve));
    expect([streamed.code, streamed.details]).toEqual([status.INVALID_ARGUMENT, expect.stringMatching(/^the WatchPort request is not a valid protobuf message/)]);
  });

  it("WatchPort: first the policy, then each change; the peer's share is enforced", async () => {
    const seen: InboundServer[] = [];
    const stream = client.watchPort({ workload: "shop:web-0", port: 80 });
    stream.on("data", (s: InboundServer) => seen.push(s));
    stream.on("error", () => {});
    await eventually(() => seen.length === 1, 5000, "the first Server");
    registry.set({ services: [], policy: { ...EMPTY_POLICY_MODEL, workloads: [{ ...workload, defaultPolicy: "deny" }] } });
    await eventually(() => seen.length === 2, 5000, "the changed Server");
    expect(seen[1]?.labels.name).toBe("deny");

    const second = client.watchPort({ workload: "shop:web-0", port: 81 });
    second.on("data", () => {});
    second.on("error", () => {});
    await eventually(() => handle.openStreams() === 2, 5000, "two streams");
    const third = client.watchPort({ workload: "shop:web-0", port: 82 });
    third.on("data", () => {});
    const refused = await new Promise<ServiceError>((resolve) => third.on("error", resolve));
    expect(refused.code).toBe(status.RESOURCE_EXHAUSTED);
    stream.cancel();
    second.cancel();
    await eventually(() => handle.openStreams() === 0, 5000, "streams released");
  });
});
