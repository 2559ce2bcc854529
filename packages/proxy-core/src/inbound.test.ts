import net from "node:net";
import tls from "node:tls";
import { once } from "node:events";
import { pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTlsCredentials } from "./credentials.js";
import { createInbound } from "./inbound.js";
import { createProxyMetrics } from "./metrics.js";
import { createOwnSockets } from "./own-sockets.js";
import { defaultServerPolicy } from "./policy.js";
import { createPolicyStore } from "./policy-store.js";
import { createStaticPolicySource } from "./static-policy.js";
import { createProxy } from "./proxy.js";
import type { CreateProxyOptions, Proxy, ProxyAddresses } from "./proxy.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "./test-mesh.js";
import type { TestMesh } from "./test-mesh.js";
import { encodeHeader, TRANSPORT_ALPN } from "./transport-header.js";

const A = identityOf("a");
const B = identityOf("b");
const lo = { host: "127.0.0.1", port: 0 };

async function listenOn(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as net.AddressInfo).port;
}

/** Everything read until the peer closes (or `timeoutMs`: then "open:" + what was read). */
function readAll(socket: net.Socket | tls.TLSSocket, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    const timer = setTimeout(() => resolve(`open:${data}`), timeoutMs);
    socket.on("data", (c: Buffer) => (data += String(c)));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

function sampleOf(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

describe("inbound: a meshed client may reach only the workload's own ports", () => {
  let mesh: TestMesh;
  const servers: net.Server[] = [];
  const proxies: Proxy[] = [];
  let echoPort: number;
  let declaredPort: number;
  let undeclaredPort: number;
  let clientCreds: Awaited<ReturnType<TestMesh["issue"]>>;

  async function start(options: Partial<CreateProxyOptions> = {}): Promise<{ proxy: Proxy; addresses: ProxyAddresses }> {
    const proxy = createProxy({
      identity: B,
      credentials: createStore(await mesh.issue(B)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map()),
      outbound: { listen: lo, routes: [{ listen: lo, authority: "api.default.svc.cluster.local:80" }] },
      admin: { listen: lo },
      ...options,
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: echoPort }, ...options.inbound },
    });
    proxies.push(proxy);
    return { proxy, addresses: await proxy.start() };
  }

  /** A mesh client with a valid certificate of the same trust anchor opens opaque transport to `port` and sends `payload`. */
  async function direct(inboundPort: number, port: number, payload: string): Promise<string> {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: inboundPort,
      servername: B,
      ca: pemEncode("CERTIFICATE", mesh.anchor.certificate),
      key: clientCreds.privateKeyPem,
      cert: clientCreds.certificateChainPem,
      ALPNProtocols: [TRANSPORT_ALPN],
      checkServerIdentity: () => undefined,
    });
    await once(socket, "secureConnect");
    expect(socket.alpnProtocol).toBe(TRANSPORT_ALPN);
    socket.write(Buffer.concat([encodeHeader({ port }), Buffer.from(payload)]));
    const got = readAll(socket, 1500);
    const result = await got;
    socket.destroy();
    return result;
  }

  beforeAll(async () => {
    mesh = await createTestMesh();
    clientCreds = await mesh.issue(A);
    const echo = (): net.Server => net.createServer((s) => s.on("error", () => undefined).pipe(s));
    for (const server of [echo(), echo(), echo()]) servers.push(server);
    [echoPort, declaredPort, undeclaredPort] = await Promise.all(servers.map(listenOn)) as [number, number, number];
  });

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.stop({ drainMs: 0 })));
    for (const s of servers) s.close();
  });

  it("a header naming the proxy's admin, outbound, inbound or route port is refused and counted; the proxy keeps serving", async () => {
    const shutdowns: number[] = [];
    const { proxy, addresses } = await start({ onShutdown: () => shutdowns.push(1) });
    const routePort = addresses.routes[0]?.port ?? 0;
    const shutdown = "POST /shutdown HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
    for (const port of [addresses.admin.port, addresses.outbound.port, addresses.inbound.port, routePort]) {
      expect(await direct(addresses.inbound.port, port, shutdown)).toBe("");
    }
    expect(shutdowns).toEqual([]);
    const text = await proxy.metrics.registry.metrics();
    expect(sampleOf(text, 'inbound_tcp_errors_total{error="transport_header_proxy_port"}')).toBe(4);
    // Undeclared ports are allowed when none are declared.
    expect(await direct(addresses.inbound.port, undeclaredPort, "any-port")).toBe("open:any-port");
    expect((await fetch(`http://127.0.0.1:${addresses.admin.port}/live`)).status).toBe(200);
  });

  it("a header naming the remote tap server's port (--tap-addr) is refused and counted like the admin's", async () => {
    const { proxy, addresses } = await start({ tap: { listen: lo, allow: ["*"] } });
    const tapPort = addresses.tap?.port ?? 0;
    expect(tapPort).toBeGreaterThan(0);
    expect(await direct(addresses.inbound.port, tapPort, "GET /tap HTTP/1.1\r\nhost: x\r\n\r\n")).toBe("");
    const text = await proxy.metrics.registry.metrics();
    expect(sampleOf(text, 'inbound_tcp_errors_total{error="transport_header_proxy_port"}')).toBe(1);
    // The tap server itself is up: mutual TLS refuses a client without a certificate.
    const anonymous = tls.connect({ host: "127.0.0.1", port: tapPort, ca: pemEncode("CERTIFICATE", mesh.anchor.certificate), checkServerIdentity: () => undefined });
    const refused = await new Promise<string>((resolve) => {
      anonymous.on("error", (error: Error) => resolve(error.message));
      anonymous.on("data", () => resolve("data"));
      anonymous.on("close", () => resolve("closed"));
      anonymous.on("secureConnect", () => anonymous.write("GET /tap HTTP/1.1\r\nhost: x\r\n\r\n"));
    });
    anonymous.destroy();
    expect(refused).not.toBe("data");
  });

  it("a workload address that is the proxy's own tap listener is refused at start", async () => {
    const taken = net.createServer();
    const tapPort = await listenOn(taken);
    await new Promise<void>((resolve) => taken.close(() => resolve()));
    const error = await start({ tap: { listen: { host: "127.0.0.1", port: tapPort } }, inbound: { listen: lo, workload: { host: "127.0.0.1", port: tapPort } } }).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe("ERR_CONFIG_INVALID");
    expect(String((error as Error).message)).toContain("the proxy's own tap listener");
  });

  it("an opaque workload port: a meshed client's opaque transport on the inbound listener is still mTLS, and a server-first plaintext client is served", async () => {
    // Found with the Kubernetes source: config.linkerd.io/opaque-ports on the workload port made the mesh ClientHello go to the app.
    const greeter = net.createServer((s) => {
      s.on("error", () => undefined);
      s.end("220 greeter ready\r\n");
    });
    servers.push(greeter);
    const greeterPort = await listenOn(greeter);
    const { proxy, addresses } = await start({
      policy: createStaticPolicySource({ ports: { [echoPort]: { opaque: true }, [greeterPort]: { opaque: true } } }),
    });
    expect(await direct(addresses.inbound.port, echoPort, "over-opaque-transport")).toBe("open:over-opaque-transport");
    const text = await proxy.metrics.registry.metrics();
    expect(text).toMatch(new RegExp(`tcp_open_total\\{direction="inbound",peer="src",[^}]*tls="true",client_id="${A.replace(/\./g, "\\.")}"\\}`));
    // A server-speaks-first client on an opaque default port: silent, so the workload answers first.
    const { proxy: p2, addresses: a2 } = await start({
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: greeterPort } },
      policy: createStaticPolicySource({ ports: { [greeterPort]: { opaque: true } } }),
    });
    const started = Date.now();
    const plain = net.connect({ host: "127.0.0.1", port: a2.inbound.port });
    expect(await readAll(plain, 3000)).toBe("220 greeter ready\r\n");
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await p2.metrics.registry.metrics()).toMatch(/tcp_open_total\{direction="inbound",peer="src",[^}]*no_tls_reason="no_tls_from_remote"\}/);
  });

  it("with --inbound-ports, only those and the workload port may be named", async () => {
    const { proxy, addresses } = await start({ inbound: { listen: lo, workload: { host: "127.0.0.1", port: echoPort }, inboundPorts: [declaredPort] } });
    expect(await direct(addresses.inbound.port, declaredPort, "declared")).toBe("open:declared");
    expect(await direct(addresses.inbound.port, echoPort, "workload-port")).toBe("open:workload-port");
    expect(await direct(addresses.inbound.port, undeclaredPort, "undeclared")).toBe("");
    expect(await direct(addresses.inbound.port, addresses.admin.port, "admin")).toBe("");
    const text = await proxy.metrics.registry.metrics();
    expect(sampleOf(text, 'inbound_tcp_errors_total{error="transport_header_port_forbidden"}')).toBe(1);
    expect(sampleOf(text, 'inbound_tcp_errors_total{error="transport_header_proxy_port"}')).toBe(1);
  });

  it("refuses to start with the workload address on one of its own listeners", async () => {
    const taken = net.createServer();
    const adminPort = await listenOn(taken);
    await new Promise((r) => taken.close(r));
    const error = await start({ admin: { listen: { host: "127.0.0.1", port: adminPort } }, inbound: { listen: lo, workload: { host: "127.0.0.1", port: adminPort } } }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "ERR_CONFIG_INVALID" });
    expect(String((error as Error).message)).toContain("the proxy's own admin listener");
    // Its listeners were closed again: the port is free.
    const again = net.createServer();
    await new Promise<void>((resolve, reject) => {
      again.once("error", reject);
      again.listen(adminPort, "127.0.0.1", resolve);
    });
    again.close();
  });

  it("at run time, a plaintext or pass-through connection whose target is one of the proxy's listeners is refused (proxy_loop)", async () => {
    const own = createOwnSockets();
    const metrics = createProxyMetrics();
    const inbound = createInbound({
      identity: B,
      credentials: createTlsCredentials({ credentials: createStore(), trustBundle: createBundle([]) }),
      policy: createStaticPolicySource(),
      metrics,
      own,
      workload: { host: "127.0.0.1", port: echoPort },
    });
    const { port } = await inbound.listen(lo);
    own.addListener({ address: "127.0.0.1", port: echoPort }, "admin");
    const plain = net.connect(port, "127.0.0.1");
    plain.write("plain");
    expect(await readAll(plain)).toBe("");
    const passthrough = tls.connect({ host: "127.0.0.1", port, servername: "app.example", rejectUnauthorized: false });
    passthrough.on("error", () => undefined);
    expect(await readAll(passthrough)).toBe("");
    expect(sampleOf(await metrics.registry.metrics(), 'inbound_tcp_errors_total{error="proxy_loop"}')).toBe(2);
    inbound.destroyAll();
    await inbound.stopAccepting();
  });
});

