// Slow-loris on every listener that parses what it reads: one byte a second of a request that never completes.
// Each connection must be closed by a server-side timeout within SLOW_LORIS_BOUND_MS, not hold its slot forever.
// (A route listener is left out: it is a plain TCP pipe, and trickled bytes are the application's data; the transparent
// outbound, which closes a connection nothing redirected at once, is in transparent.test.ts.)
import { writeFileSync } from "node:fs";
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import type tls from "node:tls";
import { afterAll, beforeAll, describe, it } from "vitest";
import { clientHello } from "./support/client-hello.ts";
import { frame, FrameType, PREFACE } from "./support/http2-frames.ts";
import { reviewWorks, startInjector } from "./support/injector.ts";
import type { Webhook } from "./support/injector.ts";
import { createMaterial, identityOf, startDestination, startIdentity, startProxy } from "./support/mesh.ts";
import type { Leaf, Material, ProxyProcess, Service } from "./support/mesh.ts";
import { bins, freePort, poll, startNode, stopAll, tempDir } from "./support/processes.ts";
import type { Proc } from "./support/processes.ts";
import { attack, expectHolds } from "./support/results.ts";
import type { Outcome } from "./support/results.ts";
import { bytesOf, trickleUntilClosed } from "./support/trickle.ts";
import { TRANSPORT_ALPN, transportHeader } from "./support/transport-header.ts";
import { httpGet } from "./support/wire.ts";

/**
 * Well above any legitimate time to send a request head or finish a handshake, and above the 60 s a node
 * server with a 30 s headersTimeout may take (it checks every 30 s by default), so that no row sits on the edge.
 */
const SLOW_LORIS_BOUND_MS = 75_000;
const BYTE_EVERY_MS = 1000;

/** Writes `payload` one byte a second, forever: closed by the server within the bound, or held. */
async function trickle(address: string, payload: Buffer, tlsOptions?: tls.ConnectionOptions): Promise<Outcome> {
  const { closedAfterMs, sent } = await trickleUntilClosed(address, { chunks: bytesOf(payload), everyMs: BYTE_EVERY_MS, boundMs: SLOW_LORIS_BOUND_MS, tls: tlsOptions });
  if (closedAfterMs === undefined) return { result: `still open after ${SLOW_LORIS_BOUND_MS / 1000} s (${sent} B trickled)`, ok: false };
  return { result: `closed by the server after ${(closedAfterMs / 1000).toFixed(1)} s`, ok: true };
}

/** An HTTP/1 head that never ends: a request line, then one header after another. */
const endlessHead = (first: string): Buffer => Buffer.from(first + "X-Slow: 1\r\n".repeat(50), "latin1");
/** The HTTP/2 preface and SETTINGS, then a HEADERS frame whose 16 KiB payload never arrives. */
const endlessH2 = (): Buffer => Buffer.concat([PREFACE, frame(FrameType.SETTINGS, 0, 0), frame(FrameType.HEADERS, 4, 1, Buffer.alloc(16_384, 0x41)).subarray(0, 200)]);

