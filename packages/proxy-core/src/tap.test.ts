import http from "node:http";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createAdminServer } from "./admin.js";
import { createProxyMetrics } from "./metrics.js";
import type { ProxyMetrics } from "./metrics.js";
import type { TapEvent } from "./tap.js";

/** A connected loopback socket pair: the server's end and the client's. */
async function socketPair(): Promise<{ server: net.Socket; client: net.Socket; close: () => void }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const { port } = listener.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((resolve) => listener.once("connection", resolve));
  const client = net.connect(port, "127.0.0.1");
  const server = await accepted;
  await new Promise((resolve) => (client.connecting ? client.once("connect", resolve) : resolve(undefined)));
  return { server, client, close: () => listener.close() };
}

/** Opens `/tap` and collects its JSON lines. */
function openTap(port: number): Promise<{ status: number; events: TapEvent[]; res: http.IncomingMessage; req: http.ClientRequest }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/tap", agent: false }, (res) => {
      const events: TapEvent[] = [];
      let partial = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        partial += chunk;
        const lines = partial.split("\n");
        partial = lines.pop() ?? "";
        if (res.statusCode === 200) for (const line of lines) events.push(JSON.parse(line) as TapEvent);
      });
      res.on("error", () => undefined);
      resolve({ status: res.statusCode ?? 0, events, res, req });
    });
    req.on("error", reject);
  });
}

