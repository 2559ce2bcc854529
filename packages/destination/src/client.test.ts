import { afterEach, describe, expect, it } from "vitest";
import { createDestinationClient, type EndpointSet } from "./client.js";
import { DestinationError } from "./errors.js";
import { createStaticRegistry, type RegistryService } from "./registry.js";
import { eventually, startServer } from "./test-support.js";

const service = (addresses: string[], meshed = true): RegistryService => ({
  name: "web",
  namespace: "shop",
  ports: [],
  endpoints: addresses.map((address, i) => ({ address, meshed, serviceAccount: "web", inboundPort: 4143, pod: `web-${i}`, weight: 10000 })),
});

const addresses = (set: EndpointSet | undefined): string[] => (set?.endpoints ?? []).map((e) => `${e.address}:${e.port}`).sort();

describe("destination client", () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("gives endpoints with identity, opaque port and labels, and follows changes", async () => {
    const registry = createStaticRegistry({ services: [service(["127.0.1.1", "127.0.1.2"])] });
    const server = await startServer({ registry });
    cleanups.push(server.stop);
    const client = createDestinationClient({ address: server.address, contextToken: '{"ns":"shop"}' });
    cleanups.push(() => client.close());
    const resolution = client.resolve("web:8080");
    const first = await resolution.ready({ timeoutMs: 5000 });
    expect(first.exists).toBe(true);
    expect(first.endpoints.find((e) => e.address === "127.0.1.1")).toEqual({
      address: "127.0.1.1",
      port: 8080,
      weight: 10000,
      identity: "web.shop.serviceaccount.identity.meshtls.cluster.local",
      opaqueTransportPort: 4143,
      labels: { namespace: "shop", service: "web", pod: "web-0", serviceaccount: "web", control_plane_ns: "meshtls" },
    });
    const seen: string[][] = [];
    resolution.subscribe((set) => seen.push(addresses(set)));
    registry.set({ services: [service(["127.0.1.2", "127.0.1.3"], false)] });
    await eventually(() => addresses(resolution.current()).join() === "127.0.1.2:8080,127.0.1.3:8080", 5000, "the change");
    expect(resolution.current()?.endpoints.every((e) => e.identity === undefined && e.opaqueTransportPort === undefined)).toBe(true);
    registry.set({ services: [] });
    await eventually(() => resolution.current()?.exists === false, 5000, "no_endpoints");
    expect(resolution.current()?.endpoints).toEqual([]);
  });

  it("shares one stream per authority and ends it with its last caller or signal", async () => {
    const registry = createStaticRegistry({ services: [service(["127.0.1.1"])] });
    const server = await startServer({ registry });
    cleanups.push(server.stop);
    const client = createDestinationClient({ address: server.address });
    cleanups.push(() => client.close());
    const controller = new AbortController();
    const one = client.resolve("web.shop.svc.cluster.local:80", { signal: controller.signal });
    const two = client.resolve("web.shop.svc.cluster.local:80");
    await Promise.all([one.ready(), two.ready()]);
    expect(server.handle.openStreams()).toBe(1);
    const iterated: string[][] = [];
    const loop = (async () => {
      for await (const set of one) iterated.push(addresses(set));
    })();
    controller.abort();
    await loop;
    expect(iterated).toEqual([["127.0.1.1:80"]]);
    await expect(one.ready()).rejects.toMatchObject({ code: "ERR_RESOLUTION_CLOSED" });
    expect(server.handle.openStreams()).toBe(1);
    two.close();
    await eventually(() => server.handle.openStreams() === 0, 5000, "the stream to end");
  });

  it("rejects a refused lookup with a coded error and times out without a server", async () => {
    const registry = createStaticRegistry();
    const server = await startServer({ registry });
    cleanups.push(server.stop);
    const client = createDestinationClient({ address: server.address });
    cleanups.push(() => client.close());
    const bad = client.resolve("not a name:80");
    const error = await bad.ready().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DestinationError);
    expect((error as DestinationError).code).toBe("ERR_RESOLUTION_REJECTED");
    await expect((async () => { for await (const _ of bad) { /* none */ } })()).rejects.toMatchObject({ code: "ERR_RESOLUTION_REJECTED" });

    const nowhere = createDestinationClient({ address: "127.0.0.1:1", backoff: { initialMs: 20, maxMs: 50 } });
    cleanups.push(() => nowhere.close());
    await expect(nowhere.resolve("web:80").ready({ timeoutMs: 300 })).rejects.toMatchObject({ code: "ERR_RESOLUTION_TIMEOUT" });
  });

  it("keeps the last known set while the server is down, reconnects and converges", async () => {
    const registry = createStaticRegistry({ services: [service(["127.0.1.1", "127.0.1.2"])] });
    let server = await startServer({ registry });
    const port = server.port;
    const client = createDestinationClient({ address: server.address, backoff: { initialMs: 50, maxMs: 200 } });
    cleanups.push(() => client.close());
    const resolution = client.resolve("web.shop:80");
    await resolution.ready();
    await server.stop();
    registry.set({ services: [service(["127.0.1.2", "127.0.1.9"])] });
    await new Promise((r) => setTimeout(r, 300));
    expect(addresses(resolution.current())).toEqual(["127.0.1.1:80", "127.0.1.2:80"]);
    server = await startServer({ registry }, port);
    cleanups.push(() => server.stop());
    await eventually(() => addresses(resolution.current()).join() === "127.0.1.2:80,127.0.1.9:80", 10_000, "convergence");
  });
});
