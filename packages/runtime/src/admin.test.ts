import net from "node:net";
import type { AddressInfo } from "node:net";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { createAdminServer, requestPath } from "./index.ts";
import type { AdminRoute, AdminServerLimits } from "./index.ts";

/** Writes `bytes` on a new connection and resolves with everything the server sent until it closed (or `waitMs`). */
function raw(port: number, bytes: string | Buffer, waitMs = 5000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(bytes));
    let text = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text, closed: false });
    }, waitMs);
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ text, closed: true });
    });
  });
}

describe("admin server under malformed and hostile clients", () => {
  const servers: ReturnType<typeof createAdminServer>[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
  async function start(options: { ready?: () => { ok: boolean; reason?: string }; limits?: AdminServerLimits; registry?: Registry; routes?: Record<string, AdminRoute> } = {}) {
    const server = createAdminServer({
      registry: options.registry ?? new Registry(),
      ready: options.ready ?? (() => ({ ok: true })),
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.routes ? { routes: options.routes } : {}),
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  }

  it("answers 400 to request targets that are not a path, and keeps serving", async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on("uncaughtException", onUncaught);
    try {
      const port = await start();
      for (const target of ["//[", "http://[", "http://admin/ready", "*", "//x/ready", "%", "/ready?x=[", "/live#["]) {
        const { text } = await raw(port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        const statusLine = text.split("\r\n")[0];
        if (target.startsWith("/ready") || target.startsWith("/live")) expect(statusLine, target).toBe("HTTP/1.1 200 OK");
        else expect(statusLine, target).toMatch(/^HTTP\/1\.1 400 /);
      }
      // Binary junk and half a request line: node's parser refuses them (400) or the timeout closes them.
      expect((await raw(port, Buffer.from([0, 1, 2, 255, 13, 10, 13, 10]))).text).toMatch(/^HTTP\/1\.1 400 /);
      expect((await fetch(`http://127.0.0.1:${port}/live`)).status).toBe(200);
      expect(uncaught).toEqual([]);
    } finally {
      process.off("uncaughtException", onUncaught);
    }
  });

  it("answers 500 when ready() or the registry throws", async () => {
    const registry = new Registry();
    registry.metrics = () => {
      throw new Error("boom");
    };
    const port = await start({ ready: () => { throw new Error("no state"); }, registry });
    const ready = await fetch(`http://127.0.0.1:${port}/ready`);
    expect([ready.status, await ready.text()]).toEqual([500, "admin request failed: Error: no state\n"]);
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect([metrics.status, await metrics.text()]).toEqual([500, "metrics failed: Error: boom\n"]);
    expect((await fetch(`http://127.0.0.1:${port}/live`)).status).toBe(200);
  });

  it("answers 431 to a request head over maxHeaderBytes", async () => {
    const port = await start({ limits: { maxHeaderBytes: 4096 } });
    const { text } = await raw(port, `GET /live HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(100 * 1024)}\r\n\r\n`);
    expect(text.split("\r\n")[0]).toMatch(/^HTTP\/1\.1 431 /);
  });

  it("closes a client that trickles its request head (slow loris) after headersTimeoutMs", async () => {
    const port = await start({ limits: { headersTimeoutMs: 500, requestTimeoutMs: 1000 } });
    const started = Date.now();
    const closed = await new Promise<number>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => socket.write("GET /live HTTP/1.1\r\n"));
      const trickle = setInterval(() => socket.write("X: y\r\n"), 100);
      socket.on("error", () => undefined);
      socket.on("close", () => {
        clearInterval(trickle);
        resolve(Date.now() - started);
      });
    });
    // Generous bounds: the timeout is checked every 500 ms, and the machine is loaded.
    expect(closed).toBeGreaterThanOrEqual(400);
    expect(closed).toBeLessThan(5000);
  });

  it("holds at most maxConnections connections and counts those it closes", async () => {
    const registry = new Registry();
    const port = await start({ limits: { maxConnections: 3 }, registry });
    const sockets = await Promise.all(
      Array.from({ length: 3 }, () => new Promise<net.Socket>((resolve) => { const s = net.connect(port, "127.0.0.1", () => resolve(s)); s.on("error", () => undefined); })),
    );
    try {
      // Wait until the server counted all three, then a fourth is closed at once without an answer.
      await new Promise((r) => setTimeout(r, 200));
      const fourth = await raw(port, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n", 3000);
      expect(fourth).toEqual({ text: "", closed: true });
    } finally {
      for (const s of sockets) s.destroy();
    }
    await new Promise((r) => setTimeout(r, 200));
    expect((await fetch(`http://127.0.0.1:${port}/live`)).status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toContain('tcp_connections_refused_total{listener="admin",reason="max_connections"} 1\n');
  });

  it("shares the refused counter between admin servers on one registry", async () => {
    const registry = new Registry();
    await start({ registry });
    await start({ registry });
    expect(registry.getMetricsAsArray().filter((m) => m.name === "tcp_connections_refused_total")).toHaveLength(1);
  });

  it("serves a binary's own routes beside the built-in ones, which they cannot replace", async () => {
    const port = await start({
      ready: () => ({ ok: false, reason: "no certificate yet" }),
      routes: {
        "/shutdown": (req, res) => void res.writeHead(req.method === "POST" ? 202 : 405).end(),
        "/boom": () => {
          throw new Error("route failed");
        },
        "/ready": (_req, res) => void res.writeHead(200).end("replaced"),
      },
    });
    expect((await fetch(`http://127.0.0.1:${port}/shutdown`, { method: "POST" })).status).toBe(202);
    expect((await fetch(`http://127.0.0.1:${port}/shutdown`)).status).toBe(405);
    const boom = await fetch(`http://127.0.0.1:${port}/boom`);
    expect([boom.status, await boom.text()]).toEqual([500, "admin request failed: Error: route failed\n"]);
    // The readiness contract stays the core's: 503 with the reason.
    const ready = await fetch(`http://127.0.0.1:${port}/ready`);
    expect([ready.status, await ready.text()]).toEqual([503, "not ready: no certificate yet\n"]);
    // An unknown path is 404 whatever the method, naming every path served.
    const missing = await fetch(`http://127.0.0.1:${port}/nothing`, { method: "POST" });
    expect([missing.status, await missing.text()]).toEqual([404, "not found; try /metrics, /live, /ready, /shutdown or /boom\n"]);
    expect((await fetch(`http://127.0.0.1:${port}/toString`)).status).toBe(404);
  });

  it("reads the path of origin-form targets only", () => {
    expect(requestPath("/ready")).toBe("/ready");
    expect(requestPath("/metrics?name[]=x")).toBe("/metrics");
    expect(requestPath("/live#x")).toBe("/live");
    for (const bad of [undefined, "", "*", "//[", "http://[", "https://h/ready", "ready"]) expect(requestPath(bad), String(bad)).toBeUndefined();
  });
});
