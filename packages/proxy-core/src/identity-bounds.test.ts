// Open inbound mesh connections end with the identities they were made with,
// with real TLS 1.3 on 127.0.0.1 and real short-lived certificates: at the
// earlier of the two leaves' notAfter (an opaque connection and an HTTP/2 mesh
// connection with a request in flight), and at a trust bundle change that
// drops the client's anchor. The clients are plain node:tls and node:http2
// peers that never close on their own, as a proxy of a client's own making.
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { createIssuer, exportPrivateKey, generateKeyPair, issueLeaf, parseCertificate, pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTlsCredentials } from "./credentials.js";
import { createInbound } from "./inbound.js";
import { createProxyMetrics } from "./metrics.js";
import type { ProxyMetrics } from "./metrics.js";
import { createStaticPolicySource } from "./static-policy.js";
import type { Credentials } from "./sources.js";
import { createBundle, createStore, createTestMesh, identityOf } from "./test-mesh.js";
import type { TestMesh } from "./test-mesh.js";

const API = identityOf("api");
const WEB = identityOf("web");
/** Short leaves: notAfter has one-second precision, so this is 4 to 5 s of life. */
const SHORT_MS = 4000;
/** How late after notAfter a connection may end on a loaded machine. */
const LATE_MS = 1500;

type Leaf = Credentials & { leaf: Uint8Array };

/** A leaf whose `notAfter` is the certificate's own. */
async function issue(mesh: TestMesh, identity: string, lifetimeMs?: number): Promise<Leaf> {
  const credentials = await mesh.issue(identity, lifetimeMs === undefined ? {} : { lifetimeMs });
  return { ...credentials, notAfter: parseCertificate(credentials.leaf).notAfter };
}

/** A long-lived leaf from a second issuer under `mesh`'s anchor. */
async function issueUnderSecondIssuer(mesh: TestMesh, identity: string): Promise<Leaf> {
  const issuer = await createIssuer({ anchor: { certificate: mesh.anchor.certificate, privateKey: mesh.anchor.keyPair.privateKey } });
  const keyPair = await generateKeyPair();
  const leaf = await issueLeaf({ issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey }, publicKey: keyPair.publicKey, identity });
  return {
    identity,
    leaf,
    privateKeyPem: (await exportPrivateKey(keyPair.privateKey)) as string,
    certificateChainPem: pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuer.certificate),
    notAfter: parseCertificate(leaf).notAfter,
  };
}

function contextFor(leaf: Leaf, ...anchors: TestMesh[]): tls.SecureContext {
  const ca = anchors.map((m) => pemEncode("CERTIFICATE", m.anchor.certificate)).join("");
  return tls.createSecureContext({ key: leaf.privateKeyPem, cert: leaf.certificateChainPem, ca, minVersion: "TLSv1.3", maxVersion: "TLSv1.3" });
}

async function errorCount(metrics: ProxyMetrics, error: string): Promise<number> {
  const text = await metrics.registry.metrics();
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("inbound_tcp_errors_total{") && line.includes(`error="${error}"`)) total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

function connectMesh(port: number, context: tls.SecureContext, alpn?: string): tls.TLSSocket {
  const socket = tls.connect({ host: "127.0.0.1", port, servername: API, secureContext: context, checkServerIdentity: () => undefined, ...(alpn === undefined ? {} : { ALPNProtocols: [alpn] }) });
  socket.on("error", () => undefined);
  return socket;
}

