// The inbound terminator with real TLS 1.3 on 127.0.0.1: its one tls.Server
// takes its context from the credentials (no SNICallback), follows rotations
// and trust bundle changes for new connections only, and refuses at once
// while there is no certificate or no anchor.
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import tls from "node:tls";
import { pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTlsCredentials } from "../credentials.js";
import type { TlsCredentials } from "../credentials.js";
import { createBundle, createStore, createTestMesh, identityOf } from "../test-mesh.js";
import { TRANSPORT_ALPN } from "../transport-header.js";
import type { TestMesh } from "../test-mesh.js";
import type { InboundTarget, Refusal } from "./target.js";
import { createTerminateTls } from "./terminate-tls.js";
import type { Terminated } from "./terminate-tls.js";

const API = identityOf("api");
const WEB = identityOf("web");

type Leaf = Awaited<ReturnType<TestMesh["issue"]>>;

/** What the terminator made of one connection, and whether it wrote anything to the raw socket before answering. */
interface Outcome {
  result: Terminated | Refusal;
  bytesWritten: number;
  ms: number;
}

interface Terminator {
  port: number;
  /** The next connection's outcome. */
  next(): Promise<Outcome>;
}

/** A loopback listener handing every connection to a terminator for API; terminated streams are echoed, refusals closed as the inbound stack does. */
async function startTerminator(credentials: TlsCredentials, closers: (() => void)[], handshakeTimeoutMs = 10_000): Promise<Terminator> {
  const terminate = createTerminateTls({ identity: API, credentials, handshakeTimeoutMs });
  const outcomes: Outcome[] = [];
  const waiting: ((outcome: Outcome) => void)[] = [];
  const server = net.createServer((raw) => {
    const start = Date.now();
    raw.on("error", () => undefined);
    void terminate({ tls: { tls: "true" } } as InboundTarget, raw).then((result) => {
      const outcome = { result, bytesWritten: raw.bytesWritten, ms: Date.now() - start };
      if ("refused" in result) raw.destroy();
      else result.socket.pipe(result.socket);
      const waiter = waiting.shift();
      if (waiter === undefined) outcomes.push(outcome);
      else waiter(outcome);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  closers.push(() => server.close());
  return {
    port: (server.address() as net.AddressInfo).port,
    next: () => {
      const outcome = outcomes.shift();
      return outcome === undefined ? new Promise((resolve) => waiting.push(resolve)) : Promise.resolve(outcome);
    },
  };
}

interface Client {
  socket: tls.TLSSocket;
  /** The serial number of the certificate the server presented. */
  serial: string;
  reused: boolean;
  /** Resolves with the first session ticket the server sends. */
  session: Promise<Buffer>;
}

/** A mesh client of `leaf` trusting `anchors`, asking for `servername`; rejects when the handshake fails. */
function connect(port: number, options: { leaf?: Leaf; anchors: TestMesh[]; servername?: string; session?: Buffer; alpn?: string[] }): Promise<Client> {
  return new Promise((resolve, reject) => {
    let resolveSession: (ticket: Buffer) => void = () => undefined;
    const session = new Promise<Buffer>((r) => (resolveSession = r));
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: options.servername ?? API,
      ca: options.anchors.map((mesh) => pemEncode("CERTIFICATE", mesh.anchor.certificate)).join(""),
      minVersion: "TLSv1.3",
      ...(options.leaf === undefined ? {} : { key: options.leaf.privateKeyPem, cert: options.leaf.certificateChainPem }),
      ...(options.session === undefined ? {} : { session: options.session }),
      ...(options.alpn === undefined ? {} : { ALPNProtocols: options.alpn }),
      // The other-SNI case only: the server presents API's certificate whatever the client asked for.
      ...(options.servername === undefined ? {} : { checkServerIdentity: () => undefined }),
    });
    socket.once("session", resolveSession);
    socket.once("secureConnect", () => {
      // A resumed handshake shows no certificate.
      const raw = socket.getPeerCertificate().raw as Buffer | undefined;
      resolve({ socket, serial: raw === undefined ? "" : new X509Certificate(raw).serialNumber, reused: socket.isSessionReused(), session });
    });
    socket.once("error", reject);
  });
}

/** Writes `text` and resolves with the echo, or with what ended the connection. */
function roundTrip(socket: tls.TLSSocket, text: string): Promise<string> {
  return new Promise((resolve) => {
    let echoed = "";
    const onData = (chunk: Buffer): void => {
      echoed += String(chunk);
      if (echoed.length >= text.length) {
        socket.off("data", onData);
        resolve(echoed);
      }
    };
    socket.on("data", onData);
    socket.once("close", () => resolve(`closed:${echoed}`));
    socket.once("error", () => undefined);
    socket.write(text);
  });
}

/** Whether the client's connection is closed by the server without any data. */
function closedByServer(socket: tls.TLSSocket): Promise<boolean> {
  return new Promise((resolve) => {
    let data = false;
    socket.on("data", () => (data = true));
    socket.on("error", () => undefined);
    socket.once("close", () => resolve(!data));
  });
}

const serialOf = (leaf: Leaf): string => new X509Certificate(leaf.leaf).serialNumber;

/** The ticket lifetime the server announced, read by openssl from node's session (DER SSL_SESSION after node's prefix). */
function ticketLifetimeS(session: Buffer): number {
  const der = session.subarray(Math.max(0, session.indexOf(Buffer.from([0x30, 0x82]))));
  const text = execFileSync("openssl", ["sess_id", "-inform", "DER", "-noout", "-text"], { input: der }).toString();
  return Number(/ticket lifetime hint: (\d+)/.exec(text)?.[1]);
}

describe("terminate-tls: the inbound server's context follows the credentials (real TLS 1.3 on 127.0.0.1)", () => {
  let mesh: TestMesh;
  let other: TestMesh;
  let web: Leaf;
  const closers: (() => void)[] = [];

  beforeAll(async () => {
    [mesh, other] = await Promise.all([createTestMesh(), createTestMesh()]);
    web = await mesh.issue(WEB);
  });
  afterAll(() => {
    for (const close of closers) close();
  });

  function credentialsOf(store: ReturnType<typeof createStore>, bundle: ReturnType<typeof createBundle>): TlsCredentials {
    const credentials = createTlsCredentials({ credentials: store, trustBundle: bundle });
    closers.push(() => credentials.close());
    return credentials;
  }

  it("terminates our SNI with the current certificate; after a rotation new connections get the new one and open ones keep working", async () => {
    const first = await mesh.issue(API);
    const store = createStore(first);
    const terminator = await startTerminator(credentialsOf(store, createBundle([mesh.anchor.certificate])), closers);

    const open = await connect(terminator.port, { leaf: web, anchors: [mesh] });
    expect(open.serial).toBe(serialOf(first));
    const outcome = await terminator.next();
    expect("target" in outcome.result && outcome.result.target).toMatchObject({ tls: { tls: "true", peerId: WEB }, clientId: WEB });
    expect(await roundTrip(open.socket, "before")).toBe("before");

    const second = await mesh.issue(API);
    store.set(second);
    expect(await roundTrip(open.socket, "after rotation")).toBe("after rotation");
    const fresh = await connect(terminator.port, { leaf: web, anchors: [mesh], alpn: [TRANSPORT_ALPN] });
    expect(fresh.serial).toBe(serialOf(second));
    // What the server itself keeps across contexts: ALPN, and asking for a client certificate.
    expect(fresh.socket.alpnProtocol).toBe(TRANSPORT_ALPN);
    expect(await terminator.next()).toMatchObject({ result: { target: { clientId: WEB } } });
    expect(await roundTrip(fresh.socket, "fresh")).toBe("fresh");
    expect(await roundTrip(open.socket, "still")).toBe("still");
    open.socket.destroy();
    fresh.socket.destroy();
  });

  it("refuses at once with ERR_NO_CREDENTIALS, no handshake begun, before the first certificate and with an empty trust bundle", async () => {
    const store = createStore();
    const bundle = createBundle([mesh.anchor.certificate]);
    // A handshake timeout far beyond the test's: a refusal that waited for it would fail the test by time.
    const terminator = await startTerminator(credentialsOf(store, bundle), closers, 600_000);

    const early = connect(terminator.port, { leaf: web, anchors: [mesh] });
    await expect(early).rejects.toThrow(/disconnected|ECONNRESET|socket hang up/i);
    const refused = await terminator.next();
    expect(refused).toMatchObject({ result: { refused: { code: "ERR_NO_CREDENTIALS" }, errorLabel: "tls_handshake" }, bytesWritten: 0 });
    expect(refused.ms).toBeLessThan(5000);

    const api = await mesh.issue(API);
    store.set(api);
    const served = await connect(terminator.port, { leaf: web, anchors: [mesh] });
    expect(served.serial).toBe(serialOf(api));
    expect(await roundTrip(served.socket, "served")).toBe("served");
    await terminator.next();

    bundle.set([]);
    await expect(connect(terminator.port, { leaf: web, anchors: [mesh] })).rejects.toThrow(/disconnected|ECONNRESET|socket hang up/i);
    expect(await terminator.next()).toMatchObject({ result: { refused: { code: "ERR_NO_CREDENTIALS" } }, bytesWritten: 0 });
    // The connection made before keeps the context it started with.
    expect(await roundTrip(served.socket, "open")).toBe("open");

    bundle.set([mesh.anchor.certificate]);
    const again = await connect(terminator.port, { leaf: web, anchors: [mesh] });
    expect(again.serial).toBe(serialOf(api));
    served.socket.destroy();
    again.socket.destroy();
  });

  it("never resumes a ticket issued before a rotation; tickets keep their 300-second lifetime after it", async () => {
    const store = createStore(await mesh.issue(API));
    const terminator = await startTerminator(credentialsOf(store, createBundle([mesh.anchor.certificate])), closers);

    // Whether a new connection offering `session` resumes it.
    const resumes = async (session: Buffer): Promise<boolean> => {
      const again = await connect(terminator.port, { leaf: web, anchors: [mesh], session });
      again.socket.destroy();
      return again.reused;
    };
    const full = await connect(terminator.port, { leaf: web, anchors: [mesh] });
    const ticket = await full.session;
    full.socket.destroy();
    expect(ticketLifetimeS(ticket)).toBe(300);
    expect(await resumes(ticket)).toBe(true);

    const next = await mesh.issue(API);
    store.set(next);
    const after = await connect(terminator.port, { leaf: web, anchors: [mesh], session: ticket });
    expect(after).toMatchObject({ reused: false, serial: serialOf(next) });
    const nextTicket = await after.session;
    after.socket.destroy();
    expect(ticketLifetimeS(nextTicket)).toBe(300);
    expect(await resumes(nextTicket)).toBe(true);
  });

  it("verifies client certificates against the current trust bundle: one from a removed anchor is refused on new connections", async () => {
    const bundle = createBundle([mesh.anchor.certificate, other.anchor.certificate]);
    const terminator = await startTerminator(credentialsOf(createStore(await mesh.issue(API)), bundle), closers);
    const stranger = await other.issue(WEB);

    const before = await connect(terminator.port, { leaf: stranger, anchors: [mesh] });
    expect(await terminator.next()).toMatchObject({ result: { target: { clientId: WEB } } });
    expect(await roundTrip(before.socket, "trusted")).toBe("trusted");

    bundle.set([mesh.anchor.certificate]);
    const after = await connect(terminator.port, { leaf: stranger, anchors: [mesh] });
    const closed = closedByServer(after.socket);
    expect(await terminator.next()).toMatchObject({ result: { refused: { code: "ERR_TLS_UNAUTHORIZED" }, errorLabel: "tls_client_cert_unverified" } });
    expect(await closed).toBe(true);
    const member = await connect(terminator.port, { leaf: web, anchors: [mesh] });
    expect(await terminator.next()).toMatchObject({ result: { target: { clientId: WEB } } });
    member.socket.destroy();
    before.socket.destroy();
  });

  it("refuses a handshake whose SNI is not ours (detection passes those through: this is the layer's own check)", async () => {
    const terminator = await startTerminator(credentialsOf(createStore(await mesh.issue(API)), createBundle([mesh.anchor.certificate])), closers);
    const client = await connect(terminator.port, { leaf: web, anchors: [mesh], servername: identityOf("other") });
    const closed = closedByServer(client.socket);
    expect(await terminator.next()).toMatchObject({ result: { refused: { code: "ERR_TLS_HANDSHAKE" }, errorLabel: "tls_handshake" } });
    expect(await closed).toBe(true);
  });
});

describe("what terminate-tls relies on in node:tls", () => {
  const leafOf = async (): Promise<{ mesh: TestMesh; leaf: Leaf }> => {
    const mesh = await createTestMesh();
    return { mesh, leaf: await mesh.issue(API) };
  };

  it("a tls.Server given a socket wraps it with `_parent` pointing at it, on success and on failure", async () => {
    const { mesh, leaf } = await leafOf();
    const server = tls.createServer({ key: leaf.privateKeyPem, cert: leaf.certificateChainPem, minVersion: "TLSv1.3" });
    const parents: { event: string; same: boolean }[] = [];
    server.on("secureConnection", (socket: tls.TLSSocket & { _parent?: unknown }) => {
      parents.push({ event: "secureConnection", same: socket._parent === raws[0] });
      socket.end();
    });
    server.on("tlsClientError", (error: Error, socket: tls.TLSSocket & { _parent?: unknown }) => parents.push({ event: `tlsClientError ${raws.length}`, same: socket._parent === raws[1] }));
    const raws: net.Socket[] = [];
    const listener = net.createServer((raw) => {
      raws.push(raw);
      server.emit("connection", raw);
    });
    listener.listen(0, "127.0.0.1");
    await once(listener, "listening");
    const { port } = listener.address() as net.AddressInfo;
    const good = tls.connect({ host: "127.0.0.1", port, servername: API, ca: pemEncode("CERTIFICATE", mesh.anchor.certificate) });
    good.on("error", () => undefined);
    await once(good, "secureConnect");
    await expect.poll(() => parents.length).toBe(1);
    good.destroy();
    // Not TLS at all: the server fails the handshake.
    const bad = net.connect(port, "127.0.0.1", () => bad.end("GET / HTTP/1.1\r\n\r\n"));
    bad.on("error", () => undefined);
    await expect.poll(() => parents.length).toBe(2);
    expect(parents).toEqual([
      { event: "secureConnection", same: true },
      { event: "tlsClientError 2", same: true },
    ]);
    listener.close();
  });

  it("a tls.Server created without key and certificate never completes a handshake", async () => {
    const server = tls.createServer({ requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.3", maxVersion: "TLSv1.3" });
    let secured = 0;
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      secured++;
      socket.destroy();
    });
    const errors: string[] = [];
    server.on("tlsClientError", (error: Error) => errors.push(error.message));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as net.AddressInfo;
    const client = tls.connect({ host: "127.0.0.1", port, servername: API, rejectUnauthorized: false });
    const error = await new Promise<Error>((resolve) => {
      client.once("error", resolve);
      client.once("secureConnect", () => resolve(new Error("handshake completed")));
    });
    expect(error.message).not.toBe("handshake completed");
    await expect.poll(() => errors.length).toBe(1);
    expect(errors[0]).toMatch(/no suitable signature algorithm|no shared cipher|certificate/i);
    expect(secured).toBe(0);
    client.destroy();
    server.close();
  });
});
