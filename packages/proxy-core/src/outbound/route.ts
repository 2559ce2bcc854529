import net from "node:net";
import type { ProxyError } from "../errors.js";
import { forwardStreams } from "../forward.js";
import type { Logger } from "../logger.js";
import type { ProxyMetrics } from "../metrics.js";
import type { ConnectOutbound } from "./connect.js";
import { detectHttp } from "../http/detect-http.js";
import type { OutboundHttp } from "../http/outbound-http.js";

/** Options of {@link createRouteServer}. */
export interface CreateRouteServerOptions {
  /** The normalized authority every connection goes to. */
  authority: string;
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
 * A fixed route's listener: every connection to one authority. HTTP/1 and
 * HTTP/2 (detected within `detectTimeoutMs`) go through the HTTP layer, per
 * request; anything else, and every connection of an opaque authority,
 * through the connect layer as bytes.
 */
export function createRouteServer(options: CreateRouteServerOptions): net.Server {
  const { authority, logger } = options;
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
    options.track(client, authority);
    client.on("error", () => undefined);
    const opaque = (): void => {
      if (!client.destroyed) forwardOpaque(client);
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
  });
  const forwardOpaque = (client: net.Socket): void => {
    options.connect({ authority, listener: "route", client: { address: client.remoteAddress ?? "", port: client.remotePort ?? 0 } }).then(
      (upstream) => {
        if (client.destroyed) upstream.socket.destroy();
        else forwardStreams(client, upstream.socket, { idleTimeoutMs: options.idleTimeoutMs });
      },
      (error: unknown) => {
        logger.warn({ authority, code: (error as ProxyError).code, err: (error as Error).message }, "route connection refused");
        client.destroy();
      },
    );
  };
  server.maxConnections = options.maxConnections;
  server.on("drop", () => options.metrics.recordRefused("route", "max_connections"));
  return server;
}
