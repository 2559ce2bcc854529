import { credentials, status, type ServiceError } from "@grpc/grpc-js";
import { DestinationClient as GrpcDestinationClient, type Update } from "@meshtls/api";
import { describe, expect, it } from "vitest";
import { createRedialingChannel } from "./channel.js";
import { createStaticRegistry } from "./registry.js";
import { API_SERVICE, cleanupsAfterEach, startServer } from "./test-support.js";

/** The first thing a Get stream on `client` says: an update, or the error that ended it. */
function firstAnswer(client: GrpcDestinationClient): Promise<Update | ServiceError> {
  return new Promise((resolve) => {
    const call = client.get({ scheme: "k8s", path: "api.default.svc.cluster.local:80", contextToken: "" });
    call.on("data", (update: Update) => {
      resolve(update);
      call.cancel();
    });
    call.on("error", (error: ServiceError) => resolve(error));
  });
}

describe("createRedialingChannel", () => {
  const cleanups = cleanupsAfterEach();

  it("dials anew when the channel is in TRANSIENT_FAILURE, where grpc-js would fail streams until its backoff ends", async () => {
    const registry = createStaticRegistry({ services: [API_SERVICE] });
    const first = await startServer({ registry });
    first.kill();
    // A long reconnect backoff, as grpc-js's own grows to (120 s by default).
    const channel = createRedialingChannel(
      () => new GrpcDestinationClient(first.address, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1, "grpc.initial_reconnect_backoff_ms": 20_000 }),
    );
    cleanups.push(() => channel.close());
    const failing = channel.open();
    expect(await firstAnswer(failing)).toMatchObject({ code: status.UNAVAILABLE });

    const second = await startServer({ registry }, first.port);
    cleanups.push(() => second.stop());
    const startedAt = Date.now();
    // The failed channel keeps failing streams fast although the server is back.
    expect(await firstAnswer(failing)).toMatchObject({ code: status.UNAVAILABLE });
    expect(Date.now() - startedAt).toBeLessThan(1000);

    const redialed = channel.open();
    expect(redialed).not.toBe(failing);
    expect(channel.dials()).toBe(2);
    expect(await firstAnswer(redialed)).toMatchObject({ update: { $case: "add" } });
    expect(Date.now() - startedAt).toBeLessThan(3000);
    // A ready channel is kept: streams share its connection.
    expect(channel.open()).toBe(redialed);
    expect(channel.dials()).toBe(2);
  });
});
