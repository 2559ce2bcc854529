import http2 from "node:http2";
import net from "node:net";
import { credentials, type ServiceError } from "@grpc/grpc-js";
import { DestinationClient as GrpcDestinationClient, GetDestination, type Update } from "@meshtls/api";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { createStaticRegistry, type RegistrySnapshot } from "./registry.js";
import { createDestinationServer, peerOf } from "./server.js";
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

  it("gives each peer a share of the streams: one client cannot lock others out of discovery", async () => {
    const metrics = new Registry();
    const server = await startServer({ registry: createStaticRegistry(snapshot(1, 1)), maxStreams: 10, maxStreamsPerPeer: 2, metrics });
    cleanups.push(server.stop);
    // Two clients on two loopback addresses (a raw HTTP/2 client chooses its source address).
    const open = (localAddress: string) => {
      const session = http2.connect(`http://${server.address}`, { createConnection: () => net.connect({ host: "127.0.0.1", port: server.port, localAddress }) });
      session.on("error", () => undefined);
      cleanups.push(() => session.destroy());
      const body = GetDestination.encode({ scheme: "k8s", path: "api.default:80", contextToken: "" }).finish();
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32BE(body.length, 1);
      Buffer.from(body).copy(frame, 5);
      return () => {
        const stream = session.request({ ":method": "POST", ":path": "/io.linkerd.proxy.destination.Destination/Get", "content-type": "application/grpc", te: "trailers" });
        stream.end(frame);
        stream.resume();
        const result = { status: undefined as string | undefined, message: "" };
        const read = (h: http2.IncomingHttpHeaders) => {
          if (h["grpc-status"] !== undefined) Object.assign(result, { status: String(h["grpc-status"]), message: decodeURIComponent(String(h["grpc-message"] ?? "")) });
        };
        stream.on("response", read);
        stream.on("trailers", read);
        return result;
      };
    };
    const greedy = open("127.0.0.1");
    const held = [greedy(), greedy()];
    await eventually(() => server.handle.peerStreams("ip:127.0.0.1") === 2, 5000, "the greedy client's two streams");
    const third = greedy();
    await eventually(() => third.status !== undefined, 5000, "the refusal");
    expect(third).toEqual({ status: "8", message: "this client (ip:127.0.0.1) holds its maximum of 2 streams; close some or retry later" });
    const other = open("127.0.0.2")();
    await eventually(() => server.handle.peerStreams("ip:127.0.0.2") === 1, 5000, "another client's stream");
    expect(other.status).toBeUndefined();
    expect(held.map((h) => h.status)).toEqual([undefined, undefined]);
    expect(server.handle.openStreams()).toBe(3);
    expect(await metrics.getSingleMetricAsString("destination_get_refused_total")).toMatch(/^destination_get_refused_total\{reason="max_streams_per_peer"\} 1$/m);
  });

  it("names a peer by its certificate identity on mTLS, else by its address", () => {
    const call = (peer: string, raw?: Buffer) => ({ getPeer: () => peer, getAuthContext: () => (raw ? { sslPeerCertificate: { raw } } : {}) });
    expect(peerOf(call("127.0.0.1:5555"))).toBe("ip:127.0.0.1");
    expect(peerOf(call("[::1]:5555"))).toBe("ip:::1");
    // A certificate pki cannot read falls back to the address.
    expect(peerOf(call("10.0.0.1:1", Buffer.from([0x30, 0x00])))).toBe("ip:10.0.0.1");
  });

  it("refuses stream caps below 1", () => {
    expect(() => createDestinationServer({ registry: createStaticRegistry(snapshot(1, 1)), maxStreamsPerPeer: 0 })).toThrow(
      expect.objectContaining({ code: "ERR_CONFIG_INVALID" }),
    );
  });
});
