// Transparent outbound: each connection goes to its original destination,
// looked up like any authority: mTLS to a meshed endpoint with its identity,
// plaintext (counted with its no-TLS reason) outside the mesh, refused when
// nothing redirected it. HTTP is detected (unless the port is opaque) and goes
// per request through the HTTP layer with the original destination as its
// authority, as on a route. A stand-in lookup gives the original destination here;
// the real one (SO_ORIGINAL_DST behind iptables) is tested in @meshtls/orig-dst and tests/netns.
import { execFile } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProxy } from "../proxy.js";
import type { Proxy, ProxyAddresses } from "../proxy.js";
import type { EndpointSet } from "../sources.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "../test-mesh.js";

const A = identityOf("a");
const B = identityOf("b");
const C = identityOf("c");
const lo = { host: "127.0.0.1", port: 0 };
const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** A server that answers `<name>:<first bytes>` and closes. */
async function answering(name: string): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((socket) => socket.once("data", (data: Buffer) => socket.end(`${name}:${String(data)}`)));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

/** A server-first protocol: it greets before the client says anything. */
async function greeting(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((socket) => socket.end("greet"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

/** An HTTP app answering `c <method> <path>`. */
async function httpApp(): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((request, response) => response.end(`c ${request.method ?? ""} ${request.url ?? ""}`));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

/** A client that never writes: everything the server sends within `timeoutMs`. */
function listen(port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    const socket = net.connect({ host: "127.0.0.1", port });
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on("data", (chunk: Buffer) => (data += String(chunk)));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

const sample = (text: string, name: string, labels: Record<string, string>): number => {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
};

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
  let c: Proxy;
  let greetPort: number;
  let aAddresses: ProxyAddresses;
  let outsidePort: number;
  let next: { address: string; port: number; redirected: boolean } | undefined;

  beforeAll(async () => {
    const mesh = await createTestMesh();
    const [app, outside, greeter, cApp] = await Promise.all([answering("b"), answering("outside"), greeting(), httpApp()]);
    servers.push(app.server, outside.server, greeter.server, cApp.server);
    outsidePort = outside.port;
    greetPort = greeter.port;
    b = createProxy({
      identity: B,
      credentials: createStore(await mesh.issue(B)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map()),
      outbound: { listen: lo },
      admin: { listen: lo },
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: app.port } },
    });
    c = createProxy({
      identity: C,
      credentials: createStore(await mesh.issue(C)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map()),
      outbound: { listen: lo },
      admin: { listen: lo },
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: cApp.port } },
    });
    const [bAddresses, cAddresses] = await Promise.all([b.start(), c.start()]);
    const table = new Map<string, EndpointSet>([
      // Pod B's IP:port as the destination service answers it: B's proxy, with B's identity.
      ["10.77.0.12:8080", { exists: true, endpoints: [{ address: "127.0.0.1", port: bAddresses.inbound.port, weight: 1, identity: B, labels: {} }] }],
      // An address outside the mesh: the bare address, no identity.
      [`127.0.0.1:${outside.port}`, { exists: true, endpoints: [{ address: "127.0.0.1", port: outside.port, weight: 1, labels: {} }] }],
      // Pod C: an HTTP app behind C's proxy.
      ["10.77.0.13:8080", { exists: true, endpoints: [{ address: "127.0.0.1", port: cAddresses.inbound.port, weight: 1, identity: C, labels: {} }] }],
      // A server-first protocol on an opaque port: the client waits for the server's greeting.
      [`127.0.0.1:${greeter.port}`, { exists: true, endpoints: [{ address: "127.0.0.1", port: greeter.port, weight: 1, labels: {}, protocolHint: "opaque" }] }],
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
    await Promise.all([a.stop(), b.stop(), c.stop()]);
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

  it("serves HTTP per request with the original destination as the authority, over mTLS (curl)", async () => {
    next = { address: "10.77.0.13", port: 8080, redirected: true };
    // curl asks for 10.77.0.13:8080 and reaches the listener, as the kernel's redirect would take it there; two requests on one connection.
    const via = ["--connect-to", `10.77.0.13:8080:127.0.0.1:${aAddresses.outbound.port}`];
    const { stdout } = await promisify(execFile)("curl", ["-sS", "--max-time", "15", ...via, "http://10.77.0.13:8080/one", "--next", "-sS", ...via, "-X", "POST", "http://10.77.0.13:8080/two"]);
    expect(stdout).toBe("c GET /onec POST /two");
    const [aText, cText] = await Promise.all([a.metrics.registry.metrics(), c.metrics.registry.metrics()]);
    const request = { authority: "10.77.0.13:8080", status_code: "200", classification: "success" };
    expect(sample(aText, "response_total", { direction: "outbound", ...request, tls: "true", server_id: C })).toBe(2);
    expect(sample(cText, "response_total", { direction: "inbound", status_code: "200", tls: "true", client_id: A })).toBe(2);
  });

  it("skips detection on an opaque port: a server-first protocol's greeting arrives at once", async () => {
    next = { address: "127.0.0.1", port: greetPort, redirected: true };
    // Detection would hold the connection for its 10 s timeout before connecting: the greeting would not come in 5 s.
    expect(await listen(aAddresses.outbound.port, 5_000)).toBe("greet");
    const text = await a.metrics.registry.metrics();
    expect(sample(text, "tcp_open_total", { direction: "outbound", peer: "dst", target_addr: `127.0.0.1:${greetPort}`, tls: "no_identity" })).toBe(1);
  });
});
