import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProxy } from "./proxy.js";
import type { Proxy, ProxyAddresses } from "./proxy.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "./test-mesh.js";

const lo = { host: "127.0.0.1", port: 0 };

/** Writes raw bytes and returns what was read until the server closes (or `timeoutMs`: then "open:" + what was read). */
function exchange(port: number, bytes: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let got = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(`open:${got}`);
    }, timeoutMs);
    socket.on("data", (d: Buffer) => (got += String(d)));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
    socket.write(bytes);
  });
}

function sampleOf(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

describe("outbound HTTP proxy and listeners under hostile input", () => {
  let proxy: Proxy;
  let addresses: ProxyAddresses;
  let app: net.Server;
  const shutdowns: number[] = [];

  beforeAll(async () => {
    const mesh = await createTestMesh();
    const identity = identityOf("a");
    app = net.createServer((s) => s.on("error", () => undefined).pipe(s));
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    proxy = createProxy({
      identity,
      credentials: createStore(await mesh.issue(identity)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      // The route's authority never resolves: its connections stay open while discovery waits.
      resolver: {
        resolve: (authority) =>
          authority === "api.default.svc.cluster.local:80"
            ? { current: () => undefined, ready: () => new Promise(() => undefined), subscribe: () => () => undefined, close: () => undefined }
            : createTableResolver(new Map()).resolve(authority),
      },
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: (app.address() as net.AddressInfo).port }, maxConnections: 2 },
      outbound: { listen: lo, maxConnections: 3, routes: [{ listen: lo, authority: "api.default.svc.cluster.local:80" }] },
      admin: { listen: lo, maxConnections: 5 },
      onShutdown: () => shutdowns.push(1),
    });
    addresses = await proxy.start();
  });
  afterAll(async () => {
    await proxy.stop({ drainMs: 0 });
    app.close();
  });

  it("malformed CONNECT lines and absolute URIs get a 400; the listener keeps serving", async () => {
    const port = addresses.outbound.port;
    for (const line of ["CONNECT [:::: HTTP/1.1", "CONNECT http://[ HTTP/1.1", "CONNECT a:b:c HTTP/1.1", "CONNECT :0 HTTP/1.1", `CONNECT ${"a".repeat(300)}:80 HTTP/1.1`, "GET http://[ HTTP/1.1", "GET http://a b/ HTTP/1.1", "GET ftp://x/ HTTP/1.1", "GET http://x:99999/ HTTP/1.1", "GET http://%00/ HTTP/1.1", "BREW * HTTP/1.1", "\x16\x03\x01\x00\x05hello"]) {
      const answer = await exchange(port, `${line}\r\nhost: x\r\nconnection: close\r\n\r\n`);
      expect(answer, line).toMatch(/^HTTP\/1.1 40[0-9]/);
    }
    expect(proxy.connections()).toBeGreaterThanOrEqual(0);
  });

  it("headers over 16 KiB get a 431 and close", async () => {
    const answer = await exchange(addresses.outbound.port, `GET http://api.default.svc.cluster.local/ HTTP/1.1\r\nhost: x\r\nx-big: ${"a".repeat(17 * 1024)}\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1.1 431/);
  });

  it("CONNECT to the proxy's own admin or outbound listener is refused (403, ERR_TARGET_FORBIDDEN): no loop, no deputy", async () => {
    for (const port of [addresses.admin.port, addresses.outbound.port, addresses.routes[0]?.port ?? 0]) {
      const answer = await exchange(addresses.outbound.port, `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nhost: x\r\n\r\nPOST /shutdown HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n`);
      expect(answer).toMatch(/^HTTP\/1.1 403[^]*l5d-proxy-error: ERR_TARGET_FORBIDDEN/);
    }
    const absolute = await exchange(addresses.outbound.port, `POST http://127.0.0.1:${addresses.admin.port}/shutdown HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
    expect(absolute).toMatch(/^HTTP\/1.1 403/);
    expect(shutdowns).toEqual([]);
    expect(sampleOf(await proxy.metrics.registry.metrics(), `outbound_tcp_errors_total{error="target_forbidden",target_addr="127.0.0.1:${addresses.admin.port}"}`)).toBe(2);
  });

  it("every listener closes connections beyond its cap at once and counts them", async () => {
    const hold = async (port: number, count: number): Promise<net.Socket[]> => {
      const sockets = Array.from({ length: count }, () => net.connect(port, "127.0.0.1").on("error", () => undefined));
      await Promise.all(sockets.map((s) => new Promise((r) => s.once("connect", r))));
      await new Promise((r) => setTimeout(r, 100));
      return sockets;
    };
    const cases = [
      { listener: "inbound", port: addresses.inbound.port, cap: 2 },
      { listener: "outbound", port: addresses.outbound.port, cap: 3 },
      { listener: "route", port: addresses.routes[0]?.port ?? 0, cap: 3 },
      { listener: "admin", port: addresses.admin.port, cap: 5 },
    ];
    for (const { listener, port, cap } of cases) {
      const held = await hold(port, cap);
      const started = Date.now();
      expect(await exchange(port, "GET /live HTTP/1.1\r\nhost: x\r\n\r\n"), listener).toBe("");
      expect(Date.now() - started, listener).toBeLessThan(2000);
      for (const s of held) s.destroy();
      await new Promise((r) => setTimeout(r, 100));
      expect(sampleOf(await proxy.metrics.registry.metrics(), `tcp_connections_refused_total{listener="${listener}",reason="max_connections"}`), listener).toBe(1);
    }
    // Below the cap again: served.
    expect((await fetch(`http://127.0.0.1:${addresses.admin.port}/live`)).status).toBe(200);
  });
});
