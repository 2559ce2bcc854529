// Transparent outbound: each connection goes to its original destination,
// looked up like any authority: mTLS to a meshed endpoint with its identity,
// plaintext (counted with its no-TLS reason) outside the mesh, refused when
// nothing redirected it. A stand-in lookup gives the original destination here;
// the real one (SO_ORIGINAL_DST behind iptables) is tested in @meshtls/orig-dst and tests/netns.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProxy } from "../proxy.js";
import type { Proxy, ProxyAddresses } from "../proxy.js";
import type { EndpointSet } from "../sources.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "../test-mesh.js";

const A = identityOf("a");
const B = identityOf("b");
const lo = { host: "127.0.0.1", port: 0 };
const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A server that answers `<name>:<first bytes>` and closes. */
async function answering(name: string): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((socket) => socket.once("data", (data: Buffer) => socket.end(`${name}:${String(data)}`)));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

/** An unmodified client: plain TCP, `hello`, everything until close. */
function ask(port: number): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write("hello"));
    socket.on("data", (chunk: Buffer) => (data += String(chunk)));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(data));
  });
}

describe("outbound with original destinations (transparent mode)", () => {
  const servers: net.Server[] = [];
  let a: Proxy;
  let b: Proxy;
  let aAddresses: ProxyAddresses;
  let outsidePort: number;
  let next: { address: string; port: number; redirected: boolean } | undefined;

  beforeAll(async () => {
    const mesh = await createTestMesh();
    const [app, outside] = await Promise.all([answering("b"), answering("outside")]);
    servers.push(app.server, outside.server);
    outsidePort = outside.port;
    b = createProxy({
      identity: B,
      credentials: createStore(await mesh.issue(B)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map()),
      outbound: { listen: lo },
      admin: { listen: lo },
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: app.port } },
    });
    const bAddresses = await b.start();
    const table = new Map<string, EndpointSet>([
      // Pod B's IP:port as the destination service answers it: B's proxy, with B's identity.
      ["10.77.0.12:8080", { exists: true, endpoints: [{ address: "127.0.0.1", port: bAddresses.inbound.port, weight: 1, identity: B, labels: {} }] }],
      // An address outside the mesh: the bare address, no identity.
      [`127.0.0.1:${outside.port}`, { exists: true, endpoints: [{ address: "127.0.0.1", port: outside.port, weight: 1, labels: {} }] }],
    ]);
    a = createProxy({
      identity: A,
      credentials: createStore(await mesh.issue(A)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(table),
      outbound: { listen: lo, transparent: { originalDestination: () => next } },
      admin: { listen: lo },
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: 9 } },
    });
    aAddresses = await a.start();
  });

  afterAll(async () => {
    await Promise.all([a.stop(), b.stop()]);
    for (const server of servers) server.close();
  });

  it("opens mTLS to a meshed original destination, checking its identity", async () => {
    next = { address: "10.77.0.12", port: 8080, redirected: true };
    expect(await ask(aAddresses.outbound.port)).toBe("b:hello");
    const text = await a.metrics.registry.metrics();
    expect(text).toMatch(new RegExp(`tcp_open_total\\{direction="outbound",peer="dst",target_addr="127\\.0\\.0\\.1:\\d+",tls="true",server_id="${escape(B)}"\\} 1`));
  });

  it("reaches an original destination outside the mesh in plaintext, counted with its reason", async () => {
    next = { address: "127.0.0.1", port: outsidePort, redirected: true };
    expect(await ask(aAddresses.outbound.port)).toBe("outside:hello");
    const text = await a.metrics.registry.metrics();
    expect(text).toContain(`tcp_open_total{direction="outbound",peer="dst",target_addr="127.0.0.1:${outsidePort}",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 1`);
  });

  it("refuses a connection nothing redirected, never forwarding it to itself", async () => {
    for (const dst of [undefined, { address: "127.0.0.1", port: aAddresses.outbound.port, redirected: false }]) {
      next = dst;
      expect(await ask(aAddresses.outbound.port)).toBe("");
    }
    const text = await a.metrics.registry.metrics();
    expect(text).toMatch(/outbound_tcp_errors_total\{error="no_original_destination"[^}]*\} 2/);
  });
});
