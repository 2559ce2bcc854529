import type net from "node:net";
import type { ProxyError } from "../errors.js";
import { createDirectRead, forwardStreams } from "../forward.js";
import { detectHttp } from "../http/detect-http.js";
import type { OutboundHttp } from "../http/outbound-http.js";
import type { Logger } from "../logger.js";
import type { ProxyMetrics } from "../metrics.js";
import type { ConnectOutbound } from "./connect.js";
import type { OutboundTarget } from "./target.js";

/** What an outbound listener that serves connections to one authority each (a route, the transparent listener) needs. */
export interface OutboundConnectionOptions {
  connect: ConnectOutbound;
  /** The HTTP layer detected HTTP goes through. */
  http: OutboundHttp;
  /** Whether the authority's traffic is opaque (no detection): the route says so, or every endpoint has the `opaque` hint. */
  isOpaque: (authority: string) => Promise<boolean>;
  /** Protocol detection gives up (forwarding as bytes) after this long. */
  detectTimeoutMs: number;
  metrics: ProxyMetrics;
  logger: Logger;
  idleTimeoutMs: number;
  maxConnections: number;
  /** Counts an accepted connection (open legs, drain). */
  track: (socket: net.Socket, targetAddr: string) => void;
}

/**
 * Serves one accepted application connection bound for `authority`: an opaque
 * authority's bytes go through the connect layer at once; otherwise HTTP/1 and
 * HTTP/2 (detected within `detectTimeoutMs`) go through the HTTP layer, per
 * request, and anything else through the connect layer as bytes.
 */
export function serveOutboundConnection(client: net.Socket, authority: string, listener: OutboundTarget["listener"], options: OutboundConnectionOptions): void {
  const opaque = (): void => {
    if (!client.destroyed) forwardOpaque(client, authority, listener, options);
  };
  options.isOpaque(authority).then(
    async (isOpaque) => {
      if (isOpaque) return opaque();
      const detection = await detectHttp({ socket: client, timeoutMs: options.detectTimeoutMs });
      if (detection.kind === "closed") client.destroy();
      else if (detection.kind === "opaque") opaque();
      else options.http.serve(client, detection.kind, authority);
    },
    opaque,
  );
}

function forwardOpaque(client: net.Socket, authority: string, listener: OutboundTarget["listener"], options: OutboundConnectionOptions): void {
  const firstBytes = readFirstBytes(client);
  const upstreamRead = createDirectRead();
  options.connect({ authority, listener, client: { address: client.remoteAddress ?? "", port: client.remotePort ?? 0 } }, { firstBytes, onread: upstreamRead.onread }).then(
    (upstream) => {
      if (client.destroyed) upstream.socket.destroy();
      else forwardStreams(client, upstream.socket, { idleTimeoutMs: options.idleTimeoutMs, bRead: upstreamRead });
    },
    (error: unknown) => {
      options.logger.warn({ authority, code: (error as ProxyError).code, err: (error as Error).message }, listener === "transparent" ? "transparent outbound connection refused" : `${listener} connection refused`);
      client.destroy();
    },
  );
}

/**
 * Reads the client's first chunk while the mesh connection is being made (the socket paused after it), so that it
 * leaves with the transport header once connected: one TLS record and one write, not two. The returned function hands
 * it over, or nothing when the client has not spoken yet (a server-speaks-first protocol), and stops the early read:
 * later bytes wait in the socket for `pipe`.
 */
function readFirstBytes(client: net.Socket): () => Buffer | undefined {
  let first: Buffer | undefined;
  const onData = (chunk: Buffer): void => {
    first = chunk;
    client.off("data", onData);
    client.pause();
  };
  client.on("data", onData);
  client.resume();
  return () => {
    client.off("data", onData);
    client.pause();
    const taken = first;
    first = undefined;
    return taken;
  };
}
