// TLS session resumption is bounded by identity, in both directions, with real
// TLS 1.3 on 127.0.0.1 and real short-lived certificates: a session resumes
// while both certificates are valid and never after either expires, nor
// across a change of credentials or of the trust bundle. Each side is tested
// against a peer that does not bound resumption itself (a plain node:tls
// client or server whose ticket keys never change), so every refusal seen
// here is the side under test's own doing.
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import tls from "node:tls";
import { parseCertificate, pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectEndpoint } from "./connect-endpoint.js";
import { createTlsCredentials } from "./credentials.js";
import type { TlsCredentials } from "./credentials.js";
import { ProxyError } from "./errors.js";
import { createInbound } from "./inbound.js";
import type { Inbound } from "./inbound.js";
import { createProxyMetrics } from "./metrics.js";
import type { ProxyMetrics } from "./metrics.js";
import { createOutbound } from "./outbound.js";
import { createStaticPolicySource } from "./static-policy.js";
import type { Credentials, EndpointSet } from "./sources.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "./test-mesh.js";
import type { TestMesh } from "./test-mesh.js";

const API = identityOf("api");
const WEB = identityOf("web");
/** Short leaves: notAfter has one-second precision, so this is 3 to 4 s of life. */
const SHORT_MS = 3000;

type Leaf = Credentials & { leaf: Uint8Array };

/** A leaf whose `notAfter` is the certificate's own (test-mesh's is computed, up to a second later). */
async function issue(mesh: TestMesh, identity: string, lifetimeMs?: number): Promise<Leaf> {
  const credentials = await mesh.issue(identity, lifetimeMs === undefined ? {} : { lifetimeMs });
  return { ...credentials, notAfter: parseCertificate(credentials.leaf).notAfter };
}

/** Resolves once `date` has passed by a margin (the machine is loaded; certificates are checked to the second). */
async function after(date: Date, marginMs = 1200): Promise<void> {
  const wait = date.getTime() + marginMs - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}

function anchorsPem(...meshes: TestMesh[]): string {
  return meshes.map((m) => pemEncode("CERTIFICATE", m.anchor.certificate)).join("");
}

function contextFor(leaf: Leaf, ...anchors: TestMesh[]): tls.SecureContext {
  return tls.createSecureContext({ key: leaf.privateKeyPem, cert: leaf.certificateChainPem, ca: anchorsPem(...anchors), minVersion: "TLSv1.3", maxVersion: "TLSv1.3" });
}