describe("inbound: labels a remote peer chooses stay bounded", () => {
  let mesh: TestMesh;
  let echo: net.Server;
  let echoPort: number;
  const proxies: Proxy[] = [];

  beforeAll(async () => {
    mesh = await createTestMesh();
    echo = net.createServer((s) => s.on("error", () => undefined).pipe(s));
    echoPort = await listenOn(echo);
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.stop({ drainMs: 0 })));
    echo.close();
  });

  async function start(defaultPolicy: "deny" | "all-unauthenticated", maxPeerLabelValues?: number): Promise<{ proxy: Proxy; addresses: ProxyAddresses }> {
    const proxy = createProxy({
      identity: B,
      credentials: createStore(await mesh.issue(B)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map()),
      outbound: { listen: lo },
      admin: { listen: lo },
      policy: createStaticPolicySource({ defaultPolicy }),
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: echoPort } },
      ...(maxPeerLabelValues === undefined ? {} : { metrics: createProxyMetrics({ maxPeerLabelValues }) }),
    });
    proxies.push(proxy);
    return { proxy, addresses: await proxy.start() };
  }

  /** ClientHellos with `count` distinct SNIs, a few at a time. */
  async function hellos(port: number, count: number, prefix: string): Promise<void> {
    for (let i = 0; i < count; i += 10) {
      await Promise.all(
        Array.from({ length: Math.min(10, count - i) }, async (_, j) => {
          const socket = tls.connect({ host: "127.0.0.1", port, servername: `${prefix}-${i + j}.attacker.example`, rejectUnauthorized: false });
          socket.on("error", () => undefined);
          // Once the proxy has read the hello, the client is done.
          await new Promise((r) => setTimeout(r, 50));
          socket.destroy();
        }),
      );
    }
  }

  it("denied pass-through connections record no SNI: /metrics does not grow with distinct SNIs", async () => {
    const { proxy, addresses } = await start("deny");
    await hellos(addresses.inbound.port, 20, "warmup");
    await new Promise((r) => setTimeout(r, 200));
    const before = (await proxy.metrics.registry.metrics()).length;
    await hellos(addresses.inbound.port, 200, "unique");
    await new Promise((r) => setTimeout(r, 300));
    const text = await proxy.metrics.registry.metrics();
    expect(text).not.toContain("attacker.example");
    expect(text.length - before).toBeLessThan(200);
    expect(sampleOf(text, `inbound_tcp_authz_deny_total{target_addr="127.0.0.1:${echoPort}",policy="deny",reason="deny",srv_kind="default",srv_name="deny"}`)).toBeGreaterThanOrEqual(200);
    expect(text).toMatch(/tcp_open_total\{direction="inbound",peer="src",target_addr="[^"]+",tls="opaque",sni=""\} 2\d\d/);
  });

  it("allowed pass-through connections: at most maxPeerLabelValues distinct SNIs, then `overflow`", async () => {
    const { proxy, addresses } = await start("all-unauthenticated", 10);
    await hellos(addresses.inbound.port, 30, "allowed");
    await new Promise((r) => setTimeout(r, 300));
    const text = await proxy.metrics.registry.metrics();
    const snis = new Set([...text.matchAll(/tcp_open_total\{[^}]*sni="([^"]*)"/g)].map((m) => m[1]));
    expect(snis.size).toBe(11);
    expect(snis.has("overflow")).toBe(true);
  });
});

