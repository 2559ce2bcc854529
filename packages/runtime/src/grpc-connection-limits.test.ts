import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import type { ServiceDefinition } from "@grpc/grpc-js";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, limitGrpcConnections } from "./index.ts";
import type { GrpcConnectionCloseReason } from "./index.ts";

const TIMEOUT_MS = 500;
const PING_INTERVAL_MS = 500;
const PING_TIMEOUT_MS = 500;
/** Generous: the machine running the tests is loaded. */
const CLOSED_BY_MS = 5000;
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

const echo: ServiceDefinition = {
  echo: {
    path: "/test.Echo/Echo",
    requestStream: false,
    responseStream: false,
    requestSerialize: (value: Buffer) => value,
    requestDeserialize: (bytes: Buffer) => bytes,
    responseSerialize: (value: Buffer) => value,
    responseDeserialize: (bytes: Buffer) => bytes,
  },
};

let dir: string;
let cert: Buffer;
let key: Buffer;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "runtime-handshake-"));
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=grpc.test", "-addext", "subjectAltName=DNS:grpc.test",
    "-days", "1", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "ignore" });
  cert = readFileSync(path.join(dir, "cert.pem"));
  key = readFileSync(path.join(dir, "key.pem"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Opens a connection (TLS when `tlsOptions` is given), writes `first`, then `pace.bytes` bytes of `trickled` every
 * `pace.everyMs`; resolves with the ms until the server closed it, or undefined after `waitMs`.
 */
function holdOpen(port: number, first: Buffer, trickled: Buffer, tlsOptions?: tls.ConnectionOptions, pace = { bytes: 1, everyMs: 200 }, waitMs = CLOSED_BY_MS): Promise<number | undefined> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = tlsOptions ? tls.connect({ host: "127.0.0.1", port, ...tlsOptions }) : net.connect(port, "127.0.0.1");
    let sent = 0;
    let trickle: NodeJS.Timeout | undefined;
    const done = (closedAfterMs: number | undefined) => {
      clearInterval(trickle);
      clearTimeout(wait);
      socket.destroy();
      resolve(closedAfterMs);
    };
    const wait = setTimeout(() => done(undefined), waitMs);
    socket.once(tlsOptions ? "secureConnect" : "connect", () => {
      socket.write(first);
      trickle = setInterval(() => {
        const from = (sent * pace.bytes) % trickled.length;
        sent++;
        socket.write(trickled.subarray(from, from + pace.bytes));
      }, pace.everyMs);
    });
    socket.on("data", () => undefined);
    socket.on("error", () => undefined);
    socket.once("close", () => done(Date.now() - started));
  });
}

/** A real HTTP/2 client: connects, waits past the timeout, then calls Echo on the same session. */
async function callAfterTimeout(authority: string, options: http2.SecureClientSessionOptions = {}): Promise<{ closedEarly: boolean; answer: string }> {
  const session = http2.connect(authority, options);
  let closedEarly = false;
  session.on("close", () => (closedEarly = true));
  session.on("error", () => undefined);
  await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS * 4));
  const message = Buffer.from("hello");
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
  const stream = session.request({ ":method": "POST", ":path": "/test.Echo/Echo", "content-type": "application/grpc", te: "trailers" });
  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
  stream.end(frame);
  await new Promise((resolve) => stream.once("close", resolve));
  session.close();
  return { closedEarly, answer: Buffer.concat(chunks).subarray(5).toString() };
}

/** `grpc_connections_closed_total{listener="test",reason}` in `registry`. */
async function closedCount(registry: Registry, reason: GrpcConnectionCloseReason): Promise<number | undefined> {
  const metric = await registry.getSingleMetric("grpc_connections_closed_total")?.get();
  return metric?.values.find((v) => v.labels.listener === "test" && v.labels.reason === reason)?.value;
}

