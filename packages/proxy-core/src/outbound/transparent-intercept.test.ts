// The transparent listener's intercept (the redirect check's probe, answered
// by the proxy itself and never forwarded) and the further /ready condition.
import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProxy } from "../proxy.js";
import type { Proxy, ProxyAddresses } from "../proxy.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "../test-mesh.js";

const lo = { host: "127.0.0.1", port: 0 };
const PROBE = { address: "10.77.9.99", port: 20001 };

function ask(port: number): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write("hello"));
    socket.on("data", (chunk: Buffer) => (data += String(chunk)));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(data));
  });
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port, path }, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    }).on("error", reject);
  });
}

describe("transparent outbound: connections the proxy answers itself", () => {
  let proxy: Proxy;
  let addresses: ProxyAddresses;
  let outside: net.Server;
  let next: { address: string; port: number; redirected: boolean } | undefined;
  let ready: { ok: true } | { ok: false; reason: string } = { ok: false, reason: "ERR_REDIRECT_MISSING: test" };
  const intercepted: string[] = [];

  beforeAll(async () => {
    const mesh = await createTestMesh();
    outside = net.createServer((socket) => socket.once("data", (data: Buffer) => socket.end(`outside:${String(data)}`)));
    await new Promise<void>((resolve) => outside.listen(0, "127.0.0.1", resolve));
    const outsidePort = (outside.address() as net.AddressInfo).port;
    proxy = createProxy({
      identity: identityOf("a"),
      credentials: createStore(await mesh.issue(identityOf("a"))),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map([[`127.0.0.1:${outsidePort}`, { exists: true, endpoints: [{ address: "127.0.0.1", port: outsidePort, weight: 1, labels: {} }] }]])),
      outbound: {
        listen: lo,
        transparent: {
          originalDestination: () => next,
          intercept: (socket, dst) => {
            if (dst.address !== PROBE.address || dst.port !== PROBE.port) return false;
            intercepted.push(`${dst.address}:${dst.port}`);
            socket.end("probe answered by the proxy\n");
            return true;
          },
        },
      },
      admin: { listen: lo },
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: 9 } },
      ready: () => ready,
    });
    addresses = await proxy.start();
    next = { address: "127.0.0.1", port: outsidePort, redirected: true };
  });

  afterAll(async () => {
    await proxy.stop({ drainMs: 0 });
    outside.close();
  });

  it("answers a connection the intercept takes, never forwarding or counting it as traffic", async () => {
    next = { ...PROBE, redirected: true };
    expect(await ask(addresses.outbound.port)).toBe("probe answered by the proxy\n");
    expect(intercepted).toEqual(["10.77.9.99:20001"]);
    const metrics = (await get(addresses.admin.port, "/metrics")).body;
    expect(metrics).not.toContain("10.77.9.99");
  });

  it("forwards every other redirected connection as before", async () => {
    const port = (outside.address() as net.AddressInfo).port;
    next = { address: "127.0.0.1", port, redirected: true };
    expect(await ask(addresses.outbound.port)).toBe("outside:hello");
    expect(intercepted).toHaveLength(1);
  });

  it("answers /ready 503 with the further condition's reason, 200 once it holds", async () => {
    expect(await get(addresses.admin.port, "/ready")).toEqual({ status: 503, body: expect.stringContaining("ERR_REDIRECT_MISSING: test") as string });
    ready = { ok: true };
    expect((await get(addresses.admin.port, "/ready")).status).toBe(200);
  });
});