describe("inbound: the port's policy changes at run time", () => {
  let mesh: TestMesh;
  let echo: net.Server;
  let echoPort: number;
  let proxy: Proxy | undefined;

  beforeAll(async () => {
    mesh = await createTestMesh();
    echo = net.createServer((s) => s.on("error", () => undefined).pipe(s));
    echoPort = await listenOn(echo);
  });
  afterAll(async () => {
    await proxy?.stop({ drainMs: 0 });
    echo.close();
  });

  it("new connections get the new policy at once; open ones it denies are closed and counted; allowed ones stay", async () => {
    const store = createPolicyStore({ defaults: () => defaultServerPolicy("all-unauthenticated") });
    proxy = createProxy({
      identity: B,
      credentials: createStore(await mesh.issue(B)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map()),
      policy: store,
      outbound: { listen: lo },
      admin: { listen: lo },
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: echoPort } },
    });
    const { inbound } = await proxy.start();
    const creds = await mesh.issue(A);
    const meshClient = async (): Promise<tls.TLSSocket> => {
      const socket = tls.connect({ host: "127.0.0.1", port: inbound.port, servername: B, ca: pemEncode("CERTIFICATE", mesh.anchor.certificate), key: creds.privateKeyPem, cert: creds.certificateChainPem, checkServerIdentity: () => undefined });
      await once(socket, "secureConnect");
      return socket;
    };
    const echoes = async (socket: net.Socket | tls.TLSSocket, text: string): Promise<boolean> => {
      socket.write(text);
      const [chunk] = (await Promise.race([once(socket, "data"), once(socket, "close").then(() => [undefined])])) as [Buffer | undefined];
      return chunk !== undefined && String(chunk) === text;
    };
    const plain = net.connect(inbound.port, "127.0.0.1");
    const fromA = await meshClient();
    expect(await echoes(plain, "p1")).toBe(true);
    expect(await echoes(fromA, "a1")).toBe(true);

    // Only A's identity: the open plaintext connection is closed, A's stays.
    const plainClosed = once(plain, "close");
    const onlyA = defaultServerPolicy("all-authenticated");
    store.set(echoPort, {
      ...onlyA,
      meta: { group: "policy.linkerd.io", kind: "server", name: "echo" },
      authorizations: [{ ...onlyA.authorizations[0]!, authentication: { kind: "mesh-tls", identities: [A], suffixes: [] }, meta: { group: "policy.linkerd.io", kind: "authorizationpolicy", name: "echo-from-a" } }],
    });
    await plainClosed;
    expect(await echoes(fromA, "a2")).toBe(true);
    const late = net.connect(inbound.port, "127.0.0.1");
    late.on("error", () => undefined);
    expect(await echoes(late, "p2")).toBe(false);

    // Deny: A's open connection goes too.
    const aClosed = once(fromA, "close");
    store.set(echoPort, defaultServerPolicy("deny"));
    await aClosed;
    const text = await proxy.metrics.registry.metrics();
    const target = `target_addr="127.0.0.1:${echoPort}"`;
    expect(sampleOf(text, `inbound_tcp_authz_terminate_total{${target},policy="server",reason="unauthenticated",srv_kind="server",srv_name="echo"}`)).toBe(1);
    expect(sampleOf(text, `inbound_tcp_authz_terminate_total{${target},policy="deny",reason="deny",srv_kind="default",srv_name="deny"}`)).toBe(1);
    expect(sampleOf(text, `inbound_tcp_authz_allow_total{${target},policy="all-unauthenticated",reason="authenticated",srv_kind="default",srv_name="all-unauthenticated",authz_kind="default",authz_name="all-unauthenticated"}`)).toBe(1);
    expect(sampleOf(text, `inbound_tcp_authz_deny_total{${target},policy="server",reason="unauthenticated",srv_kind="server",srv_name="echo"}`)).toBe(1);
  });
});
