import http2 from "node:http2";
import { credentials, type ServiceError } from "@grpc/grpc-js";
import { DestinationClient as GrpcDestinationClient, GetDestination, type Update } from "@meshtls/api";
import { afterEach, describe, expect, it } from "vitest";
import { createStaticRegistry, type RegistrySnapshot } from "./registry.js";
import { eventually, startServer } from "./test-support.js";

const snapshot = (endpoints: number, generation: number): RegistrySnapshot => ({
  services: [
    {
      name: "api",
      namespace: "default",
      ports: [],
      endpoints: Array.from({ length: endpoints }, (_, i) => ({
        address: `10.${generation}.${i >> 8}.${i & 255}`,
        meshed: true,
        serviceAccount: "api",
        inboundPort: 4143,
        weight: 1,
      })),
    },
  ],
});

describe("server limits", () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("ends a stream whose client does not read instead of buffering without bound", async () => {
    const registry = createStaticRegistry(snapshot(500, 1));
    const server = await startServer({ registry, maxPendingBytesPerStream: 512 * 1024 });
    cleanups.push(server.stop);

    // A raw HTTP/2 client that sends a Get and never reads the response.
    const session = http2.connect(`http://${server.address}`);
    cleanups.push(() => session.destroy());
    const body = GetDestination.encode({ scheme: "k8s", path: "api.default:80", contextToken: "" }).finish();
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    Buffer.from(body).copy(frame, 5);
    const stuck = session.request({ ":method": "POST", ":path": "/io.linkerd.proxy.destination.Destination/Get", "content-type": "application/grpc", te: "trailers" });
    stuck.end(frame);
    stuck.pause();

    // A client that reads keeps receiving.
    const client = new GrpcDestinationClient(server.address, credentials.createInsecure());
    cleanups.push(() => client.close());
    const updates: Update[] = [];
    const call = client.get({ scheme: "k8s", path: "api.default:80", contextToken: "" });
    call.on("data", (u: Update) => updates.push(u));
    call.on("error", (_e: ServiceError) => undefined);
    cleanups.push(() => call.cancel());
    await eventually(() => server.handle.openStreams() === 2, 5000, "both streams");

    for (let generation = 2; generation < 40 && server.handle.openStreams() === 2; generation++) {
      registry.set(snapshot(500, generation));
      await new Promise((r) => setTimeout(r, 20));
    }
    await eventually(() => server.handle.openStreams() === 1, 5000, "the stuck stream to be dropped");
    const before = updates.length;
    registry.set(snapshot(500, 99));
    await eventually(() => updates.length >= before + 2, 5000, "the reading stream's next updates");
  });

  it("refuses streams beyond maxStreams with RESOURCE_EXHAUSTED", async () => {
    const server = await startServer({ registry: createStaticRegistry(snapshot(1, 1)), maxStreams: 2 });
    cleanups.push(server.stop);
    const client = new GrpcDestinationClient(server.address, credentials.createInsecure());
    cleanups.push(() => client.close());
    const codes: (number | undefined)[] = [];
    for (let i = 0; i < 3; i++) {
      const call = client.get({ scheme: "k8s", path: "api.default:80", contextToken: "" });
      call.on("data", () => codes.push(undefined));
      call.on("error", (e: ServiceError) => codes.push(e.code));
      cleanups.push(() => call.cancel());
      await eventually(() => codes.length === i + 1, 5000, `stream ${i}`);
    }
    expect(codes).toEqual([undefined, undefined, 8]);
  });
});