describe(`slow-loris: one byte a second, closed within ${SLOW_LORIS_BOUND_MS / 1000} s`, () => {
  const servers: http.Server[] = [];
  let material: Material;
  let identityTls: Service;
  let identityPlain: Service;
  let destinationTls: Service;
  let destinationPlain: Service;
  let proxy: ProxyProcess;
  let evil: Leaf;
  let injector: Webhook;
  let viz: { proc: Proc; address: string };

  beforeAll(async () => {
    const dir = tempDir("slow-loris");
    material = await createMaterial(dir);
    evil = await material.leaf(identityOf("evil"));
    const registryFile = path.join(dir, "registry.yaml");
    writeFileSync(registryFile, "services: []\n");
    const app = http.createServer((_req, res) => res.end("app\n"));
    servers.push(app);
    await new Promise<void>((resolve) => app.listen(0, "127.0.2.2", resolve));
    [identityTls, identityPlain, destinationTls, destinationPlain] = await Promise.all([
      startIdentity(material, { name: "identity-tls" }),
      startIdentity(material, { name: "identity-plaintext", plaintext: true }),
      startDestination(material, { name: "destination-tls", registryFile, tls: true }),
      startDestination(material, { name: "destination-plaintext", registryFile }),
    ]);
    injector = await startInjector(dir, "injector");
    // meshtls viz reads one proxy admin; none answers there, which it shows as an error (it still serves).
    const vizProc = startNode("viz", bins.cli, ["viz", "--proxy-admin", "127.0.2.9:9", "--listen", "127.0.2.3:0", "--interval", "1s"]);
    const vizAddress = await poll(() => /"msg":"listening".*?"address":"([^"]+)"/.exec(vizProc.stderr())?.[1], 30_000, 100);
    if (vizAddress === undefined) throw new Error(`meshtls viz did not start: ${vizProc.stderr()}`);
    viz = { proc: vizProc, address: vizAddress };
    proxy = await startProxy(material, {
      name: "proxy",
      sa: "b",
      ip: "127.0.2.2",
      workloadPort: (app.address() as net.AddressInfo).port,
      identity: identityTls,
      destination: destinationPlain,
      extra: ["--tap-addr", `127.0.2.2:${await freePort("127.0.2.2")}`, "--tap-allow", identityOf("ops")],
    });
  });
  afterAll(async () => {
    for (const server of servers) server.close();
    await stopAll();
  });

  const live = (admin: () => string, path = "/live") => async (): Promise<boolean> => (await httpGet(admin(), path))?.status === 200;
  const webhookServes = (): Promise<boolean> => reviewWorks(injector);
  const cases: [string, string, () => Proc, () => Promise<boolean>, () => Promise<Outcome>][] = [
    ["identity admin", "request head trickled", () => identityTls.proc, live(() => identityTls.admin), () => trickle(identityTls.admin, endlessHead("GET /metrics HTTP/1.1\r\nHost: x\r\n"))],
    ["identity gRPC TLS", "ClientHello trickled", () => identityTls.proc, live(() => identityTls.admin), () => trickle(identityTls.grpc, clientHello(identityTls.serverName, ["h2"]))],
    ["identity gRPC TLS", "HTTP/2 preface trickled after the handshake", () => identityTls.proc, live(() => identityTls.admin), () =>
      trickle(identityTls.grpc, endlessH2(), { ca: material.caPem, servername: identityTls.serverName, ALPNProtocols: ["h2"] })],
    ["identity gRPC plaintext", "HTTP/2 preface trickled", () => identityPlain.proc, live(() => identityPlain.admin), () => trickle(identityPlain.grpc, endlessH2())],
    ["destination admin", "request head trickled", () => destinationPlain.proc, live(() => destinationPlain.admin), () => trickle(destinationPlain.admin, endlessHead("GET /metrics HTTP/1.1\r\nHost: x\r\n"))],
    ["destination gRPC mTLS", "ClientHello trickled", () => destinationTls.proc, live(() => destinationTls.admin), () => trickle(destinationTls.grpc, clientHello(destinationTls.serverName, ["h2"]))],
    ["destination gRPC mTLS", "HTTP/2 preface trickled after the handshake", () => destinationTls.proc, live(() => destinationTls.admin), () =>
      trickle(destinationTls.grpc, endlessH2(), { ca: material.caPem, servername: destinationTls.serverName, ALPNProtocols: ["h2"], key: evil.keyPem, cert: evil.chainPem })],
    ["destination gRPC plaintext", "HTTP/2 preface trickled", () => destinationPlain.proc, live(() => destinationPlain.admin), () => trickle(destinationPlain.grpc, endlessH2())],
    ["proxy inbound", "ClientHello trickled", () => proxy.proc, live(() => proxy.admin), () => trickle(proxy.inbound, clientHello(proxy.identity, [TRANSPORT_ALPN]))],
    ["proxy inbound (mesh mTLS)", "transport header trickled after the handshake", () => proxy.proc, live(() => proxy.admin), () =>
      trickle(proxy.inbound, transportHeader(Buffer.alloc(3000, 0x08)), { ca: material.caPem, servername: proxy.identity, ALPNProtocols: [TRANSPORT_ALPN], key: evil.keyPem, cert: evil.chainPem })],
    ["proxy outbound", "CONNECT head trickled", () => proxy.proc, live(() => proxy.admin), () => trickle(proxy.outbound, endlessHead("CONNECT c.default.svc.cluster.local:80 HTTP/1.1\r\n"))],
    ["proxy admin", "request head trickled", () => proxy.proc, live(() => proxy.admin), () => trickle(proxy.admin, endlessHead("GET /metrics HTTP/1.1\r\nHost: x\r\n"))],
    ["proxy tap (--tap-addr)", "ClientHello trickled (before the handshake)", () => proxy.proc, live(() => proxy.admin), () => trickle(proxy.tap ?? "", clientHello(proxy.identity, ["http/1.1"]))],
    ["proxy tap (--tap-addr)", "request head trickled after the mutual TLS handshake", () => proxy.proc, live(() => proxy.admin), () =>
      trickle(proxy.tap ?? "", endlessHead("GET /tap HTTP/1.1\r\nHost: tap\r\n"), { ca: material.caPem, servername: proxy.identity, ALPNProtocols: ["http/1.1"], key: evil.keyPem, cert: evil.chainPem })],
    ["destination policy API mTLS", "ClientHello trickled", () => destinationTls.proc, live(() => destinationTls.admin), () => trickle(destinationTls.policy ?? "", clientHello(destinationTls.serverName, ["h2"]))],
    ["destination policy API mTLS", "HTTP/2 preface trickled after the handshake", () => destinationTls.proc, live(() => destinationTls.admin), () =>
      trickle(destinationTls.policy ?? "", endlessH2(), { ca: material.caPem, servername: destinationTls.serverName, ALPNProtocols: ["h2"], key: evil.keyPem, cert: evil.chainPem })],
    ["injector webhook HTTPS", "ClientHello trickled", () => injector.proc, webhookServes, () => trickle(injector.address, clientHello("localhost", ["http/1.1"]))],
    ["injector webhook HTTPS", "request head trickled after the handshake", () => injector.proc, webhookServes, () =>
      trickle(injector.address, endlessHead("POST / HTTP/1.1\r\nHost: localhost\r\n"), { ca: injector.caPem, servername: "localhost" })],
    ["injector webhook HTTPS", "review body trickled (head complete, Content-Length 1 MiB)", () => injector.proc, webhookServes, () =>
      trickle(injector.address, Buffer.from(`POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{"a":"${"x".repeat(200)}`, "latin1"), { ca: injector.caPem, servername: "localhost" })],
    ["meshtls viz", "request head trickled", () => viz.proc, live(() => viz.address, "/api/edges"), () => trickle(viz.address, endlessHead("GET /api/events HTTP/1.1\r\nHost: x\r\n"))],
  ];
  for (const [listener, name, proc, serving, run] of cases) {
    it.concurrent(`${listener}: ${name}`, async () => {
      const target = {
        get proc() {
          return proc();
        },
        serving,
      };
      expectHolds(await attack(target, listener, `slow-loris: ${name}`, `closed by the server within ${SLOW_LORIS_BOUND_MS / 1000} s`, run));
    });
  }
});