async function until(what: string, probe: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function droppedTotal(metrics: ProxyMetrics): Promise<number> {
  const metric = await metrics.registry.getSingleMetric("tap_events_dropped_total")?.get();
  return metric?.values.reduce((sum, v) => sum + v.value, 0) ?? 0;
}

describe("tap: live events on the admin /tap", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function start(options: { maxSubscribers?: number; maxBufferedEvents?: number; openedByProxy?: () => boolean } = {}): Promise<{ metrics: ProxyMetrics; port: number }> {
    const metrics = createProxyMetrics({ tap: { ...(options.maxSubscribers === undefined ? {} : { maxSubscribers: options.maxSubscribers }), ...(options.maxBufferedEvents === undefined ? {} : { maxBufferedEvents: options.maxBufferedEvents }) } });
    const admin = createAdminServer({ registry: metrics.registry, ready: () => ({ ok: true }), onShutdown: () => undefined, tap: metrics.tap, ...(options.openedByProxy === undefined ? {} : { openedByProxy: options.openedByProxy }) });
    const { port } = await admin.listen({ host: "127.0.0.1", port: 0 });
    cleanups.push(() => admin.close());
    return { metrics, port };
  }

  it("streams a closed connection with its peer address, identity, bytes and duration, a policy decision and a request; nothing is published while nobody taps", async () => {
    const { metrics, port } = await start();
    expect(metrics.tap.hasSubscribers()).toBe(false);
    const tap = await openTap(port);
    expect(tap.status).toBe(200);
    expect(tap.res.headers["content-type"]).toBe("application/x-ndjson");
    await until("subscribed", () => metrics.tap.hasSubscribers());

    const pair = await socketPair();
    cleanups.push(pair.close);
    metrics.trackConnection(pair.server, { direction: "inbound", peer: "src", targetAddr: "127.0.0.1:8080", tls: { tls: "true", peerId: "web.default.serviceaccount.identity.meshtls.cluster.local" } });
    pair.client.write("hello");
    await new Promise((resolve) => pair.server.once("data", resolve));
    pair.server.write("hi back");
    pair.client.end();
    pair.server.end();
    metrics.recordAuthz({ allow: true, server: { group: "", kind: "default", name: "all-unauthenticated" }, authz: { group: "", kind: "default", name: "all-unauthenticated" }, reason: "authenticated" }, "127.0.0.1:8080");
    const record = metrics.recordHttpRequest({ direction: "outbound", authority: "api.default:80", targetAddr: "127.0.1.2:80", tls: { tls: "true", peerId: "api.default.serviceaccount.identity.meshtls.cluster.local" }, method: "GET", path: "/items?token=secret" });
    record({ status: 200 });

    await until("four events", () => tap.events.length >= 4);
    expect(tap.events.find((e) => e.type === "connection" && e.phase === "open")).toMatchObject({ peerAddr: `127.0.0.1:${pair.client.localPort}`, tls: "true", bytesRead: 0 });
    const connection = tap.events.find((e) => e.type === "connection" && e.phase === "close");
    expect(connection).toMatchObject({ direction: "inbound", peer: "src", peerAddr: `127.0.0.1:${pair.client.localPort}`, targetAddr: "127.0.0.1:8080", tls: "true", peerId: "web.default.serviceaccount.identity.meshtls.cluster.local", bytesRead: 5, bytesWritten: 7 });
    expect(tap.events.find((e) => e.type === "authz")).toMatchObject({ proto: "tcp", allow: true, reason: "authenticated", server: { name: "all-unauthenticated" }, authz: { name: "all-unauthenticated" } });
    const request = tap.events.find((e) => e.type === "request");
    expect(request).toMatchObject({ direction: "outbound", method: "GET", authority: "api.default:80", path: "/items", status: 200, classification: "success", tls: "true" });
    expect(JSON.stringify(tap.events)).not.toContain("secret");

    tap.req.destroy();
    await until("unsubscribed", () => !metrics.tap.hasSubscribers());
  });

  it("refuses a subscriber beyond the cap with 429, a request through the proxy with 403, and a POST with 405", async () => {
    const { port } = await start({ maxSubscribers: 1 });
    const first = await openTap(port);
    cleanups.push(() => void first.req.destroy());
    expect(first.status).toBe(200);
    expect((await openTap(port)).status).toBe(429);
    expect((await fetch(`http://127.0.0.1:${port}/tap`, { method: "POST" })).status).toBe(405);
    const remote = await start({ openedByProxy: () => true });
    const refused = await openTap(remote.port);
    expect(refused.status).toBe(403);
  });

  it("a subscriber that stops reading loses events (tap_events_dropped_total) while publishing stays fast; it still gets whole lines when it reads again", async () => {
    const { metrics, port } = await start({ maxBufferedEvents: 100 });
    // A raw client that never reads: the socket buffers fill, then the subscriber's queue.
    const slow = net.connect(port, "127.0.0.1");
    cleanups.push(() => void slow.destroy());
    slow.pause();
    slow.write("GET /tap HTTP/1.1\r\nhost: x\r\n\r\n");
    await until("subscribed", () => metrics.tap.hasSubscribers());

    const events = 20_000;
    const started = performance.now();
    for (let i = 0; i < events; i++) {
      metrics.recordHttpRequest({ direction: "inbound", authority: "api:80", targetAddr: "127.0.0.1:80", tls: { tls: "no_identity", reason: "no_tls_from_remote" }, method: "GET", path: `/${"x".repeat(200)}/${i}` })({ status: 200 });
    }
    const elapsedMs = performance.now() - started;
    const dropped = await droppedTotal(metrics);
    expect(dropped).toBeGreaterThan(events / 2);
    // 20 000 requests recorded with a stalled tap: well under the time of a single slow client's patience.
    expect(elapsedMs).toBeLessThan(5_000);

    let text = "";
    slow.setEncoding("utf8");
    slow.on("data", (chunk: string) => (text += chunk));
    slow.resume();
    await until("the queued events read", () => text.includes(`/${events - 1}`) || (text.match(/"type":"request"/g)?.length ?? 0) >= events - dropped);
    const body = text.slice(text.indexOf("\r\n\r\n") + 4);
    // Chunked framing aside, every event line is whole JSON.
    const lines = body.split("\r\n").filter((l) => l.startsWith("{"));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines.join("").split("\n").filter((l) => l !== "")) expect(() => JSON.parse(line) as unknown).not.toThrow();
  });
});
