import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { GetDestination } from "@meshtls/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { idleConnections, MALFORMED_REQUEST_LINES, rawAdmin, rssKiB, stalledHandshakes } from "../../../test-support/attacks.ts";
import { adminGet, startDestination, waitFor, type DestinationProcess } from "./support.js";

const SERVER_NAME = "destination.meshtls.serviceaccount.identity.meshtls.cluster.local";
const GET_PATH = "/io.linkerd.proxy.destination.Destination/Get";

/** A CA, a server leaf for SERVER_NAME and two client leaves (two mesh identities), made by openssl. */
function makePki(dir: string): void {
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key");
  openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test root", "-days", "1", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
  for (const [name, san, eku] of [
    ["server", `DNS:${SERVER_NAME}`, "serverAuth"],
    ["web", "DNS:web.default.serviceaccount.identity.meshtls.cluster.local", "clientAuth"],
    ["api", "DNS:api.default.serviceaccount.identity.meshtls.cluster.local", "clientAuth"],
  ] as const) {
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.ec.key`);
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", `${name}.ec.key`, "-out", `${name}.key`);
    openssl("req", "-new", "-key", `${name}.key`, "-subj", "/", "-out", `${name}.csr`);
    writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=${eku}\nkeyUsage=critical,digitalSignature\n`);
    openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
  }
}

const getFrame = (() => {
  const body = GetDestination.encode({ scheme: "k8s", path: "api.default.svc.cluster.local:80", contextToken: "" }).finish();
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  Buffer.from(body).copy(frame, 5);
  return frame;
})();

/** Opens a Get stream on `session`; `result.status` is set when the server ends it. */
function openGet(session: http2.ClientHttp2Session): { status?: number; message?: string; data: number } {
  const result: { status?: number; message?: string; data: number } = { data: 0 };
  const stream = session.request({ ":method": "POST", ":path": GET_PATH, "content-type": "application/grpc", te: "trailers" });
  stream.end(getFrame);
  const read = (h: http2.IncomingHttpHeaders) => {
    if (h["grpc-status"] !== undefined) Object.assign(result, { status: Number(h["grpc-status"]), message: decodeURIComponent(String(h["grpc-message"] ?? "")) });
  };
  stream.on("response", read);
  stream.on("trailers", read);
  stream.on("data", () => result.data++);
  stream.on("error", () => undefined);
  return result;
}