/** An opaque connection that echoed one line: resolves with it open, and the time it closes. */
async function openEcho(port: number, context: tls.SecureContext): Promise<{ socket: tls.TLSSocket; closed: Promise<number>; echo(line: string): Promise<boolean> }> {
  const socket = connectMesh(port, context);
  const closed = once(socket, "close").then(() => Date.now());
  let received = "";
  socket.on("data", (chunk: Buffer) => (received += String(chunk)));
  const echo = async (line: string): Promise<boolean> => {
    const start = received.length;
    socket.write(`${line}\n`);
    const until = Date.now() + 3000;
    while (Date.now() < until && !socket.destroyed) {
      if (received.slice(start).includes(`${line}\n`)) return true;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return received.slice(start).includes(`${line}\n`);
  };
  await once(socket, "secureConnect");
  expect(await echo("hello")).toBe(true);
  return { socket, closed, echo };
}

/** Whether a new opaque connection gets an echo. */
async function served(port: number, context: tls.SecureContext): Promise<boolean> {
  const socket = connectMesh(port, context);
  let received = "";
  socket.on("data", (chunk: Buffer) => {
    received += String(chunk);
    if (received === "ping\n") socket.end();
  });
  socket.once("secureConnect", () => socket.write("ping\n"));
  const timer = setTimeout(() => socket.destroy(), 3000);
  await once(socket, "close");
  clearTimeout(timer);
  return received === "ping\n";
}

describe("open inbound mesh connections end with their identities (real TLS 1.3 on 127.0.0.1)", () => {
  let mesh: TestMesh;
  let other: TestMesh;
  let echo: net.Server & { port: number };
  let web: http.Server & { port: number };
  const closers: (() => void)[] = [];

  beforeAll(async () => {
    [mesh, other] = await Promise.all([createTestMesh(), createTestMesh()]);
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => undefined);
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    echo = Object.assign(server, { port: (server.address() as net.AddressInfo).port });
    // `/slow` answers only when its client goes away: a request in flight at notAfter.
    const app = http.createServer((req, res) => {
      if (req.url === "/slow") res.writeHead(200).flushHeaders();
      else res.end("ok");
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    web = Object.assign(app, { port: (app.address() as net.AddressInfo).port });
  });

  afterAll(() => {
    for (const close of closers) close();
    echo.close();
    web.closeAllConnections();
    web.close();
  });

  async function startInbound(own: Leaf, anchors: TestMesh[], workloadPort: number) {
    const store = createStore(own);
    const bundle = createBundle(anchors.map((m) => m.anchor.certificate));
    const credentials = createTlsCredentials({ credentials: store, trustBundle: bundle });
    const metrics = createProxyMetrics();
    const inbound = createInbound({
      identity: API,
      credentials,
      trustBundle: bundle,
      closeAtIdentityEnd: true,
      metrics,
      policy: createStaticPolicySource({ defaultPolicy: "all-authenticated" }),
      workload: { host: "127.0.0.1", port: workloadPort },
    });
    const address = await inbound.listen({ host: "127.0.0.1", port: 0 });
    closers.push(() => {
      void inbound.stopAccepting();
      inbound.destroyAll();
      inbound.close();
      credentials.close();
    });
    return { port: address.port, metrics, store, bundle, inbound };
  }

  it("an opaque connection ends at the client's notAfter, and its next connection is refused", async () => {
    const server = await startInbound(await issue(mesh, API), [mesh], echo.port);
    const leaf = await issue(mesh, WEB, SHORT_MS);
    const client = contextFor(leaf, mesh);
    const open = await openEcho(server.port, client);

    const closedAt = await open.closed;
    expect(closedAt).toBeGreaterThan(leaf.notAfter.getTime());
    expect(closedAt).toBeLessThan(leaf.notAfter.getTime() + LATE_MS);
    expect(await errorCount(server.metrics, "open_peer_cert_expired")).toBe(1);
    expect(await served(server.port, client)).toBe(false);
    expect(await errorCount(server.metrics, "tls_peer_cert_expired")).toBe(1);
  });

  it("an opaque connection ends at our own notAfter", async () => {
    const api = await issue(mesh, API, SHORT_MS);
    const server = await startInbound(api, [mesh], echo.port);
    const open = await openEcho(server.port, contextFor(await issue(mesh, WEB), mesh));

    const closedAt = await open.closed;
    expect(closedAt).toBeGreaterThan(api.notAfter.getTime());
    expect(closedAt).toBeLessThan(api.notAfter.getTime() + LATE_MS);
    expect(await errorCount(server.metrics, "open_local_cert_expired")).toBe(1);
  });

  it("an HTTP/2 mesh connection with a request in flight gets GOAWAY and closes at the client's notAfter", async () => {
    const server = await startInbound(await issue(mesh, API), [mesh], web.port);
    const leaf = await issue(mesh, WEB, SHORT_MS);
    const client = contextFor(leaf, mesh);
    const session = http2.connect(`https://${API}`, { createConnection: () => connectMesh(server.port, client, "h2") });
    session.on("error", () => undefined);
    const goaway = new Promise<number>((resolve) => session.once("goaway", () => resolve(Date.now())));
    const closed = once(session, "close").then(() => Date.now());

    // Many requests on the one connection, then one that is still open at notAfter.
    for (let i = 0; i < 5; i++) {
      const stream = session.request({ ":path": "/", "l5d-orig-proto": "HTTP/1.1" });
      stream.resume();
      const [headers] = (await once(stream, "response")) as [http2.IncomingHttpHeaders];
      expect(headers[":status"]).toBe(200);
    }
    const slow = session.request({ ":path": "/slow", "l5d-orig-proto": "HTTP/1.1" });
    slow.on("error", () => undefined);
    slow.resume();
    await once(slow, "response");
    const slowEnded = once(slow, "close").then(() => Date.now());

    const [goawayAt, closedAt, slowEndedAt] = await Promise.all([goaway, closed, slowEnded]);
    expect(goawayAt).toBeGreaterThan(leaf.notAfter.getTime());
    expect(closedAt).toBeLessThan(leaf.notAfter.getTime() + LATE_MS);
    expect(slowEndedAt).toBeLessThan(leaf.notAfter.getTime() + LATE_MS);
    expect(await errorCount(server.metrics, "open_peer_cert_expired")).toBe(1);

    const next = http2.connect(`https://${API}`, { createConnection: () => connectMesh(server.port, client, "h2") });
    next.on("error", () => undefined);
    const request = next.request({ ":path": "/", "l5d-orig-proto": "HTTP/1.1" });
    const answered = await new Promise<boolean>((resolve) => {
      request.once("response", () => resolve(true));
      request.once("error", () => resolve(false));
      request.once("close", () => resolve(false));
    });
    next.destroy();
    expect(answered).toBe(false);
    expect(await errorCount(server.metrics, "tls_peer_cert_expired")).toBe(1);
  });

  it("a trust bundle change that drops the client's anchor closes its open connections; a still-trusted client's stays up", async () => {
    const server = await startInbound(await issue(mesh, API), [mesh, other], echo.port);
    const dropped = contextFor(await issue(other, WEB), mesh, other);
    const kept = contextFor(await issue(mesh, WEB), mesh, other);
    const [a, b] = await Promise.all([openEcho(server.port, dropped), openEcho(server.port, kept)]);

    const changedAt = Date.now();
    server.bundle.set([mesh.anchor.certificate]);
    const closedAt = await a.closed;
    expect(closedAt - changedAt).toBeLessThan(1000);
    expect(await errorCount(server.metrics, "open_client_cert_untrusted")).toBe(1);
    expect(await b.echo("still here")).toBe(true);
    expect(b.socket.destroyed).toBe(false);
    expect(await served(server.port, dropped)).toBe(false);
    expect(await served(server.port, kept)).toBe(true);
    b.socket.destroy();
  });

  it("after its own issuer rotated, a client under the previous issuer stays up at a bundle change", async () => {
    const server = await startInbound(await issue(mesh, API), [mesh], echo.port);
    const client = await openEcho(server.port, contextFor(await issue(mesh, WEB), mesh));
    server.store.set(await issueUnderSecondIssuer(mesh, API));

    server.bundle.set([mesh.anchor.certificate, other.anchor.certificate]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await client.echo("still here")).toBe(true);
    expect(await errorCount(server.metrics, "open_client_cert_untrusted")).toBe(0);
    client.socket.destroy();
  });

  it("a client under an issuer this proxy never had is closed at a bundle change (node shows a server the leaf alone) and reconnects", async () => {
    const server = await startInbound(await issue(mesh, API), [mesh], echo.port);
    const client = contextFor(await issueUnderSecondIssuer(mesh, WEB), mesh);
    const open = await openEcho(server.port, client);

    server.bundle.set([mesh.anchor.certificate, other.anchor.certificate]);
    await open.closed;
    expect(await errorCount(server.metrics, "open_client_cert_untrusted")).toBe(1);
    expect(await served(server.port, client)).toBe(true);
  });
});
