// A connect that sent nothing is retried on another endpoint, and the failing
// endpoint is set aside; a security failure never is. Real sockets and real
// mesh TLS on 127.0.0.1: proxies B1 and B2 in front of HTTP apps, a closed port
// that refuses, a TLS server presenting another identity's certificate, and a
// keep-alive server that drops a connection when a second request arrives on it.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createBalancer } from "../balancer.js";
import { createTlsCredentials } from "../credentials.js";
import type { TlsCredentials } from "../credentials.js";
import { ProxyError } from "../errors.js";
import { createProxyMetrics } from "../metrics.js";
import type { ProxyMetrics } from "../metrics.js";
import { createOutbound } from "../outbound.js";
import type { Outbound } from "../outbound.js";
import { createProxy } from "../proxy.js";
import type { Proxy } from "../proxy.js";
import type { Endpoint, EndpointSet } from "../sources.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "../test-mesh.js";
import type { TestMesh } from "../test-mesh.js";

const A = identityOf("a");
const B = identityOf("b");
const C = identityOf("c");
const lo = { host: "127.0.0.1", port: 0 };

interface Answer {
  status: number;
  /** `l5d-proxy-error`, when the proxy made the answer. */
  error: string | undefined;
  text: string;
}

/** One request through an outbound HTTP proxy (absolute URI), on a connection of its own. */
function request(proxyPort: number, url: string, method = "GET"): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: proxyPort, method, path: url, headers: { host: new URL(url).host }, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, error: res.headers["l5d-proxy-error"] as string | undefined, text }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function listening<T extends net.Server>(server: T): Promise<T & { port: number }> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return Object.assign(server, { port: (server.address() as net.AddressInfo).port });
}

/** A port that refuses connections: bound, then closed. */
async function refusingPort(): Promise<number> {
  const server = await listening(net.createServer());
  await new Promise((resolve) => server.close(resolve));
  return server.port;
}