describe.each([
  ["plaintext", false],
  ["mTLS", true],
])("meshtls-destination (%s) under malformed and flooding clients", (name, mtls) => {
  const dir = mkdtempSync(path.join(tmpdir(), "meshtls-destination-hostile-"));
  const file = path.join(dir, "registry.yaml");
  const p = (f: string) => path.join(dir, f);
  let server: DestinationProcess;

  beforeAll(async () => {
    if (mtls) makePki(dir);
    writeFileSync(file, "services:\n  - name: api\n    endpoints: [{ address: 127.0.1.1, serviceAccount: api }]\n");
    server = await startDestination({
      registryFile: file,
      args: [
        ...(mtls ? ["--tls-cert", p("server.pem"), "--tls-key", p("server.key"), "--tls-client-ca", p("ca.pem")] : ["--insecure-plaintext"]),
        "--max-concurrent-streams", "500",
        "--max-streams", "1000",
        "--max-streams-per-peer", "300",
        "--handshake-timeout", "2s",
        "--admin-max-connections", "8",
      ],
    });
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A session as one peer: on mTLS the client certificate `who` (web or api), in plaintext the source address `who`. */
  function session(who: string): http2.ClientHttp2Session {
    const s = mtls
      ? http2.connect(`https://127.0.0.1:${server.grpcPort}`, {
          createConnection: () =>
            tls.connect({ host: "127.0.0.1", port: server.grpcPort, servername: SERVER_NAME, ca: readFileSync(p("ca.pem")), cert: readFileSync(p(`${who}.pem`)), key: readFileSync(p(`${who}.key`)), ALPNProtocols: ["h2"] }),
        })
      : http2.connect(`http://127.0.0.1:${server.grpcPort}`, { createConnection: () => net.connect({ host: "127.0.0.1", port: server.grpcPort, localAddress: who }) });
    s.on("error", () => undefined);
    return s;
  }

  it("answers malformed admin request lines with 400 and keeps serving", async () => {
    for (const line of MALFORMED_REQUEST_LINES) expect(await rawAdmin(server.adminPort, `${line}\r\nHost: x\r\n\r\n`), line).toMatch(/^(HTTP\/1\.1 400 .*|)$/);
    expect(await rawAdmin(server.adminPort, "GET /re")).toMatch(/^(HTTP\/1\.1 400 .*|)$/);
    expect(server.child.exitCode).toBeNull();
    expect(await adminGet(server.adminPort, "/live")).toEqual({ status: 200, text: "live\n" });
  });

  it("closes connections short of a TLS handshake or an HTTP/2 preface at --handshake-timeout, on the Get and policy ports", async () => {
    // Plaintext: the preface a byte at a time. mTLS: a ClientHello record a byte at a time, and the preface after a handshake.
    const clientTls = mtls ? { tls: { servername: SERVER_NAME, ca: readFileSync(p("ca.pem")), cert: readFileSync(p("web.pem")), key: readFileSync(p("web.key")) } } : {};
    const closed = (await Promise.all([server.grpcPort, server.policyPort].map((port) => stalledHandshakes("127.0.0.1", port, clientTls)))).flat();
    console.log(`destination (${name}): connections short of the handshake closed after ${closed.join(", ")} ms (--handshake-timeout 2s)`);
    // Generous: the machine running the tests is loaded.
    for (const ms of closed) {
      expect(ms).toBeGreaterThanOrEqual(1500);
      expect(ms).toBeLessThan(15_000);
    }
    // Still serving; the session goes at once, so that its stream does not count against the peer's share below.
    const served = session(mtls ? "web" : "127.0.0.1");
    try {
      const get = openGet(served);
      await waitFor(() => (get.data > 0 ? true : undefined), 10_000, "a Get's first update");
    } finally {
      served.destroy();
    }
    for (let i = 0; i < 100 && !/^destination_get_streams 0$/m.test((await adminGet(server.adminPort, "/metrics")).text); i++) await new Promise((r) => setTimeout(r, 100));
  }, 60_000);

  it("closes admin connections beyond --admin-max-connections at once and counts them", async () => {
    const held = await idleConnections(server.adminPort, 8);
    const extra = await idleConnections(server.adminPort, 3);
    // A keep-alive connection of an earlier request may hold one of the 8 places: the last 3 are refused whatever.
    expect(extra.closed()).toBe(3);
    const refused = held.closed() + extra.closed();
    for (const socket of [...held.sockets, ...extra.sockets]) socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await adminGet(server.adminPort, "/metrics")).text).toContain(`tcp_connections_refused_total{listener="admin",reason="max_connections"} ${refused}\n`);
  });

  it("gives one peer its share of streams and no more; another peer is still served; RSS stays bounded", async () => {
    const [greedyName, otherName] = mtls ? ["web", "api"] : ["127.0.0.1", "127.0.0.2"];
    const before = rssKiB(server.child.pid!);
    const greedy = session(greedyName);
    try {
      await new Promise<void>((resolve) => greedy.once("remoteSettings", () => resolve()));
      expect(greedy.remoteSettings.maxConcurrentStreams).toBe(500);
      // 2,000 Get streams from one peer on one connection (node's client keeps to the 500 per connection).
      const streams = Array.from({ length: 2000 }, () => openGet(greedy));
      await waitFor(() => (streams.filter((s) => s.status === 8).length >= 1700 ? true : undefined), 30_000, "the refusals beyond the peer's share");
      await waitFor(() => (streams.filter((s) => s.data > 0).length === 300 ? true : undefined), 30_000, "the peer's 300 streams");
      const refusedOne = streams.find((s) => s.status === 8);
      const peer = mtls ? "id:web.default.serviceaccount.identity.meshtls.cluster.local" : "ip:127.0.0.1";
      expect(refusedOne?.message).toBe(`this client (${peer}) holds its maximum of 300 streams; close some or retry later`);
      // Another proxy still gets discovery.
      const other = session(otherName);
      try {
        const get = openGet(other);
        await waitFor(() => (get.data > 0 ? true : undefined), 10_000, "another peer's first update");
        expect(get.status).toBeUndefined();
      } finally {
        other.destroy();
      }
      const after = rssKiB(server.child.pid!);
      console.log(`destination (${name}): 2000 Gets from one peer: ${streams.filter((s) => s.data > 0).length} served, ${streams.filter((s) => s.status === 8).length} RESOURCE_EXHAUSTED; RSS ${before} KiB -> ${after} KiB (+${after - before} KiB)`);
      expect(after - before).toBeLessThan(64 * 1024);
      const metrics = (await adminGet(server.adminPort, "/metrics")).text;
      expect(metrics).toMatch(/^destination_get_refused_total\{reason="max_streams_per_peer"\} 1700$/m);
    } finally {
      greedy.destroy();
    }
    // The peer's streams are freed when its connection goes.
    for (let i = 0; i < 100 && !/^destination_get_streams 0$/m.test((await adminGet(server.adminPort, "/metrics")).text); i++) await new Promise((r) => setTimeout(r, 100));
    expect((await adminGet(server.adminPort, "/metrics")).text).toMatch(/^destination_get_streams 0$/m);
  }, 90_000);
});
