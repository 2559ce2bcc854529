import net from "node:net";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { createAdminServer } from "./admin.js";
import type { AdminServer, CreateAdminServerOptions } from "./admin.js";
import { createTlsCredentials } from "./credentials.js";
import { createInbound } from "./inbound.js";
import type { Inbound } from "./inbound.js";
import { createProxyMetrics } from "./metrics.js";
import { createOwnSockets } from "./own-sockets.js";
import { createStaticPolicySource } from "./static-policy.js";
import { createBundle, createStore } from "./test-mesh.js";

/** Writes raw bytes to a port and returns everything read until the server closes. */
function exchange(port: number, bytes: string | Buffer, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let got = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close after ${timeoutMs} ms; got ${JSON.stringify(got.slice(0, 200))}`));
    }, timeoutMs);
    socket.on("data", (d: Buffer) => (got += String(d)));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
    socket.end(bytes);
  });
}

describe("admin server", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  async function start(extra: Partial<CreateAdminServerOptions> = {}): Promise<{ admin: AdminServer; port: number; shutdowns: number[] }> {
    const shutdowns: number[] = [];
    const admin = createAdminServer({ registry: new Registry(), ready: () => ({ ok: true }), onShutdown: () => shutdowns.push(Date.now()), ...extra });
    const { port } = await admin.listen({ host: "127.0.0.1", port: 0 });
    cleanups.push(() => admin.close());
    return { admin, port, shutdowns };
  }

  it("answers malformed request lines and oversized headers with 400/431 and keeps serving", async () => {
    const { port } = await start();
    expect(await exchange(port, "GET http://[ HTTP/1.1\r\nhost: x\r\n\r\n")).toMatch(/^HTTP\/1.1 (400|404)/);
    expect(await exchange(port, "GARBAGE\r\n\r\n")).toMatch(/^HTTP\/1.1 400/);
    expect(await exchange(port, "GET / HTTP/1.1\r\n\x00\x01\r\n\r\n")).toMatch(/^HTTP\/1.1 400/);
    expect(await exchange(port, `GET /live HTTP/1.1\r\nhost: x\r\nx-big: ${"a".repeat(20 * 1024)}\r\n\r\n`)).toMatch(/^HTTP\/1.1 431/);
    expect(await exchange(port, `GET /${"a".repeat(20 * 1024)} HTTP/1.1\r\nhost: x\r\n\r\n`)).toMatch(/^HTTP\/1.1 (431|404)/);
    const live = await fetch(`http://127.0.0.1:${port}/live`);
    expect(live.status).toBe(200);
  });

  it("GET /identity: the identity, notAfter, the chain presented and the anchors; 503 before a certificate", async () => {
    const state: { held?: { notAfter: Date; certificateChainPem: string } } = {};
    const { port } = await start({
      identity: () => ({ identity: "a.default.serviceaccount.identity.meshtls.cluster.local", notAfter: state.held?.notAfter ?? null, certificateChainPem: state.held?.certificateChainPem ?? null, trustAnchorsPem: "ANCHORS" }),
    });
    const none = await fetch(`http://127.0.0.1:${port}/identity`);
    expect(none.status).toBe(503);
    expect(await none.json()).toEqual({ identity: "a.default.serviceaccount.identity.meshtls.cluster.local", error: "no certificate yet", trustAnchorsPem: "ANCHORS" });
    state.held = { notAfter: new Date("2030-01-02T03:04:05.000Z"), certificateChainPem: "CHAIN" };
    const res = await fetch(`http://127.0.0.1:${port}/identity`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual({ identity: "a.default.serviceaccount.identity.meshtls.cluster.local", notAfter: "2030-01-02T03:04:05.000Z", certificateChainPem: "CHAIN", trustAnchorsPem: "ANCHORS" });
    expect((await fetch(`http://127.0.0.1:${port}/identity`, { method: "POST" })).status).toBe(405);
  });

  it("POST /renew: 404 without onRenew; 405 for GET; 200 with notAfter; 503 with the reason", async () => {
    const without = await start();
    expect((await fetch(`http://127.0.0.1:${without.port}/renew`, { method: "POST" })).status).toBe(404);
    let fail = false;
    const { port } = await start({
      onRenew: async () => {
        if (fail) throw new Error("identity service unreachable");
        return { notAfter: new Date("2031-01-01T00:00:00.000Z") };
      },
    });
    const get = await fetch(`http://127.0.0.1:${port}/renew`);
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
    const ok = await fetch(`http://127.0.0.1:${port}/renew`, { method: "POST" });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ notAfter: "2031-01-01T00:00:00.000Z" });
    fail = true;
    const failed = await fetch(`http://127.0.0.1:${port}/renew`, { method: "POST" });
    expect(failed.status).toBe(503);
    expect(await failed.text()).toBe("renewal failed: identity service unreachable\n");
  });

  it("refuses /shutdown and /renew (403) from a connection the proxy opened, whatever its loopback source", async () => {
    let renewals = 0;
    const opened = new Set<number>();
    const { port, shutdowns } = await start({
      openedByProxy: (_address, remotePort) => remotePort !== undefined && opened.has(remotePort),
      onRenew: async () => {
        renewals += 1;
        return { notAfter: new Date() };
      },
    });
    // A connection the "proxy" opened: its local port is recorded before it sends.
    const socket = net.connect(port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    opened.add(socket.localPort ?? 0);
    const answer = await new Promise<string>((resolve) => {
      let got = "";
      socket.on("data", (d: Buffer) => (got += String(d)));
      socket.on("close", () => resolve(got));
      socket.end("POST /shutdown HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\nPOST /renew HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    });
    expect(answer.match(/HTTP\/1.1 403/g)?.length).toBe(2);
    expect(shutdowns).toEqual([]);
    expect(renewals).toBe(0);
    // The same request from the host itself is accepted.
    expect((await fetch(`http://127.0.0.1:${port}/shutdown`, { method: "POST" })).status).toBe(202);
    expect(shutdowns.length).toBe(1);
  });

  it("closes connections beyond maxConnections at once and counts them in the proxy's tcp_connections_refused_total", async () => {
    // The proxy's metrics registered the counter first: the admin core counts in that one.
    const { registry } = createProxyMetrics();
    const { port } = await start({ maxConnections: 2, registry });
    const held = [net.connect(port, "127.0.0.1"), net.connect(port, "127.0.0.1")];
    await Promise.all(held.map((s) => new Promise((r) => s.once("connect", r))));
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    const extra = await exchange(port, "GET /live HTTP/1.1\r\nhost: x\r\n\r\n");
    expect(extra).toBe("");
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await registry.metrics()).toContain('tcp_connections_refused_total{listener="admin",reason="max_connections"} 1\n');
    for (const s of held) s.destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect((await fetch(`http://127.0.0.1:${port}/live`)).status).toBe(200);
  });
});

describe("admin behind the proxy's own inbound leg (the confused deputy, without the inbound's port checks)", () => {
  let inbound: Inbound | undefined;
  let admin: AdminServer | undefined;
  afterEach(async () => {
    inbound?.destroyAll();
    await inbound?.stopAccepting();
    await admin?.close();
  });

  it("a request forwarded by the inbound to the admin port is refused with 403 and the proxy keeps running", async () => {
    // The inbound does not know the admin listener here, as if its own checks were missing:
    // only the admin's record of proxy-opened connections stands in the way.
    const own = createOwnSockets();
    const shutdowns: number[] = [];
    admin = createAdminServer({ registry: new Registry(), ready: () => ({ ok: true }), onShutdown: () => shutdowns.push(1), openedByProxy: own.openedByProxy });
    const adminAddress = await admin.listen({ host: "127.0.0.1", port: 0 });
    const metrics = createProxyMetrics();
    inbound = createInbound({
      identity: "b.default.serviceaccount.identity.meshtls.cluster.local",
      credentials: createTlsCredentials({ credentials: createStore(), trustBundle: createBundle([]) }),
      policy: createStaticPolicySource(),
      metrics,
      own,
      workload: { host: "127.0.0.1", port: adminAddress.port },
    });
    const inboundAddress = await inbound.listen({ host: "127.0.0.1", port: 0 });
    const answer = await exchange(inboundAddress.port, "POST /shutdown HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    expect(answer).toMatch(/^HTTP\/1.1 403/);
    expect(shutdowns).toEqual([]);
    const live = await exchange(inboundAddress.port, "GET /live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    expect(live).toMatch(/^HTTP\/1.1 200/);
  });
});
