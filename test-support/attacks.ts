import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";

// The hostile-client helpers of the services' process tests (apps/identity and apps/destination
// test/hostile-input.test.ts): raw connections, trickled bytes, idle connections, the process's RSS.

/** Request lines an admin server must answer 400 (or close) without throwing. */
export const MALFORMED_REQUEST_LINES = ["GET //[ HTTP/1.1", "GET http://[ HTTP/1.1", "GET http://admin/ready HTTP/1.1", "GET * HTTP/1.1", "\u0000\u0001junk"];

/** Writes `bytes` on a new connection; resolves with the first line the server answered ("" if none) once it closed or after 3 s. */
export function rawAdmin(port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.end(bytes));
    let text = "";
    const timer = setTimeout(() => socket.destroy(), 3000);
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(text.split("\r\n")[0] ?? "");
    });
  });
}

/** Resolves with the milliseconds until the server closed `socket`. */
export function closedAfter(socket: net.Socket): Promise<number> {
  const started = Date.now();
  socket.on("data", () => undefined);
  socket.on("error", () => undefined);
  return new Promise((resolve) => socket.once("close", () => resolve(Date.now() - started)));
}

/** Writes `bytes` one at a time, every 300 ms, once `socket` is connected (TLS: after its handshake). */
export function trickle(socket: net.Socket, bytes: Buffer, event: "connect" | "secureConnect"): void {
  let sent = 0;
  socket.once(event, () => {
    const timer = setInterval(() => (socket.destroyed ? clearInterval(timer) : socket.write(bytes.subarray(sent % bytes.length, (sent++ % bytes.length) + 1))), 300);
  });
}

/** Opens `count` idle connections to `port` and resolves once each is connected or closed; with those the server closed meanwhile. */
export async function idleConnections(port: number, count: number): Promise<{ sockets: net.Socket[]; closed: () => number }> {
  let closed = 0;
  const sockets = await Promise.all(
    Array.from({ length: count }, () =>
      new Promise<net.Socket>((resolve) => {
        const socket = net.connect(port, "127.0.0.1", () => resolve(socket));
        socket.on("error", () => resolve(socket));
        socket.once("close", () => closed++);
      }),
    ),
  );
  await new Promise((resolve) => setTimeout(resolve, 500));
  return { sockets, closed: () => closed };
}

/** The resident set size of a process on this (Linux) host, in KiB. */
export function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
}

/** The HTTP/2 client connection preface. */
export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** The start of a TLS handshake record (its header and 512 bytes of a ClientHello), to send a byte at a time. */
const TLS_RECORD = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, ...Buffer.alloc(512, 1)]);

/**
 * Connections to a gRPC port that never get as far as a request: one silent;
 * one trickling (a byte every 300 ms) the HTTP/2 preface, or with `tls` a TLS
 * record; and with `tls`, one that completes the handshake (those options)
 * and then trickles the preface. Resolves with the milliseconds until the
 * server closed each.
 */
export function stalledHandshakes(host: string, port: number, options: { tls?: tls.ConnectionOptions } = {}): Promise<number[]> {
  const silent = net.connect(port, host);
  const trickled = net.connect(port, host);
  trickle(trickled, options.tls === undefined ? H2_PREFACE : TLS_RECORD, "connect");
  const sockets = [silent, trickled];
  if (options.tls !== undefined) {
    const afterHandshake = tls.connect({ ...options.tls, host, port, ALPNProtocols: ["h2"] });
    trickle(afterHandshake, H2_PREFACE, "secureConnect");
    sockets.push(afterHandshake);
  }
  return Promise.all(sockets.map(closedAfter));
}
