import net from "node:net";
import type { ProxyError } from "../errors.js";
import { forwardStreams } from "../forward.js";
import type { Logger } from "../logger.js";
import type { ProxyMetrics } from "../metrics.js";
import type { ConnectOutbound } from "./connect.js";

/** Options of {@link createRouteServer}. */
export interface CreateRouteServerOptions {
  /** The normalized authority every connection goes to. */
  authority: string;
  connect: ConnectOutbound;
  metrics: ProxyMetrics;
  logger: Logger;
  idleTimeoutMs: number;
  maxConnections: number;
  /** Counts an accepted connection (open legs, drain). */
  track: (socket: net.Socket, targetAddr: string) => void;
}

/** A fixed route's listener: every connection to one authority, through the connect layer. */
export function createRouteServer(options: CreateRouteServerOptions): net.Server {
  const { authority, logger } = options;
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
    options.track(client, authority);
    client.on("error", () => undefined);
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
  });
  server.maxConnections = options.maxConnections;
  server.on("drop", () => options.metrics.recordRefused("route", "max_connections"));
  return server;
}