async function errorCount(metrics: ProxyMetrics, direction: "inbound" | "outbound", error: string): Promise<number> {
  const text = await metrics.registry.metrics();
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${direction}_tcp_errors_total{`) && line.includes(`error="${error}"`)) total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

interface ClientResult {
  /** Whether the handshake resumed the offered session. */
  reused: boolean;
  /** The echo came back: the connection was let through. */
  served: boolean;
  /** The handshake itself failed (with this code). */
  error?: string;
  /** The last session the server gave, if any. */
  session?: Buffer;
}

/**
 * A plain node:tls client (no bound on resumption of its own): offers
 * `session`, writes a line and reports whether it came back.
 */
function plainClient(port: number, context: tls.SecureContext, session?: Buffer): Promise<ClientResult> {
  return new Promise((resolve) => {
    let reused = false;
    let handshook = false;
    let echoed = "";
    let latest: Buffer | undefined;
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: API,
      secureContext: context,
      minVersion: "TLSv1.3",
      checkServerIdentity: () => undefined,
      ...(session === undefined ? {} : { session }),
    });
    socket.on("session", (ticket: Buffer) => (latest = ticket));
    socket.once("secureConnect", () => {
      handshook = true;
      reused = socket.isSessionReused();
      socket.write("ping\n");
    });
    socket.on("data", (chunk: Buffer) => {
      echoed += String(chunk);
      // Wait a moment for the tickets that follow a full handshake.
      if (echoed === "ping\n") setTimeout(() => socket.end(), 100);
    });
    let error: string | undefined;
    socket.on("error", (cause: Error & { code?: string }) => (error = cause.code ?? cause.message));
    socket.on("close", () =>
      resolve({ reused, served: handshook && echoed === "ping\n", ...(error === undefined ? {} : { error }), ...(latest === undefined ? {} : { session: latest }) }),
    );
  });
}

/** A plain node:tls server (ticket keys never change, no expiry check): echoes, requests a client certificate. */
async function plainServer(context: tls.SecureContext): Promise<tls.Server & { port: number }> {
  const server = tls.createServer({ requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.3", SNICallback: (_name, callback) => callback(null, context) }, (socket) => {
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return Object.assign(server, { port: (server.address() as net.AddressInfo).port });
}

describe("session resumption is bounded by identity (real TLS 1.3 on 127.0.0.1)", () => {
  let mesh: TestMesh;
  let other: TestMesh;
  let echo: net.Server & { port: number };
  const closers: (() => void)[] = [];

  beforeAll(async () => {
    [mesh, other] = await Promise.all([createTestMesh(), createTestMesh()]);
    const server = net.createServer((socket) => {
      socket.on("error", () => undefined);
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    echo = Object.assign(server, { port: (server.address() as net.AddressInfo).port });
  });

  afterAll(() => {
    for (const close of closers) close();
    echo.close();
  });

  describe("inbound (the terminating side)", () => {
    async function startInbound(own: Leaf, anchors: TestMesh[]): Promise<{ port: number; metrics: ProxyMetrics; store: ReturnType<typeof createStore>; bundle: ReturnType<typeof createBundle>; inbound: Inbound }> {
      const store = createStore(own);
      const bundle = createBundle(anchors.map((m) => m.anchor.certificate));
      const credentials = createTlsCredentials({ credentials: store, trustBundle: bundle });
      const metrics = createProxyMetrics();
      const inbound = createInbound({
        identity: API,
        credentials,
        metrics,
        policy: createStaticPolicySource({ defaultPolicy: "all-authenticated" }),
        workload: { host: "127.0.0.1", port: echo.port },
      });
      const address = await inbound.listen({ host: "127.0.0.1", port: 0 });
      closers.push(() => {
        void inbound.stopAccepting();
        inbound.destroyAll();
        credentials.close();
      });
      return { port: address.port, metrics, store, bundle, inbound };
    }

    it("(a) resumes while both certificates are valid, (b) refuses every connection once the client's leaf has expired", async () => {
      const server = await startInbound(await issue(mesh, API), [mesh]);
      const web = await issue(mesh, WEB, SHORT_MS);
      const client = contextFor(web, mesh);

      const full = await plainClient(server.port, client);
      expect(full).toMatchObject({ reused: false, served: true });
      expect(full.session).toBeDefined();
      const resumed = await plainClient(server.port, client, full.session);
      expect(resumed).toMatchObject({ reused: true, served: true });

      await after(web.notAfter);
      const before = await errorCount(server.metrics, "inbound", "tls_peer_cert_expired");
      // The same ticket still resumes (the client offers it, the server's keys accept it), and is refused after the handshake.
      const late = await plainClient(server.port, client, full.session);
      expect(late).toMatchObject({ reused: true, served: false });
      const lateFull = await plainClient(server.port, client);
      expect(lateFull).toMatchObject({ reused: false, served: false });
      expect(await errorCount(server.metrics, "inbound", "tls_peer_cert_expired")).toBe(before + 2);
    });

    it("(c) refuses every connection once its own leaf has expired", async () => {
      const api = await issue(mesh, API, SHORT_MS);
      const server = await startInbound(api, [mesh]);
      const client = contextFor(await issue(mesh, WEB), mesh);

      const full = await plainClient(server.port, client);
      const resumed = await plainClient(server.port, client, full.session);
      expect(resumed).toMatchObject({ reused: true, served: true });

      await after(api.notAfter);
      const late = await plainClient(server.port, client, full.session);
      expect(late).toMatchObject({ reused: true, served: false });
      expect(await errorCount(server.metrics, "inbound", "tls_local_cert_expired")).toBe(1);
      // Without a session the client itself refuses the expired server certificate.
      const lateFull = await plainClient(server.port, client);
      expect(lateFull).toMatchObject({ reused: false, served: false, error: "CERT_HAS_EXPIRED" });
    });

    it("(d) refuses a resumed session from an anchor dropped from the bundle", async () => {
      const server = await startInbound(await issue(mesh, API), [mesh, other]);
      const client = contextFor(await issue(other, WEB), mesh, other);

      const full = await plainClient(server.port, client);
      expect(full.served).toBe(true);
      const resumed = await plainClient(server.port, client, full.session);
      expect(resumed).toMatchObject({ reused: true, served: true });

      server.bundle.set([mesh.anchor.certificate]);
      const late = await plainClient(server.port, client, full.session);
      // The ticket keys changed with the bundle: a full handshake, whose client certificate no longer verifies.
      expect(late).toMatchObject({ reused: false, served: false });
      expect(await errorCount(server.metrics, "inbound", "tls_client_cert_unverified")).toBe(1);
    });

    it("a new certificate of its own invalidates every ticket issued before it", async () => {
      const server = await startInbound(await issue(mesh, API), [mesh]);
      const client = contextFor(await issue(mesh, WEB), mesh);
      const full = await plainClient(server.port, client);
      expect((await plainClient(server.port, client, full.session)).reused).toBe(true);

      server.store.set(await issue(mesh, API));
      const next = await plainClient(server.port, client, full.session);
      expect(next).toMatchObject({ reused: false, served: true });
      expect((await plainClient(server.port, client, next.session)).reused).toBe(true);
    });

    it("gives tickets a 300-second lifetime, not OpenSSL's 7200", async () => {
      const server = await startInbound(await issue(mesh, API), [mesh]);
      const full = await plainClient(server.port, contextFor(await issue(mesh, WEB), mesh));
      // node's session holds OpenSSL's DER SSL_SESSION, with the lifetime the server announced in its ticket.
      // Node 24 prefixes it with "\0nodejs:tls:session:1\0" and the server name: read from the DER SEQUENCE on.
      const session = full.session ?? Buffer.alloc(0);
      const der = session.subarray(Math.max(0, session.indexOf(Buffer.from([0x30, 0x82]))));
      const text = execFileSync("openssl", ["sess_id", "-inform", "DER", "-noout", "-text"], { input: der }).toString();
      expect(text).toMatch(/ticket lifetime hint: 300 \(seconds\)/);
    });
  });

  describe("outbound (the connecting side)", () => {
    async function startOutbound(own: Leaf, anchors: TestMesh[], server: tls.Server & { port: number }, now?: () => Date) {
      const store = createStore(own);
      const bundle = createBundle(anchors.map((m) => m.anchor.certificate));
      const credentials = createTlsCredentials({ credentials: store, trustBundle: bundle, ...(now === undefined ? {} : { now }) });
      const metrics = createProxyMetrics();
      const table = new Map<string, EndpointSet>([["api.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: server.port, weight: 1, identity: API, labels: {} }] }]]);
      const outbound = createOutbound({ resolver: createTableResolver(table), credentials, metrics, maxAttempts: 1, connectTimeoutMs: 5000 });
      closers.push(() => {
        outbound.close();
        credentials.close();
        server.close();
      });
      /** Connects through the outbound stack; the reused flag, or the coded refusal. */
      const connect = async (): Promise<{ reused: boolean } | { code: string }> => {
        try {
          const connection = await outbound.connect({ authority: "api.default.svc.cluster.local:80", listener: "route", client: { address: "127.0.0.1", port: 0 } });
          const socket = connection.socket as tls.TLSSocket;
          const reused = socket.isSessionReused();
          socket.write("ping\n");
          await once(socket, "data");
          // Let the session tickets after a full handshake arrive before closing.
          await new Promise((resolve) => setTimeout(resolve, 100));
          socket.destroy();
          return { reused };
        } catch (error) {
          if (error instanceof ProxyError) return { code: error.code };
          throw error;
        }
      };
      return { connect, metrics, store, bundle, credentials };
    }

    it("(a) resumes while both certificates are valid, (b) refuses before dialling once its own leaf has expired", async () => {
      const server = await plainServer(contextFor(await issue(mesh, API), mesh));
      const web = await issue(mesh, WEB, SHORT_MS);
      const client = await startOutbound(web, [mesh], server);

      expect(await client.connect()).toEqual({ reused: false });
      expect(await client.connect()).toEqual({ reused: true });

      await after(web.notAfter);
      expect(await client.connect()).toEqual({ code: "ERR_TLS_LOCAL_CERT_EXPIRED" });
      expect(await errorCount(client.metrics, "outbound", "tls_local_cert_expired")).toBe(1);
    });

    it("(c) stops offering the session once the server's leaf has expired, and refuses the server", async () => {
      const api = await issue(mesh, API, SHORT_MS);
      const server = await plainServer(contextFor(api, mesh));
      const client = await startOutbound(await issue(mesh, WEB), [mesh], server);

      expect(await client.connect()).toEqual({ reused: false });
      expect(await client.connect()).toEqual({ reused: true });

      await after(api.notAfter);
      expect(await client.connect()).toEqual({ code: "ERR_TLS_PEER_CERT_EXPIRED" });
      expect(await errorCount(client.metrics, "outbound", "tls_peer_cert_expired")).toBe(1);
    });

    it("(c) refuses a resumed handshake that completes after the server's leaf expired", async () => {
      // The session is looked up while the server's leaf is valid; the clock passes its notAfter before secureConnect.
      const api = await issue(mesh, API, 3_600_000);
      const server = await plainServer(contextFor(api, mesh));
      let skewMs = 0;
      const client = await startOutbound(await issue(mesh, WEB), [mesh], server, () => new Date(Date.now() + skewMs));
      expect(await client.connect()).toEqual({ reused: false });
      const lookup = client.credentials.session.bind(client.credentials);
      const moving: TlsCredentials = {
        ...client.credentials,
        session(key) {
          const found = lookup(key);
          skewMs = api.notAfter.getTime() - Date.now() + 1000;
          return found;
        },
      };
      const result = await connectEndpoint({ endpoint: { address: "127.0.0.1", port: server.port, weight: 1, identity: API, labels: {} }, credentials: moving }).then(
        (connection) => {
          connection.socket.destroy();
          return "connected";
        },
        (error: ProxyError) => error.code,
      );
      expect(result).toBe("ERR_TLS_PEER_CERT_EXPIRED");
    });

    it("(d) does not resume a session with a server whose anchor was dropped, and refuses it", async () => {
      const server = await plainServer(contextFor(await issue(other, API), mesh, other));
      const client = await startOutbound(await issue(mesh, WEB), [mesh, other], server);

      expect(await client.connect()).toEqual({ reused: false });
      expect(await client.connect()).toEqual({ reused: true });

      client.bundle.set([mesh.anchor.certificate]);
      expect(await client.connect()).toEqual({ code: "ERR_TLS_UNAUTHORIZED" });
      expect(await errorCount(client.metrics, "outbound", "tls_unauthorized")).toBe(1);
    });

    it("drops its sessions when its own credentials change", async () => {
      const server = await plainServer(contextFor(await issue(mesh, API), mesh));
      const client = await startOutbound(await issue(mesh, WEB), [mesh], server);
      expect(await client.connect()).toEqual({ reused: false });
      expect(await client.connect()).toEqual({ reused: true });
      client.store.set(await issue(mesh, WEB));
      expect(await client.connect()).toEqual({ reused: false });
    });
  });
});
