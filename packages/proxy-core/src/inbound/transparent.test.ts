// Transparent inbound: a redirected connection's original port picks the
// workload port, under that port's policy; a direct one goes to the workload
// as before; one whose original destination is a proxy listener is refused.
// The original destination comes from a stand-in lookup here; the real one
// (SO_ORIGINAL_DST behind iptables) is tested in @meshtls/orig-dst and tests/netns.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProxy } from "../proxy.js";
import type { Proxy, ProxyAddresses } from "../proxy.js";
import { createStaticPolicySource } from "../static-policy.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "../test-mesh.js";

const lo = { host: "127.0.0.1", port: 0 };

/** A workload port that answers `<name>:<first bytes>` and closes. */
async function workload(name: string): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((socket) => socket.once("data", (data: Buffer) => socket.end(`${name}:${String(data)}`)));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

/** Sends `hello` to the proxy's inbound port and returns what comes back before close. */
function ask(port: number): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write("hello"));
    socket.on("data", (chunk: Buffer) => (data += String(chunk)));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(data));
  });
}

describe("inbound with original destinations (transparent mode)", () => {
  const servers: net.Server[] = [];
  let proxy: Proxy;
  let addresses: ProxyAddresses;
  let ports: { main: number; other: number; denied: number };
  let next: { address: string; port: number; redirected: boolean } | undefined;

  beforeAll(async () => {
    const mesh = await createTestMesh();
    const [main, other, denied] = await Promise.all([workload("main"), workload("other"), workload("denied")]);
    servers.push(main.server, other.server, denied.server);
    ports = { main: main.port, other: other.port, denied: denied.port };
    proxy = createProxy({
      identity: identityOf("b"),
      credentials: createStore(await mesh.issue(identityOf("b"))),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map()),
      outbound: { listen: lo },
      admin: { listen: lo },
      policy: createStaticPolicySource({ ports: { [denied.port]: { policy: "deny" } } }),
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: main.port }, originalDestination: () => next },
    });
    addresses = await proxy.start();
  });

  afterAll(async () => {
    await proxy.stop();
    for (const server of servers) server.close();
  });

  it("forwards a redirected connection to the port it was going to", async () => {
    next = { address: "10.77.0.12", port: ports.other, redirected: true };
    expect(await ask(addresses.inbound.port)).toBe("other:hello");
  });

  it("applies the original port's policy", async () => {
    next = { address: "10.77.0.12", port: ports.denied, redirected: true };
    expect(await ask(addresses.inbound.port)).toBe("");
  });

  it("handles a connection nothing redirected as direct: the workload's own port", async () => {
    next = { address: "127.0.0.1", port: addresses.inbound.port, redirected: false };
    expect(await ask(addresses.inbound.port)).toBe("main:hello");
    next = undefined;
    expect(await ask(addresses.inbound.port)).toBe("main:hello");
  });

  it("refuses an original destination that is one of the proxy's listeners (a loop)", async () => {
    next = { address: "10.77.0.12", port: addresses.admin.port, redirected: true };
    expect(await ask(addresses.inbound.port)).toBe("");
  });
});
