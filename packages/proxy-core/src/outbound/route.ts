import net from "node:net";
import type { OutboundConnectionOptions } from "./serve-connection.js";
import { serveOutboundConnection } from "./serve-connection.js";

/** Options of {@link createRouteServer}. */
export interface CreateRouteServerOptions extends OutboundConnectionOptions {
  /** The normalized authority every connection goes to. */
  authority: string;
}

/**
 * A fixed route's listener: every connection to one authority. HTTP/1 and
 * HTTP/2 (detected within `detectTimeoutMs`) go through the HTTP layer, per
 * request; anything else, and every connection of an opaque authority,
 * through the connect layer as bytes (`serveOutboundConnection`).
 */
export function createRouteServer(options: CreateRouteServerOptions): net.Server {
  const { authority } = options;
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
    options.track(client, authority);
    client.on("error", () => undefined);
    serveOutboundConnection(client, authority, "route", options);
  });
  server.maxConnections = options.maxConnections;
  server.on("drop", () => options.metrics.recordRefused("route", "max_connections"));
  return server;
}