/** A counter's value for one label set in the registry's text. */
async function sample(metrics: ProxyMetrics, series: string): Promise<number> {
  const line = (await metrics.registry.metrics()).split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

const retries = (reason: string): string => `outbound_connect_retries_total{reason="${reason}"}`;
const setAside = (reason: string): string => `outbound_endpoints_set_aside_total{reason="${reason}"}`;

describe("outbound: a connect that sent nothing is retried on another endpoint", () => {
  let mesh: TestMesh;
  const closers: (() => unknown)[] = [];
  const table = new Map<string, EndpointSet>();
  let apps: (http.Server & { port: number })[];
  let bProxies: Proxy[];
  let bPorts: number[];
  let credentials: TlsCredentials;

  /** An outbound stack of A over `table`, its HTTP proxy listening. */
  async function startA(balancer = createBalancer()): Promise<{ outbound: Outbound; metrics: ProxyMetrics; port: number }> {
    const metrics = createProxyMetrics();
    const outbound = createOutbound({ resolver: createTableResolver(table), credentials, metrics, balancer, connectTimeoutMs: 2000 });
    closers.push(() => outbound.close());
    const { port } = await outbound.listenProxy(lo);
    return { outbound, metrics, port };
  }

  const meshed = (port: number, identity = B, extra: Partial<Endpoint> = {}): Endpoint => ({ address: "127.0.0.1", port, weight: 1, identity, labels: {}, ...extra });

  beforeAll(async () => {
    mesh = await createTestMesh();
    credentials = createTlsCredentials({ credentials: createStore(await mesh.issue(A)), trustBundle: createBundle([mesh.anchor.certificate]) });
    closers.push(() => credentials.close());
    apps = await Promise.all(["b1", "b2"].map((name) => listening(http.createServer((_req, res) => res.end(`${name} ok`)))));
    bProxies = await Promise.all(
      apps.map(async (app) =>
        createProxy({
          identity: B,
          credentials: createStore(await mesh.issue(B)),
          trustBundle: createBundle([mesh.anchor.certificate]),
          resolver: createTableResolver(new Map()),
          inbound: { listen: lo, workload: { host: "127.0.0.1", port: app.port } },
          outbound: { listen: lo },
          admin: { listen: lo },
        }),
      ),
    );
    bPorts = (await Promise.all(bProxies.map((p) => p.start()))).map((a) => a.inbound.port);
  });

  afterAll(async () => {
    for (const close of closers) await close();
    await Promise.all(bProxies.map((p) => p.stop({ drainMs: 0 })));
    for (const app of apps) app.close();
  });

  it("three endpoints, one refusing: no request fails, and the refusing one is set aside", async () => {
    const dead = await refusingPort();
    const [b1, b2] = bPorts as [number, number];
    // Mesh HTTP/2 (the `h2` hint), HTTP/1 pools over mesh TLS, and the connect layer (CONNECT, routes) alike.
    table.set("h2.default.svc.cluster.local:80", { exists: true, endpoints: [meshed(b1, B, { protocolHint: "h2" }), meshed(dead, B, { protocolHint: "h2" }), meshed(b2, B, { protocolHint: "h2" })] });
    table.set("h1.default.svc.cluster.local:80", { exists: true, endpoints: [meshed(b1), meshed(dead), meshed(b2)] });
    table.set("tcp.default.svc.cluster.local:80", { exists: true, endpoints: [meshed(b1), meshed(dead), meshed(b2)] });
    const a = await startA();
    const answers: Answer[] = [];
    for (const authority of ["h2", "h1"]) {
      for (let batch = 0; batch < 10; batch++) {
        answers.push(...(await Promise.all(Array.from({ length: 6 }, () => request(a.port, `http://${authority}.default.svc.cluster.local/`)))));
      }
    }
    expect(answers.filter((x) => x.status !== 200)).toEqual([]);
    expect(new Set(answers.map((x) => x.text))).toEqual(new Set(["b1 ok", "b2 ok"]));
    const reached: number[] = [];
    for (let i = 0; i < 12; i++) {
      const connection = await a.outbound.connect({ authority: "tcp.default.svc.cluster.local:80", listener: "route", client: { address: "127.0.0.1", port: 0 } });
      reached.push(connection.endpoint.port);
      connection.socket.destroy();
    }
    expect(reached.every((port) => port !== dead)).toBe(true);
    // The refused endpoint was tried, the requests moved on, and it was set aside rather than tried for a third of
    // the 132 requests and connections (each refused connect sets it aside once, however many requests waited on it).
    const refusedConnects = await sample(a.metrics, setAside("connect_refused"));
    expect(await sample(a.metrics, retries("connect_refused"))).toBeGreaterThanOrEqual(refusedConnects);
    expect(refusedConnects).toBeGreaterThanOrEqual(1);
    expect(refusedConnects).toBeLessThanOrEqual(6);
  });

  it("every endpoint refusing: a clean 502 ERR_CONNECT_FAILED after three attempts", async () => {
    const dead = await Promise.all([refusingPort(), refusingPort(), refusingPort(), refusingPort()]);
    table.set("down.default.svc.cluster.local:80", { exists: true, endpoints: dead.map((port) => meshed(port)) });
    const a = await startA();
    for (let i = 0; i < 3; i++) {
      const before = await sample(a.metrics, retries("connect_refused"));
      const started = performance.now();
      const answer = await request(a.port, "http://down.default.svc.cluster.local/");
      expect(answer).toMatchObject({ status: 502, error: "ERR_CONNECT_FAILED" });
      expect(answer.text).toMatch(/ECONNREFUSED/);
      // Three attempts (two retries), even once every endpoint is set aside: availability fails open.
      expect(await sample(a.metrics, retries("connect_refused"))).toBe(before + 2);
      expect(performance.now() - started).toBeLessThan(2000);
    }
    const before = await sample(a.metrics, retries("connect_refused"));
    await expect(a.outbound.connect({ authority: "down.default.svc.cluster.local:80", listener: "route", client: { address: "127.0.0.1", port: 0 } })).rejects.toMatchObject({ code: "ERR_CONNECT_FAILED" });
    expect(await sample(a.metrics, retries("connect_refused"))).toBe(before + 2);
  });

  it("an identity mismatch is answered with its code, never retried on another endpoint", async () => {
    // A real TLS server with a valid mesh certificate for B, which discovery says is C; a healthy C beside it.
    let received = 0;
    const bCreds = await mesh.issue(B);
    const impostor = await listening(
      tls.createServer({ key: bCreds.privateKeyPem, cert: bCreds.certificateChainPem, minVersion: "TLSv1.3" }, (socket) => {
        socket.on("data", (chunk: Buffer) => (received += chunk.length));
        socket.on("error", () => undefined);
      }),
    );
    impostor.on("tlsClientError", () => undefined);
    closers.push(() => impostor.close());
    const c = await listening(http.createServer((_req, res) => res.end("c ok")));
    closers.push(() => c.close());
    const cProxy = createProxy({
      identity: C,
      credentials: createStore(await mesh.issue(C)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(new Map()),
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: c.port } },
      outbound: { listen: lo },
      admin: { listen: lo },
    });
    const cPort = (await cProxy.start()).inbound.port;
    closers.push(() => cProxy.stop({ drainMs: 0 }));
    table.set("c.default.svc.cluster.local:80", { exists: true, endpoints: [meshed(impostor.port, C), meshed(cPort, C)] });
    table.set("c-tcp.default.svc.cluster.local:80", { exists: true, endpoints: [meshed(impostor.port, C), meshed(cPort, C)] });
    // random() = 0: power of two choices compares the two endpoints, equal so far, and takes the first, the impostor.
    for (const via of ["http", "connect"] as const) {
      const a = await startA(createBalancer({ random: () => 0 }));
      if (via === "http") {
        expect(await request(a.port, "http://c.default.svc.cluster.local/")).toMatchObject({ status: 502, error: "ERR_TLS_IDENTITY_MISMATCH" });
      } else {
        const failure = await a.outbound.connect({ authority: "c-tcp.default.svc.cluster.local:80", listener: "route", client: { address: "127.0.0.1", port: 0 } }).catch((error: unknown) => error);
        expect(failure).toBeInstanceOf(ProxyError);
        expect(failure).toMatchObject({ code: "ERR_TLS_IDENTITY_MISMATCH" });
      }
      const text = await a.metrics.registry.metrics();
      expect(text).toContain(`outbound_tcp_errors_total{error="tls_identity_mismatch",target_addr="127.0.0.1:${impostor.port}"} 1`);
      expect(text).not.toMatch(/^outbound_connect_retries_total\{[^}]*\} [1-9]/m);
      expect(text).not.toMatch(/^outbound_endpoints_set_aside_total\{[^}]*\} [1-9]/m);
      // Counted, and the next request goes to the healthy endpoint (the failure penalizes the impostor's latency estimate).
      if (via === "http") expect(await request(a.port, "http://c.default.svc.cluster.local/")).toMatchObject({ status: 200, text: "c ok" });
    }
    expect(received).toBe(0);
  });

  it("a kept-alive connection closed before any response: an idempotent request without a body is sent again, a POST is not", async () => {
    // Answers the first request of each connection and keeps it alive; drops the connection when a second arrives (a draining peer).
    let dropped = 0;
    const keepAlive = await listening(
      net.createServer((socket) => {
        let requests = 0;
        let buffered = "";
        socket.on("error", () => undefined);
        socket.on("data", (chunk: Buffer) => {
          buffered += String(chunk);
          if (!buffered.includes("\r\n\r\n")) return;
          buffered = "";
          requests += 1;
          if (requests === 1) {
            socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=30\r\n\r\nok");
          } else {
            dropped += 1;
            socket.resetAndDestroy();
          }
        });
      }),
    );
    closers.push(() => keepAlive.close());
    table.set("pooled.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: keepAlive.port, weight: 1, labels: {} }] });
    const a = await startA();
    const url = "http://pooled.default.svc.cluster.local/";
    expect(await request(a.port, url)).toMatchObject({ status: 200, text: "ok" });
    // The pooled connection is reused and dropped: the GET goes again on a new connection (the only endpoint, again).
    expect(await request(a.port, url)).toMatchObject({ status: 200, text: "ok" });
    expect(dropped).toBe(1);
    expect(await sample(a.metrics, retries("stale_connection"))).toBe(1);
    // A POST may have been acted on: it is not sent again.
    const post = await request(a.port, url, "POST");
    expect(dropped).toBe(2);
    expect(post.status).toBe(502);
    expect(await sample(a.metrics, retries("stale_connection"))).toBe(1);
    // A stale connection says nothing against the endpoint: it is not set aside.
    expect(await a.metrics.registry.metrics()).not.toMatch(/^outbound_endpoints_set_aside_total\{[^}]*\} [1-9]/m);
  });

  it("an HTTP/2 stream the peer refused unprocessed (REFUSED_STREAM): a request without a body is sent again, one with a body is not", async () => {
    // Plaintext HTTP/2 (prior knowledge) endpoint refusing every other stream, as a peer past its GOAWAY does.
    let streams = 0;
    const h2c = http2.createServer();
    h2c.on("stream", (stream) => {
      streams += 1;
      stream.on("error", () => undefined);
      if (streams % 2 === 1) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      else {
        stream.resume();
        stream.respond({ ":status": 200 });
        stream.end("h2 ok");
      }
    });
    const server = await listening(h2c);
    closers.push(() => server.close());
    table.set("h2c.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port: server.port, weight: 1, labels: {} }] });
    const a = await startA();
    const route = await a.outbound.listenRoute({ listen: lo, authority: "h2c.default.svc.cluster.local:80" });
    const client = http2.connect(`http://127.0.0.1:${route.port}`);
    closers.push(() => client.close());
    const send = (method: string, body?: string): Promise<{ status: number; text: string }> =>
      new Promise((resolve, reject) => {
        const stream = client.request({ ":method": method, ":path": "/" }, { endStream: body === undefined });
        let status = 0;
        let text = "";
        stream.on("response", (headers) => (status = Number(headers[":status"])));
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => (text += chunk));
        stream.on("end", () => resolve({ status, text }));
        stream.on("error", reject);
        if (body !== undefined) stream.end(body);
      });
    expect(await send("GET")).toEqual({ status: 200, text: "h2 ok" });
    expect(streams).toBe(2);
    expect(await sample(a.metrics, retries("stream_refused"))).toBe(1);
    // The body went into the refused stream: it cannot be sent again.
    const post = await send("POST", "payload");
    expect(streams).toBe(3);
    expect(post.status).toBe(502);
    expect(await sample(a.metrics, retries("stream_refused"))).toBe(1);
  });
});
