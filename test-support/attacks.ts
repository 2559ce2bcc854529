import { readFileSync } from "node:fs";
import net from "node:net";

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