describe("limitGrpcConnections: the handshake timeout", () => {
  const servers: Server[] = [];
  let registry: Registry;
  afterEach(() => {
    for (const server of servers.splice(0)) server.forceShutdown();
  });
  async function start(credentials: ServerCredentials): Promise<number> {
    const server = new Server();
    registry = new Registry();
    limitGrpcConnections(server, { handshakeTimeoutMs: TIMEOUT_MS, pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS, metricsRegistry: registry, listener: "test" });
    server.addService(echo, { echo: (call: { request: Buffer }, callback: (error: null, value: Buffer) => void) => callback(null, call.request) });
    servers.push(server);
    return new Promise((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (error, port) => (error ? reject(error) : resolve(port))));
  }

  it("closes plaintext connections short of the HTTP/2 preface and SETTINGS, and keeps those that sent them", async () => {
    const port = await start(ServerCredentials.createInsecure());
    const [silent, trickledPreface, trickledSettings] = await Promise.all([
      holdOpen(port, Buffer.alloc(0), Buffer.alloc(0)),
      holdOpen(port, Buffer.alloc(0), PREFACE),
      holdOpen(port, PREFACE, EMPTY_SETTINGS),
    ]);
    for (const closedAfterMs of [silent, trickledPreface, trickledSettings]) {
      expect(closedAfterMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
      expect(closedAfterMs).toBeLessThan(CLOSED_BY_MS);
    }
    expect(await closedCount(registry, "handshake_timeout")).toBe(3);
    // The real client stays past several PINGs (its HTTP/2 stack answers them) and is served.
    expect(await callAfterTimeout(`http://127.0.0.1:${port}`)).toEqual({ closedEarly: false, answer: "hello" });
    expect(await closedCount(registry, "handshake_timeout")).toBe(3);
    expect(await closedCount(registry, "ping_timeout")).toBe(0);
  });

  it("closes TLS connections short of the handshake, or of the preface after it, and keeps those that finished both", async () => {
    const port = await start(ServerCredentials.createSsl(null, [{ cert_chain: cert, private_key: key }]));
    const tlsOptions = { ca: cert, servername: "grpc.test", ALPNProtocols: ["h2"] };
    const [noClientHello, trickledClientHello, trickledPreface] = await Promise.all([
      holdOpen(port, Buffer.alloc(0), Buffer.alloc(0)),
      // A ClientHello record header announcing 512 bytes that come one at a time.
      holdOpen(port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), Buffer.alloc(512, 1)),
      holdOpen(port, Buffer.alloc(0), PREFACE, tlsOptions),
    ]);
    for (const closedAfterMs of [noClientHello, trickledClientHello, trickledPreface]) {
      expect(closedAfterMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
      expect(closedAfterMs).toBeLessThan(CLOSED_BY_MS);
    }
    expect(await closedCount(registry, "handshake_timeout")).toBe(3);
    expect(await callAfterTimeout(`https://127.0.0.1:${port}`, tlsOptions)).toEqual({ closedEarly: false, answer: "hello" });
    expect(await closedCount(registry, "ping_timeout")).toBe(0);
  });

  it("refuses a timeout below 1 ms, and a grpc-js without the method it wraps", () => {
    expect(() => limitGrpcConnections(new Server(), { handshakeTimeoutMs: 0 })).toThrow(ConfigError);
    expect(() => limitGrpcConnections(new Server(), { pingIntervalMs: 0.5 })).toThrow(ConfigError);
    expect(() => limitGrpcConnections(new Server(), { pingTimeoutMs: -1 })).toThrow(ConfigError);
    expect(() => limitGrpcConnections({} as Server)).toThrow(/createHttp2Server/);
  });
});

/** An HTTP/2 frame: its 9-byte header, announcing `length` bytes (default: the payload's), then `payload`. */
function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0), length = payload.length): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(length, 0, 3);
  header.writeUInt8(type, 3);
  header.writeUInt8(flags, 4);
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}
const HEADERS = 0x1;
const CONTINUATION = 0x9;
const END_HEADERS = 0x4;
/** The start of a valid HPACK header block: a literal field `x` whose value announces 16,000 bytes (few of which ever come). */
const LONG_FIELD = Buffer.from([0x00, 0x01, 0x78, 0x7f, 0x81, 0x7c]);

