import http from "node:http";
import net from "node:net";
import tls from "node:tls";
import { once } from "node:events";
import { X509Certificate } from "node:crypto";
import { pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProxy } from "./proxy.js";
import type { CreateProxyOptions, Proxy, ProxyAddresses } from "./proxy.js";
import type { EndpointSet } from "./sources.js";
import { createStaticPolicySource } from "./static-policy.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "./test-mesh.js";
import type { TestMesh } from "./test-mesh.js";
import { encodeHeader, TRANSPORT_ALPN } from "./transport-header.js";
import { connectEndpoint } from "./connect-endpoint.js";

const A = identityOf("a");
const B = identityOf("b");
const lo = { host: "127.0.0.1", port: 0 };

/** An echo TCP app that prefixes nothing: what goes in comes back. */
async function startEcho(): Promise<net.Server & { port: number }> {
  const server = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return Object.assign(server, { port: (server.address() as net.AddressInfo).port });
}

async function roundTrip(socket: net.Socket | tls.TLSSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = "";
    const onData = (chunk: Buffer): void => {
      got += String(chunk);
      if (got.length >= text.length) {
        socket.off("data", onData);
        socket.off("close", onClose);
        resolve(got);
      }
    };
    const onClose = (): void => reject(new Error(`closed after ${JSON.stringify(got)}`));
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.write(text);
  });
}

function closed(socket: net.Socket | tls.TLSSocket): Promise<string> {
  return new Promise((resolve) => {
    let data = "";
    socket.on("data", (c) => (data += String(c)));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(data));
  });
}

async function metricsText(proxy: Proxy): Promise<string> {
  return proxy.metrics.registry.metrics();
}

