import type http from "node:http";
import type net from "node:net";
import { forwardStreams } from "../forward.js";

/** The request head of an HTTP/1 `Upgrade` request, as it is written to the next hop; `set` replaces or (undefined) removes fields. */
export function upgradeHead(req: http.IncomingMessage, path: string, set: Record<string, string | undefined> = {}): string {
  const lines = [`${req.method ?? "GET"} ${path} HTTP/1.1`];
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? "";
    if (name.toLowerCase() in set || name.toLowerCase() === "proxy-connection") continue;
    lines.push(`${name}: ${raw[i + 1] ?? ""}`);
  }
  for (const [name, value] of Object.entries(set)) if (value !== undefined) lines.push(`${name}: ${value}`);
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/**
 * Joins an upgraded client connection with its upstream once the head went
 * out; `onStatus` gets the status of the upstream's answer (101 when it agreed).
 */
export function pipeUpgrade(client: net.Socket, upstream: net.Socket, head: string, rest: Buffer, options: { idleTimeoutMs: number; onStatus: (status: number | undefined) => void }): void {
  upstream.write(head);
  if (rest.length > 0) upstream.write(rest);
  let seen = false;
  const onData = (chunk: Buffer): void => {
    seen = true;
    const match = /^HTTP\/1\.[01] (\d{3})/.exec(chunk.toString("latin1", 0, 16));
    options.onStatus(match?.[1] === undefined ? undefined : Number(match[1]));
  };
  upstream.once("data", onData);
  upstream.once("close", () => {
    if (!seen) options.onStatus(undefined);
  });
  forwardStreams(client, upstream, { idleTimeoutMs: options.idleTimeoutMs });
}