describe("limitGrpcConnections: the PING after the handshake (a trickled HEADERS)", () => {
  const servers: Server[] = [];
  afterEach(() => {
    for (const server of servers.splice(0)) server.forceShutdown();
  });
  async function start(credentials: ServerCredentials, registry: Registry): Promise<number> {
    const server = new Server();
    limitGrpcConnections(server, { handshakeTimeoutMs: TIMEOUT_MS, pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS, metricsRegistry: registry, listener: "test" });
    server.addService(echo, { echo: (call: { request: Buffer }, callback: (error: null, value: Buffer) => void) => callback(null, call.request) });
    servers.push(server);
    return new Promise((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (error, port) => (error ? reject(error) : resolve(port))));
  }
  const handshake = Buffer.concat([PREFACE, EMPTY_SETTINGS]);
  /**
   * Three clients past the handshake: one trickling a HEADERS frame a byte at a time, one sending whole CONTINUATION
   * frames of a header block that never ends (one every 600 ms: nghttp2 closes a connection at a block's 9th), one silent.
   */
  const stalled = (port: number, tlsOptions?: tls.ConnectionOptions) => {
    const headersFrame = frame(HEADERS, END_HEADERS, 1, Buffer.concat([LONG_FIELD, Buffer.alloc(16_384 - LONG_FIELD.length, 0x61)]), 16_384);
    const continuations = Buffer.concat(Array.from({ length: 100 }, () => frame(CONTINUATION, 0, 1, Buffer.alloc(10, 0x61))));
    return Promise.all([
      holdOpen(port, Buffer.concat([handshake, headersFrame.subarray(0, 9)]), headersFrame.subarray(9), tlsOptions),
      holdOpen(port, Buffer.concat([handshake, frame(HEADERS, 0, 1, LONG_FIELD)]), continuations, tlsOptions, { bytes: 19, everyMs: 600 }),
      holdOpen(port, handshake, Buffer.alloc(0), tlsOptions),
    ]);
  };

  for (const transport of ["plaintext", "TLS"] as const) {
    it(`closes ${transport} connections that stop answering PINGs mid-header-block, counted as ping_timeout, and keeps a real client`, async () => {
      const registry = new Registry();
      const tlsOptions = transport === "TLS" ? { ca: cert, servername: "grpc.test", ALPNProtocols: ["h2"] } : undefined;
      const port = await start(transport === "TLS" ? ServerCredentials.createSsl(null, [{ cert_chain: cert, private_key: key }]) : ServerCredentials.createInsecure(), registry);
      const closedAfter = await stalled(port, tlsOptions);
      for (const closedAfterMs of closedAfter) {
        expect(closedAfterMs).toBeGreaterThanOrEqual(PING_INTERVAL_MS + PING_TIMEOUT_MS - 50);
        expect(closedAfterMs).toBeLessThan(CLOSED_BY_MS);
      }
      expect(await closedCount(registry, "ping_timeout")).toBe(3);
      expect(await closedCount(registry, "handshake_timeout")).toBe(0);
      expect(await callAfterTimeout(`${transport === "TLS" ? "https" : "http"}://127.0.0.1:${port}`, tlsOptions)).toEqual({ closedEarly: false, answer: "hello" });
      expect(await closedCount(registry, "ping_timeout")).toBe(3);
    });
  }

  it("shares one counter between the servers of a registry, each reason at 0 from the start", async () => {
    const registry = new Registry();
    limitGrpcConnections(new Server(), { metricsRegistry: registry, listener: "test" });
    limitGrpcConnections(new Server(), { metricsRegistry: registry, listener: "other" });
    const metric = await registry.getSingleMetric("grpc_connections_closed_total")?.get();
    expect(metric?.values.map((v) => `${v.labels.listener} ${v.labels.reason} ${v.value}`).sort()).toEqual([
      "other handshake_timeout 0", "other ping_timeout 0", "test handshake_timeout 0", "test ping_timeout 0",
    ]);
  });
});

/** Calls Echo over TLS offering `alpn` (none when empty), as Linkerd's proxy does on control-plane connections; rejects when the server closes first. */
function callWithAlpn(port: number, alpn: string[]): Promise<{ negotiated: string | false | null; answer: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca: cert, servername: "grpc.test", minVersion: "TLSv1.3", ...(alpn.length > 0 ? { ALPNProtocols: alpn } : {}) });
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      const negotiated = socket.alpnProtocol;
      const session = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => socket });
      session.on("error", reject);
      const message = Buffer.from("no alpn");
      const stream = session.request({ ":method": "POST", ":path": "/test.Echo/Echo", "content-type": "application/grpc", te: "trailers" });
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("error", reject);
      stream.end(Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]));
      stream.once("close", () => {
        session.close();
        if (chunks.length === 0) reject(new Error(`no answer (stream code ${stream.rstCode})`));
        else resolve({ negotiated, answer: Buffer.concat(chunks).subarray(5).toString() });
      });
    });
  });
}

describe("clients without ALPN (Linkerd's proxy on control-plane connections)", () => {
  const servers: Server[] = [];
  afterEach(() => {
    for (const server of servers.splice(0)) server.forceShutdown();
  });
  async function start(acceptWithoutAlpn: boolean | undefined): Promise<number> {
    const server = new Server();
    limitGrpcConnections(server, acceptWithoutAlpn === undefined ? {} : { acceptWithoutAlpn });
    server.addService(echo, { echo: (call: { request: Buffer }, callback: (error: null, value: Buffer) => void) => callback(null, call.request) });
    servers.push(server);
    const credentials = ServerCredentials.createSsl(null, [{ cert_chain: cert, private_key: key }]);
    return new Promise((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (error, port) => (error ? reject(error) : resolve(port))));
  }

  it("serves gRPC to a TLS client that offers no ALPN, and still to one that offers h2", async () => {
    const port = await start(undefined);
    expect(await callWithAlpn(port, [])).toEqual({ negotiated: false, answer: "no alpn" });
    expect(await callWithAlpn(port, ["h2"])).toEqual({ negotiated: "h2", answer: "no alpn" });
  });

  it("still refuses a client whose ALPN offer lacks h2, and one without ALPN when acceptWithoutAlpn is false", async () => {
    const port = await start(undefined);
    await expect(callWithAlpn(port, ["http/1.1"])).rejects.toThrow();
    const strict = await start(false);
    await expect(callWithAlpn(strict, [])).rejects.toThrow();
  });
});