describe("meshtls proxy (in process, real TLS)", () => {
  let mesh: TestMesh;
  let app: net.Server & { port: number };
  let httpApp: http.Server;
  let httpAppPort: number;
  const table = new Map<string, EndpointSet>();
  const proxies: Proxy[] = [];
  let a: { proxy: Proxy; addresses: ProxyAddresses };
  let b: { proxy: Proxy; addresses: ProxyAddresses; store: ReturnType<typeof createStore> };
  let bHttp: { proxy: Proxy; addresses: ProxyAddresses };

  async function start(options: Partial<CreateProxyOptions> & { identity: string; workloadPort: number; credentials: CreateProxyOptions["credentials"] }): Promise<{ proxy: Proxy; addresses: ProxyAddresses }> {
    const proxy = createProxy({
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(table),
      outbound: { listen: lo },
      admin: { listen: lo },
      connectTimeoutMs: 2000,
      ...options,
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: options.workloadPort }, ...options.inbound },
    });
    proxies.push(proxy);
    return { proxy, addresses: await proxy.start() };
  }

  beforeAll(async () => {
    mesh = await createTestMesh();
    app = await startEcho();
    httpApp = http.createServer((req, res) => {
      res.setHeader("x-seen-path", req.url ?? "");
      res.end(`hello from b ${req.headers["x-marker"] ?? ""}`);
    });
    await new Promise<void>((r) => httpApp.listen(0, "127.0.0.1", r));
    httpAppPort = (httpApp.address() as net.AddressInfo).port;
    a = await start({ identity: A, workloadPort: app.port, credentials: createStore(await mesh.issue(A)) });
    const store = createStore(await mesh.issue(B));
    b = { ...(await start({ identity: B, workloadPort: app.port, credentials: store })), store };
    bHttp = await start({ identity: B, workloadPort: httpAppPort, credentials: createStore(await mesh.issue(B)) });
    table.set("b.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: b.addresses.inbound.port, weight: 1, identity: B, labels: {} }] });
    table.set("web.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: bHttp.addresses.inbound.port, weight: 1, identity: B, labels: {} }] });
  });

  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.stop({ drainMs: 0 })));
    app.close();
    httpApp.close();
  });

  it("CONNECT through A reaches B's app over mTLS; both sides label the connection", async () => {
    const socket = net.connect(a.addresses.outbound.port, "127.0.0.1");
    socket.write("CONNECT b.default.svc.cluster.local:80 HTTP/1.1\r\nhost: b.default.svc.cluster.local:80\r\n\r\n");
    const [head] = (await once(socket, "data")) as [Buffer];
    expect(String(head)).toMatch(/^HTTP\/1.1 200/);
    expect(await roundTrip(socket, "ping-through-mesh")).toBe("ping-through-mesh");
    socket.destroy();
    const aMetrics = await metricsText(a.proxy);
    expect(aMetrics).toMatch(new RegExp(`tcp_open_total\\{direction="outbound",peer="dst",target_addr="127.0.0.1:${b.addresses.inbound.port}",tls="true",server_id="${B.replace(/\./g, "\\.")}"\\} 1`));
    const bMetrics = await metricsText(b.proxy);
    expect(bMetrics).toMatch(new RegExp(`tcp_open_total\\{direction="inbound",peer="src",target_addr="127.0.0.1:${app.port}",tls="true",client_id="${A.replace(/\./g, "\\.")}"\\} 1`));
    expect(bMetrics).toContain(`tcp_open_total{direction="inbound",peer="dst",target_addr="127.0.0.1:${app.port}",tls="no_identity",no_tls_reason="loopback"} 1`);
  });

  it("forwards absolute-URI HTTP requests", async () => {
    const body = await new Promise<{ status: number; text: string; path: string }>((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port: a.addresses.outbound.port, path: "http://web.default.svc.cluster.local/some/path?q=1", headers: { "x-marker": "M-123" } }, (res) => {
        let text = "";
        res.on("data", (c) => (text += String(c)));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text, path: String(res.headers["x-seen-path"]) }));
      });
      req.on("error", reject);
      req.end();
    });
    expect(body).toEqual({ status: 200, text: "hello from b M-123", path: "/some/path?q=1" });
  });

  it("answers unknown names and bad targets with a coded 5xx/4xx", async () => {
    const res = await fetchVia(a.addresses.outbound.port, "http://nope.default.svc.cluster.local/");
    expect(res.status).toBe(502);
    expect(res.error).toBe("ERR_DISCOVERY_UNKNOWN");
    const origin = await fetchVia(a.addresses.outbound.port, "/origin-form");
    expect(origin.status).toBe(400);
  });

  it("refuses a server presenting a valid mesh certificate for another identity, sending nothing", async () => {
    // A real TLS server holding a real mesh certificate, for "b", advertised by discovery as "c".
    const creds = await mesh.issue(B);
    let received = 0;
    const impostor = tls.createServer({ key: creds.privateKeyPem, cert: creds.certificateChainPem, minVersion: "TLSv1.3" }, (s) => {
      s.on("data", (d: Buffer) => (received += d.length));
      s.on("error", () => undefined);
    });
    impostor.on("tlsClientError", () => undefined);
    await new Promise<void>((r) => impostor.listen(0, "127.0.0.1", r));
    const port = (impostor.address() as net.AddressInfo).port;
    table.set("c.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port, weight: 1, identity: identityOf("c"), labels: {} }] });
    const socket = net.connect(a.addresses.outbound.port, "127.0.0.1");
    socket.write("CONNECT c.default.svc.cluster.local:80 HTTP/1.1\r\n\r\nsecret-payload");
    const [head] = (await once(socket, "data")) as [Buffer];
    expect(String(head)).toMatch(/^HTTP\/1.1 502[^]*l5d-proxy-error: ERR_TLS_IDENTITY_MISMATCH/);
    socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    impostor.close();
    expect(received).toBe(0);
    expect(await metricsText(a.proxy)).toContain(`outbound_tcp_errors_total{error="tls_identity_mismatch",target_addr="127.0.0.1:${port}"} 1`);
  });

  it("sends plaintext to an endpoint without identity, labelled not_provided_by_service_discovery", async () => {
    table.set("plain.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: app.port, weight: 1, labels: {} }] });
    const socket = net.connect(a.addresses.outbound.port, "127.0.0.1");
    socket.write("CONNECT plain.default.svc.cluster.local:80 HTTP/1.1\r\n\r\n");
    await once(socket, "data");
    expect(await roundTrip(socket, "plain")).toBe("plain");
    socket.destroy();
    expect(await metricsText(a.proxy)).toContain(`tcp_open_total{direction="outbound",peer="dst",target_addr="127.0.0.1:${app.port}",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 1`);
  });

  it("tries another endpoint when a connect fails", async () => {
    const dead = net.createServer();
    await new Promise<void>((r) => dead.listen(0, "127.0.0.1", r));
    const deadPort = (dead.address() as net.AddressInfo).port;
    dead.close();
    table.set("flaky.default.svc.cluster.local:80", {
      exists: true,
      endpoints: [
        { address: "127.0.0.1", port: deadPort, weight: 1, identity: B, labels: {} },
        { address: "127.0.0.1", port: b.addresses.inbound.port, weight: 1, identity: B, labels: {} },
      ],
    });
    for (let i = 0; i < 4; i++) {
      const socket = net.connect(a.addresses.outbound.port, "127.0.0.1");
      socket.write("CONNECT flaky.default.svc.cluster.local:80 HTTP/1.1\r\n\r\n");
      const [head] = (await once(socket, "data")) as [Buffer];
      expect(String(head)).toMatch(/^HTTP\/1.1 200/);
      expect(await roundTrip(socket, `try-${i}`)).toBe(`try-${i}`);
      socket.destroy();
    }
  });

  it("opaque transport: ALPN + header to the inbound port, forwarded to the header's port", async () => {
    table.set("opaque.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: httpAppPort, opaqueTransportPort: b.addresses.inbound.port, weight: 1, identity: B, labels: {} }] });
    const res = await fetchVia(a.addresses.outbound.port, "http://opaque.default.svc.cluster.local/x");
    expect(res.status).toBe(200);
    expect(res.text).toBe("hello from b ");
  });

  it("inbound: a direct (transport.l5d.io) connection without a client certificate is refused", async () => {
    const socket = tls.connect({ host: "127.0.0.1", port: b.addresses.inbound.port, servername: B, ca: pemEncode("CERTIFICATE", mesh.anchor.certificate), ALPNProtocols: [TRANSPORT_ALPN], checkServerIdentity: () => undefined });
    await once(socket, "secureConnect");
    socket.write(encodeHeader({ port: app.port }));
    socket.write("should-not-arrive");
    expect(await closed(socket)).toBe("");
    expect(await metricsText(b.proxy)).toContain('inbound_tcp_errors_total{error="direct_unauthenticated"} 1');
  });

  it("inbound: plaintext is forwarded under all-unauthenticated with no_tls_from_remote", async () => {
    const socket = net.connect(b.addresses.inbound.port, "127.0.0.1");
    expect(await roundTrip(socket, "plaintext-in")).toBe("plaintext-in");
    socket.destroy();
    expect(await metricsText(b.proxy)).toContain(`tcp_open_total{direction="inbound",peer="src",target_addr="127.0.0.1:${app.port}",tls="no_identity",no_tls_reason="no_tls_from_remote"} 1`);
  });

  it("inbound: all-authenticated refuses and counts plaintext, allows mesh clients", async () => {
    const strict = await start({ identity: B, workloadPort: app.port, credentials: createStore(await mesh.issue(B)), policy: createStaticPolicySource({ defaultPolicy: "all-authenticated" }), inbound: { workload: { host: "127.0.0.1", port: app.port }, listen: lo } });
    const socket = net.connect(strict.addresses.inbound.port, "127.0.0.1");
    socket.write("denied?");
    expect(await closed(socket)).toBe("");
    const text = await metricsText(strict.proxy);
    expect(text).toContain(`inbound_tcp_authz_deny_total{target_addr="127.0.0.1:${app.port}",policy="all-authenticated",reason="unauthenticated",srv_kind="default",srv_name="all-authenticated"} 1`);
    table.set("strict.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: strict.addresses.inbound.port, weight: 1, identity: B, labels: {} }] });
    const viaMesh = net.connect(a.addresses.outbound.port, "127.0.0.1");
    viaMesh.write("CONNECT strict.default.svc.cluster.local:80 HTTP/1.1\r\n\r\n");
    await once(viaMesh, "data");
    expect(await roundTrip(viaMesh, "allowed")).toBe("allowed");
    viaMesh.destroy();
    expect(await metricsText(strict.proxy)).toContain(`inbound_tcp_authz_allow_total{target_addr="127.0.0.1:${app.port}",policy="all-authenticated",reason="authenticated",srv_kind="default",srv_name="all-authenticated",authz_kind="default",authz_name="all-authenticated"} 1`);
  });

  it("inbound: a client certificate from another trust anchor is refused", async () => {
    const foreign = await createTestMesh();
    const creds = await foreign.issue(A);
    const socket = tls.connect({ host: "127.0.0.1", port: b.addresses.inbound.port, servername: B, ca: pemEncode("CERTIFICATE", mesh.anchor.certificate), key: creds.privateKeyPem, cert: creds.certificateChainPem, checkServerIdentity: () => undefined });
    socket.on("secureConnect", () => socket.write("foreign"));
    expect(await closed(socket)).toBe("");
    expect(await metricsText(b.proxy)).toMatch(/inbound_tcp_errors_total\{error="tls_client_cert_unverified"\} [1-9]/);
  });

  it("inbound: a TLS 1.2-only client is refused", async () => {
    const socket = tls.connect({ host: "127.0.0.1", port: b.addresses.inbound.port, servername: B, maxVersion: "TLSv1.2", rejectUnauthorized: false });
    const error = await new Promise<Error>((resolve) => socket.on("error", resolve));
    expect(error.message).toMatch(/protocol version|unsupported protocol/i);
  });

  it("inbound: TLS for another SNI passes through untouched", async () => {
    // The workload speaks its own TLS; the client completes a handshake with it through the proxy.
    const other = await (await createTestMesh()).issue("other.example.com");
    const appTls = tls.createServer({ key: other.privateKeyPem, cert: other.certificateChainPem }, (s) => s.end("app's own tls"));
    await new Promise<void>((r) => appTls.listen(0, "127.0.0.1", r));
    const appTlsPort = (appTls.address() as net.AddressInfo).port;
    const front = await start({ identity: B, workloadPort: appTlsPort, credentials: createStore(await mesh.issue(B)) });
    const socket = tls.connect({ host: "127.0.0.1", port: front.addresses.inbound.port, servername: "other.example.com", rejectUnauthorized: false });
    let san = "";
    socket.once("secureConnect", () => (san = new X509Certificate(socket.getPeerCertificate().raw).subjectAltName ?? ""));
    expect(await closed(socket)).toBe("app's own tls");
    expect(san).toContain("DNS:other.example.com");
    appTls.close();
    expect(await metricsText(front.proxy)).toContain(`tcp_open_total{direction="inbound",peer="src",target_addr="127.0.0.1:${appTlsPort}",tls="opaque",sni="other.example.com"} 1`);
  });

  it("fails closed before the first certificate; /ready says 503 until then", async () => {
    const store = createStore();
    const early = await start({ identity: identityOf("early"), workloadPort: app.port, credentials: store });
    const ready = await fetch(`http://127.0.0.1:${early.addresses.admin.port}/ready`);
    expect(ready.status).toBe(503);
    const socket = tls.connect({ host: "127.0.0.1", port: early.addresses.inbound.port, servername: identityOf("early"), rejectUnauthorized: false });
    const error = await new Promise<Error>((resolve) => socket.on("error", resolve));
    expect(error.message).toMatch(/alert|handshake|socket hang up|ECONNRESET|disconnected/i);
    store.set(await mesh.issue(identityOf("early")));
    expect((await fetch(`http://127.0.0.1:${early.addresses.admin.port}/ready`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${early.addresses.admin.port}/live`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${early.addresses.admin.port}/shutdown`)).status).toBe(405);
  });

  it("/ready turns 503 once the certificate has expired, and says so; a fresh certificate makes it ready again", async () => {
    let clock = new Date();
    const store = createStore(await mesh.issue(identityOf("expiring"), { lifetimeMs: 60_000 }));
    const proxy = await start({ identity: identityOf("expiring"), workloadPort: app.port, credentials: store, now: () => clock });
    const url = `http://127.0.0.1:${proxy.addresses.admin.port}/ready`;
    expect((await fetch(url)).status).toBe(200);
    const notAfter = store.current()?.notAfter ?? new Date(0);
    clock = new Date(notAfter.getTime() + 1);
    const expired = await fetch(url);
    expect(expired.status).toBe(503);
    expect(await expired.text()).toBe(`not ready: the certificate expired at ${notAfter.toISOString()}\n`);
    // notAfter itself is still valid (RFC 5280: inclusive).
    clock = notAfter;
    expect((await fetch(url)).status).toBe(200);
    const fresh = await mesh.issue(identityOf("expiring"), { lifetimeMs: 3_600_000 });
    store.set(fresh);
    expect((await fetch(url)).status).toBe(200);
    const early = await start({ identity: identityOf("none"), workloadPort: app.port, credentials: createStore() });
    const none = await fetch(`http://127.0.0.1:${early.addresses.admin.port}/ready`);
    expect(none.status).toBe(503);
    expect(await none.text()).toBe("not ready: no certificate yet\n");
  });

  it("rotation: open connections keep flowing, new ones present the new certificate", async () => {
    const ca = pemEncode("CERTIFICATE", mesh.anchor.certificate);
    const clientCreds = await mesh.issue(A);
    const open = (): Promise<tls.TLSSocket> =>
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: "127.0.0.1", port: b.addresses.inbound.port, servername: B, ca, key: clientCreds.privateKeyPem, cert: clientCreds.certificateChainPem, checkServerIdentity: () => undefined }, () => resolve(s));
        s.once("error", reject);
      });
    const serialOf = (s: tls.TLSSocket): string => new X509Certificate(s.getPeerCertificate().raw).serialNumber;
    const long = await open();
    const before = serialOf(long);
    expect(await roundTrip(long, "before")).toBe("before");
    const next = await mesh.issue(B);
    b.store.set(next);
    expect(await roundTrip(long, "after-rotation")).toBe("after-rotation");
    const fresh = await open();
    const after = serialOf(fresh);
    expect(after).not.toBe(before);
    expect(after).toBe(new X509Certificate(next.leaf).serialNumber);
    long.destroy();
    fresh.destroy();
  });

  it("resumes TLS sessions to the same endpoint and identity; the client identity survives resumption", async () => {
    const endpoint = { address: "127.0.0.1", port: app.port, opaqueTransportPort: b.addresses.inbound.port, weight: 1, identity: B, labels: {} };
    const open = async (): Promise<tls.TLSSocket> => {
      const connection = await connectEndpoint({ endpoint, credentials: a.proxy.tls });
      return connection.socket as tls.TLSSocket;
    };
    const first = await open();
    expect(await roundTrip(first, "first")).toBe("first");
    const second = await open();
    expect(second.isSessionReused()).toBe(true);
    expect(await roundTrip(second, "second")).toBe("second");
    first.destroy();
    second.destroy();
    const text = await metricsText(b.proxy);
    expect(sampleOf(text, `tcp_open_total{direction="inbound",peer="src",target_addr="127.0.0.1:${app.port}",tls="true",client_id="${A}"}`)).toBeGreaterThanOrEqual(3);
  });

  it("GET /identity shows the chain presented and the anchors; POST /renew answers once the renewed certificate is in use", async () => {
    const store = createStore(await mesh.issue(identityOf("renewing")));
    let renewed: Awaited<ReturnType<TestMesh["issue"]>> | undefined;
    const proxy = await start({
      identity: identityOf("renewing"),
      workloadPort: app.port,
      credentials: store,
      onRenew: async () => {
        renewed = await mesh.issue(identityOf("renewing"), { lifetimeMs: 7_200_000 });
        store.set(renewed);
        return { notAfter: renewed.notAfter };
      },
    });
    const admin = `http://127.0.0.1:${proxy.addresses.admin.port}`;
    const before = (await (await fetch(`${admin}/identity`)).json()) as { identity: string; notAfter: string; certificateChainPem: string; trustAnchorsPem: string };
    expect(before.identity).toBe(identityOf("renewing"));
    expect(before.certificateChainPem).toBe(store.current()?.certificateChainPem);
    expect(before.trustAnchorsPem).toBe(pemEncode("CERTIFICATE", mesh.anchor.certificate));
    const res = await fetch(`${admin}/renew`, { method: "POST" });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { notAfter: string };
    expect(body.notAfter).toBe(renewed?.notAfter.toISOString());
    // The handshake after the answer presents the renewed leaf.
    const presented = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: "127.0.0.1", port: proxy.addresses.inbound.port, servername: identityOf("renewing"), rejectUnauthorized: false }, () => {
        resolve(new X509Certificate(s.getPeerCertificate().raw).serialNumber);
        s.destroy();
      });
      s.once("error", reject);
    });
    expect(presented).toBe(new X509Certificate(renewed?.leaf ?? new Uint8Array()).serialNumber);
    const after = (await (await fetch(`${admin}/identity`)).json()) as { notAfter: string };
    expect(after.notAfter).toBe(body.notAfter);
  });

  it("POST /renew is 503 when the certificate obtained is not put in use", async () => {
    const proxy = await start({
      identity: identityOf("stuck"),
      workloadPort: app.port,
      credentials: createStore(await mesh.issue(identityOf("stuck"))),
      onRenew: () => Promise.resolve({ notAfter: new Date(Date.now() + 3_600_000) }),
      renewInUseTimeoutMs: 200,
    });
    const res = await fetch(`http://127.0.0.1:${proxy.addresses.admin.port}/renew`, { method: "POST" });
    expect(res.status).toBe(503);
    expect(await res.text()).toMatch(/^renewal failed: a certificate valid until .* was obtained but is not in use after 200 ms/);
    const none = await start({ identity: identityOf("none2"), workloadPort: app.port, credentials: createStore() });
    const identity = await fetch(`http://127.0.0.1:${none.addresses.admin.port}/identity`);
    expect(identity.status).toBe(503);
    expect(await identity.json()).toMatchObject({ identity: identityOf("none2"), error: "no certificate yet" });
    expect((await fetch(`http://127.0.0.1:${none.addresses.admin.port}/renew`, { method: "POST" })).status).toBe(404);
  });

  it("accepts clients of any anchor in the bundle and follows bundle changes", async () => {
    const second = await createTestMesh();
    const bundle = createBundle([mesh.anchor.certificate]);
    const multi = await start({ identity: B, workloadPort: app.port, credentials: createStore(await mesh.issue(B)), trustBundle: bundle });
    const clientCreds = await second.issue(A);
    const attempt = async (): Promise<string> => {
      const s = tls.connect({ host: "127.0.0.1", port: multi.addresses.inbound.port, servername: B, rejectUnauthorized: false, key: clientCreds.privateKeyPem, cert: clientCreds.certificateChainPem });
      s.on("error", () => undefined);
      await once(s, "secureConnect");
      s.write("x");
      const got = await Promise.race([closed(s), new Promise<string>((r) => setTimeout(() => r("timeout"), 1000))]);
      s.destroy();
      return got;
    };
    expect(await attempt()).toBe("");
    bundle.set([mesh.anchor.certificate, second.anchor.certificate]);
    expect(await attempt()).toBe("timeout"); // forwarded to the echo app: the connection stays open
  });

  it("a drain lets mesh peers' kept-alive connections go at once and cuts no request in flight", async () => {
    const slow = http.createServer((_req, res) => setTimeout(() => res.end("slow ok"), 300));
    await new Promise<void>((r) => slow.listen(0, "127.0.0.1", r));
    const d = await start({ identity: B, workloadPort: (slow.address() as net.AddressInfo).port, credentials: createStore(await mesh.issue(B)) });
    table.set("drain.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: d.addresses.inbound.port, weight: 1, identity: B, labels: {} }] });
    // Two requests at once: A keeps two mesh connections to D, one of them idle once its answer came back.
    const warm = await Promise.all([fetchVia(a.addresses.outbound.port, "http://drain.default.svc.cluster.local/"), fetchVia(a.addresses.outbound.port, "http://drain.default.svc.cluster.local/")]);
    expect(warm.map((r) => r.status)).toEqual([200, 200]);
    const inFlight = fetchVia(a.addresses.outbound.port, "http://drain.default.svc.cluster.local/");
    await new Promise((r) => setTimeout(r, 100));
    const started = performance.now();
    await d.proxy.stop({ drainMs: 5000 });
    // Without being told, A would keep both connections open and the drain would last its whole 5 s.
    expect(performance.now() - started).toBeLessThan(2500);
    expect(await inFlight).toMatchObject({ status: 200, text: "slow ok" });
    slow.close();
  });
});

function sampleOf(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

async function fetchVia(proxyPort: number, url: string): Promise<{ status: number; text: string; error: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: proxyPort, path: url }, (res) => {
      let text = "";
      res.on("data", (c) => (text += String(c)));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text, error: res.headers["l5d-proxy-error"] as string | undefined }));
    });
    req.on("error", reject);
    req.end();
  });
}
