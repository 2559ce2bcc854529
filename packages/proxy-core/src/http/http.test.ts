import { execFile } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";
import { readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { promisify } from "node:util";
import { parseClientHello } from "../detect-tls.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProxy } from "../proxy.js";
import type { Proxy, ProxyAddresses } from "../proxy.js";
import type { EndpointSet } from "../sources.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "../test-mesh.js";
import type { TestMesh } from "../test-mesh.js";

const run = promisify(execFile);
const A = identityOf("a");
const B = identityOf("b");
const lo = { host: "127.0.0.1", port: 0 };
const SVC = "web.default.svc.cluster.local:80";

interface Seen {
  version: string;
  clientId: string | undefined;
  canonical: string | undefined;
  origProto: string | undefined;
}

/** The workload: HTTP/1 and HTTP/2 (prior knowledge) on one port; `/status/N` answers N; it records what it saw. */
async function startApp(name: string): Promise<{ port: number; seen: Seen[]; close: () => void }> {
  const seen: Seen[] = [];
  const h2 = http2.createServer();
  const handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void => {
    seen.push({ version: req.httpVersion, clientId: req.headers["l5d-client-id"] as string | undefined, canonical: req.headers["l5d-dst-canonical"] as string | undefined, origProto: req.headers["l5d-orig-proto"] as string | undefined });
    const status = /^\/status\/(\d{3})/.exec(req.url ?? "")?.[1];
    (res as http.ServerResponse).writeHead(status === undefined ? 200 : Number(status), { "content-type": "text/plain" });
    res.end(`${name} ${req.httpVersion} ${req.url}`);
  };
  h2.on("request", handler);
  const h1 = http.createServer(handler);
  h1.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
    seen.push({ version: "upgrade", clientId: req.headers["l5d-client-id"] as string | undefined, canonical: undefined, origProto: undefined });
    socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n");
    socket.pipe(socket);
  });
  const server = net.createServer((socket) => {
    socket.once("data", (chunk) => {
      socket.pause();
      socket.unshift(chunk);
      // node's http2 reads the handle itself: replayed bytes need a JS stream in between.
      if (chunk.toString("latin1").startsWith("PRI *")) h2.emit("connection", Duplex.from({ readable: socket, writable: socket }));
      else h1.emit("connection", socket);
      socket.resume();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as net.AddressInfo).port, seen, close: () => server.close() };
}

/** The TCP segments of a pcap (Linux `lo`: Ethernet framing), each with its ports, flags and payload. */
function readPcap(file: string): { srcPort: number; dstPort: number; syn: boolean; ack: boolean; payload: Buffer }[] {
  const data = readFileSync(file);
  const out: { srcPort: number; dstPort: number; syn: boolean; ack: boolean; payload: Buffer }[] = [];
  let offset = 24;
  while (offset + 16 <= data.length) {
    const captured = data.readUInt32LE(offset + 8);
    const frame = data.subarray(offset + 16, offset + 16 + captured);
    offset += 16 + captured;
    if (frame.readUInt16BE(12) !== 0x0800) continue;
    const ip = frame.subarray(14);
    if (ip[9] !== 6) continue;
    const tcp = ip.subarray(((ip[0] ?? 0) & 0x0f) * 4, ip.readUInt16BE(2));
    const flags = tcp[13] ?? 0;
    out.push({ srcPort: tcp.readUInt16BE(0), dstPort: tcp.readUInt16BE(2), syn: (flags & 0x02) !== 0, ack: (flags & 0x10) !== 0, payload: tcp.subarray(((tcp[12] ?? 0) >> 4) * 4) });
  }
  return out;
}

const sample = (text: string, name: string, labels: Record<string, string>): number => {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
};

describe("HTTP-aware proxying between two proxies (real TLS, real curl)", () => {
  let mesh: TestMesh;
  let a: Proxy;
  let aAddr: ProxyAddresses;
  let b1: Proxy;
  let b1Addr: ProxyAddresses;
  let b2: Proxy;
  let b2Addr: ProxyAddresses;
  let app1: Awaited<ReturnType<typeof startApp>>;
  let app2: Awaited<ReturnType<typeof startApp>>;
  const table = new Map<string, EndpointSet>();
  let bundle: ReturnType<typeof createBundle>;

  beforeAll(async () => {
    mesh = await createTestMesh();
    bundle = createBundle([mesh.anchor.certificate]);
    app1 = await startApp("b1");
    app2 = await startApp("b2");
    const credsB = createStore(await mesh.issue(B));
    b1 = createProxy({ identity: B, credentials: credsB, trustBundle: bundle, resolver: createTableResolver(table), inbound: { listen: lo, workload: { host: "127.0.0.1", port: app1.port } }, outbound: { listen: lo }, admin: { listen: lo } });
    b1Addr = await b1.start();
    b2 = createProxy({ identity: B, credentials: credsB, trustBundle: bundle, resolver: createTableResolver(table), inbound: { listen: lo, workload: { host: "127.0.0.1", port: app2.port } }, outbound: { listen: lo }, admin: { listen: lo } });
    b2Addr = await b2.start();
    table.set(SVC, { exists: true, endpoints: [{ address: "127.0.0.1", port: b1Addr.inbound.port, weight: 1, identity: B, protocolHint: "h2", labels: {} }] });
    table.set("two.default.svc.cluster.local:80", {
      exists: true,
      endpoints: [
        { address: "127.0.0.1", port: b1Addr.inbound.port, weight: 1, identity: B, protocolHint: "h2", labels: {} },
        { address: "127.0.0.1", port: b2Addr.inbound.port, weight: 1, identity: B, protocolHint: "h2", labels: {} },
      ],
    });
    a = createProxy({
      identity: A,
      credentials: createStore(await mesh.issue(A)),
      trustBundle: bundle,
      resolver: createTableResolver(table),
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: 1 } },
      outbound: { listen: lo, routes: [{ listen: lo, authority: SVC }], detectTimeoutMs: 1000 },
      admin: { listen: lo },
    });
    aAddr = await a.start();
  }, 30_000);

  afterAll(async () => {
    await Promise.all([a.stop({ drainMs: 0 }), b1.stop({ drainMs: 0 }), b2.stop({ drainMs: 0 })]);
    app1.close();
    app2.close();
  });

  it("curl HTTP/1.1 and HTTP/1.0 go as HTTP/2 over one mesh connection and arrive downgraded, with the client's identity", async () => {
    const before = app1.seen.length;
    const statuses = [200, 404, 503, 200, 500];
    for (const [i, status] of statuses.entries()) {
      const version = i % 2 === 0 ? "--http1.1" : "--http1.0";
      const { stdout } = await run("curl", ["-s", version, "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--max-time", "5", "-x", `http://127.0.0.1:${aAddr.outbound.port}`, "-H", "l5d-client-id: spoofed", `http://web.default.svc.cluster.local/status/${status}`]);
      // node answers an HTTP/1.0 request with an HTTP/1.1 status line (RFC 9110 §6.2 allows it), closing after the body.
      expect(stdout).toBe(`${status} 1.1`);
    }
    // And through the route, with keep-alive: three requests on one application connection.
    const { stdout } = await run("curl", ["-s", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code}\\n", `http://127.0.0.1:${aAddr.routes[0]?.port}/status/201`, `http://127.0.0.1:${aAddr.routes[0]?.port}/status/202`, `http://127.0.0.1:${aAddr.routes[0]?.port}/status/502`]);
    expect(stdout.trim().split("\n").map(Number)).toEqual([201, 202, 502]);
    const seen = app1.seen.slice(before);
    // node's HTTP client speaks HTTP/1.1 to the workload whatever the client's 1.x (Linkerd's downgrade keeps 1.0).
    expect(seen.map((s) => s.version)).toEqual(Array.from({ length: 8 }, () => "1.1"));
    expect(new Set(seen.map((s) => s.clientId))).toEqual(new Set([A]));
    expect(new Set(seen.map((s) => s.canonical))).toEqual(new Set([SVC]));
    expect(seen.every((s) => s.origProto === undefined)).toBe(true);
    // One mesh connection (TLS, ALPN h2) carried all of them.
    const aText = await a.metrics.registry.metrics();
    expect(sample(aText, "tcp_open_total", { direction: "outbound", peer: "dst", target_addr: `127.0.0.1:${b1Addr.inbound.port}`, tls: "true" })).toBe(1);
    // Metrics on both sides, status by status, as the client saw them.
    const bText = await b1.metrics.registry.metrics();
    for (const [status, count] of [[200, 2], [404, 1], [503, 1], [500, 1], [201, 1], [202, 1], [502, 1]] as const) {
      const classification = status >= 500 ? "failure" : "success";
      expect(sample(aText, "response_total", { direction: "outbound", status_code: String(status), classification })).toBe(count);
      expect(sample(bText, "response_total", { direction: "inbound", status_code: String(status), classification, client_id: A })).toBe(count);
    }
    expect(sample(aText, "request_total", { direction: "outbound" })).toBe(8);
    expect(sample(bText, "request_total", { direction: "inbound" })).toBe(8);
    expect(sample(bText, "inbound_http_authz_allow_total", {})).toBe(8);
    expect(sample(aText, "response_latency_ms_count", { direction: "outbound" })).toBe(8);
    expect(aText).toMatch(/response_latency_ms_bucket\{[^}]*le="50000"/);
  }, 30_000);

  it("a trust bundle change retires the pooled mesh connection: the next request makes a full handshake, refused once the anchor is gone", async () => {
    const target = { direction: "outbound", peer: "dst", target_addr: `127.0.0.1:${b1Addr.inbound.port}`, tls: "true" };
    const get = async (): Promise<string> =>
      (await run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-x", `http://127.0.0.1:${aAddr.outbound.port}`, "http://web.default.svc.cluster.local/status/200"])).stdout;
    expect(await get()).toBe("200");
    const opened = sample(await a.metrics.registry.metrics(), "tcp_open_total", target);
    expect(await get()).toBe("200");
    expect(sample(await a.metrics.registry.metrics(), "tcp_open_total", target)).toBe(opened);
    // The same anchors again: still a change of inputs, so the pooled connection goes and a new one is made.
    bundle.set([mesh.anchor.certificate]);
    expect(await get()).toBe("200");
    expect(sample(await a.metrics.registry.metrics(), "tcp_open_total", target)).toBe(opened + 1);
    // Without the anchor, no request rides the connection made under it.
    const other = await createTestMesh();
    bundle.set([other.anchor.certificate]);
    try {
      expect(await get()).toBe("502");
    } finally {
      bundle.set([mesh.anchor.certificate]);
    }
    expect(await get()).toBe("200");
  }, 30_000);

  it("a capture between the proxies: one mTLS connection offering only ALPN h2 carries many application connections, no HTTP in clear", async () => {
    const port = b1Addr.inbound.port;
    const file = path.join(os.tmpdir(), `meshtls-h2-${process.pid}-${port}.pcap`);
    // A fresh mesh connection: the earlier one is closed with its proxy's pools.
    table.set("fresh.default.svc.cluster.local:80", { exists: true, endpoints: [{ address: "127.0.0.1", port, weight: 1, identity: B, protocolHint: "h2", labels: {} }] });
    const c = createProxy({ identity: A, credentials: createStore(await mesh.issue(A)), trustBundle: createBundle([mesh.anchor.certificate]), resolver: createTableResolver(table), inbound: { listen: lo, workload: { host: "127.0.0.1", port: 1 } }, outbound: { listen: lo }, admin: { listen: lo } });
    const cAddr = await c.start();
    const tcpdump = spawn("tcpdump", ["-i", "lo", "-U", "--immediate-mode", "-s", "0", "-w", file, `tcp port ${port}`], { stdio: ["ignore", "ignore", "pipe"] });
    await new Promise<void>((resolve) => tcpdump.stderr.on("data", (d: Buffer) => String(d).includes("listening") && resolve()));
    // tcpdump says "listening" a little before its filter sees packets.
    await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < 6; i++) {
      const { stdout } = await run("curl", ["-s", "--max-time", "5", "-x", `http://127.0.0.1:${cAddr.outbound.port}`, `http://fresh.default.svc.cluster.local/app-connection-${i}`]);
      expect(stdout).toBe(`b1 1.1 /app-connection-${i}`);
    }
    await new Promise((r) => setTimeout(r, 300));
    tcpdump.kill("SIGINT");
    await once(tcpdump, "exit");
    await c.stop({ drainMs: 0 });
    const segments = readPcap(file);
    rmSync(file, { force: true });
    const opens = segments.filter((t) => t.syn && !t.ack && t.dstPort === port);
    expect(opens).toHaveLength(1);
    const toInbound = Buffer.concat(segments.filter((t) => t.dstPort === port && t.srcPort === opens[0]?.srcPort).map((t) => t.payload));
    const hello = parseClientHello(toInbound);
    expect(hello).toMatchObject({ kind: "tls", sni: B, alpn: ["h2"] });
    const everything = Buffer.concat(segments.map((t) => t.payload)).toString("latin1");
    expect(everything).not.toContain("app-connection");
    expect(everything).not.toContain("HTTP/1.1");
  }, 30_000);

  it("a plaintext client's l5d-client-id is removed inbound", async () => {
    const before = app1.seen.length;
    const { stdout } = await run("curl", ["-s", "-H", "l5d-client-id: admin.default.serviceaccount.identity.meshtls.cluster.local", `http://127.0.0.1:${b1Addr.inbound.port}/x`]);
    expect(stdout).toBe("b1 1.1 /x");
    expect(app1.seen.slice(before)).toEqual([{ version: "1.1", clientId: undefined, canonical: undefined, origProto: undefined }]);
  });

  it("HTTP/2 with prior knowledge stays HTTP/2 end to end (streams, trailers)", async () => {
    const before = app1.seen.length;
    const session = http2.connect(`http://127.0.0.1:${aAddr.routes[0]?.port}`);
    const get = (path: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const stream = session.request({ ":path": path });
        let body = "";
        stream.setEncoding("utf8");
        stream.on("data", (d: string) => (body += d));
        stream.on("end", () => resolve(body));
        stream.on("error", reject);
      });
    expect(await Promise.all([get("/one"), get("/two"), get("/three")])).toEqual(["b1 2.0 /one", "b1 2.0 /two", "b1 2.0 /three"]);
    session.close();
    expect(app1.seen.slice(before).map((s) => [s.version, s.clientId])).toEqual([["2.0", A], ["2.0", A], ["2.0", A]]);
  });

  it("an Upgrade request is not upgraded to HTTP/2 and still works", async () => {
    const req = http.request({ host: "127.0.0.1", port: aAddr.routes[0]?.port, path: "/ws", headers: { connection: "upgrade", upgrade: "echo" } });
    req.end();
    const [res, socket] = (await once(req, "upgrade")) as [http.IncomingMessage, net.Socket];
    expect(res.statusCode).toBe(101);
    socket.write("ping");
    const [echoed] = (await once(socket, "data")) as [Buffer];
    expect(String(echoed)).toBe("ping");
    socket.destroy();
    expect(app1.seen.at(-1)).toEqual({ version: "upgrade", clientId: A, canonical: undefined, origProto: undefined });
  });

  it("a server-first protocol waits for one detect timeout, not two", async () => {
    const greeter = net.createServer((s) => s.end("220 hello\r\n"));
    await new Promise<void>((r) => greeter.listen(0, "127.0.0.1", r));
    const greeterPort = (greeter.address() as net.AddressInfo).port;
    const c = createProxy({
      identity: B,
      credentials: createStore(await mesh.issue(B)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(table),
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: greeterPort } },
      outbound: { listen: lo },
      admin: { listen: lo },
    });
    const cAddr = await c.start();
    table.set("smtp.default.svc.cluster.local:25", { exists: true, endpoints: [{ address: "127.0.0.1", port: cAddr.inbound.port, weight: 1, identity: B, protocolHint: "h2", labels: {} }] });
    const d = createProxy({
      identity: A,
      credentials: createStore(await mesh.issue(A)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      resolver: createTableResolver(table),
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: 1 } },
      outbound: { listen: lo, routes: [{ listen: lo, authority: "smtp.default.svc.cluster.local:25" }], detectTimeoutMs: 1000 },
      admin: { listen: lo },
    });
    const dAddr = await d.start();
    const started = performance.now();
    const socket = net.connect(dAddr.routes[0]?.port ?? 0, "127.0.0.1");
    const [greeting] = (await once(socket, "data")) as [Buffer];
    const elapsed = performance.now() - started;
    expect(String(greeting)).toBe("220 hello\r\n");
    // The outbound waited its 1 s detect timeout; the inbound (10 s timeout) saw the server speak first.
    expect(elapsed).toBeGreaterThanOrEqual(950);
    expect(elapsed).toBeLessThan(4000);
    socket.destroy();
    await Promise.all([c.stop({ drainMs: 0 }), d.stop({ drainMs: 0 })]);
    greeter.close();
  }, 30_000);

  it("killing one of two endpoints under load: requests move, and failures are counted exactly as the client saw them", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const results: number[] = [];
    let stop = false;
    const worker = async (): Promise<void> => {
      while (!stop) {
        const status = await new Promise<number>((resolve) => {
          const req = http.get({ host: "127.0.0.1", port: aAddr.outbound.port, path: "http://two.default.svc.cluster.local/", agent }, (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
            res.on("error", () => resolve(-1));
          });
          req.on("error", () => resolve(-1));
        });
        results.push(status);
      }
    };
    const beforeText = await a.metrics.registry.metrics();
    const failuresBefore = sample(beforeText, "response_total", { direction: "outbound", authority: "two.default.svc.cluster.local", classification: "failure" });
    const totalBefore = sample(beforeText, "response_total", { direction: "outbound", authority: "two.default.svc.cluster.local" });
    const seen2 = app2.seen.length;
    const workers = Array.from({ length: 8 }, () => worker());
    await new Promise((r) => setTimeout(r, 500));
    expect(app2.seen.length).toBeGreaterThan(seen2);
    await b2.stop({ drainMs: 0 });
    const seen1 = app1.seen.length;
    await new Promise((r) => setTimeout(r, 1000));
    stop = true;
    await Promise.all(workers);
    agent.destroy();
    // After the kill, b1 kept serving.
    expect(app1.seen.length - seen1).toBeGreaterThan(50);
    const failed = results.filter((s) => s !== 200).length;
    const text = await a.metrics.registry.metrics();
    expect(sample(text, "response_total", { direction: "outbound", authority: "two.default.svc.cluster.local", classification: "failure" }) - failuresBefore).toBe(failed);
    expect(sample(text, "response_total", { direction: "outbound", authority: "two.default.svc.cluster.local" }) - totalBefore).toBe(results.length);
    expect(failed).toBeLessThan(results.length / 10);
  }, 30_000);
});
