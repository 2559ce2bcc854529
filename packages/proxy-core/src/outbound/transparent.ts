import net from "node:net";
import { formatHostPort } from "../address.js";
import type { OriginalDestinationLookup } from "../inbound/accept.js";
import type { OutboundConnectionOptions } from "./serve-connection.js";
import { serveOutboundConnection } from "./serve-connection.js";

/** Options of {@link createTransparentServer}. */
export interface CreateTransparentServerOptions extends OutboundConnectionOptions {
  /** Where each redirected connection was going (SO_ORIGINAL_DST through `@meshtls/orig-dst`). */
  originalDestination: OriginalDestinationLookup;
  /** Takes a redirected connection the proxy answers itself (the redirect check's probe): true when it took it. Default none. */
  intercept?: TransparentIntercept;
}

/** Sees each redirected connection before it is forwarded; returns true when it took the connection (never forwarded). */
export type TransparentIntercept = (client: net.Socket, originalDestination: { address: string; port: number }) => boolean;

/**
 * The transparent outbound listener: the application's connections, redirected
 * here by `meshtls init`'s rules, each to the `ip:port` it was dialling. That
 * authority goes through discovery like a route's: a meshed endpoint gets mTLS
 * with its identity, an address outside the mesh is reached in plaintext and
 * counted with its no-TLS reason. A connection nothing redirected has no
 * destination (it was made to this listener itself): it is closed and counted
 * as `no_original_destination`, never forwarded (a loop).
 */
export function createTransparentServer(options: CreateTransparentServerOptions): net.Server {
  const { logger, metrics } = options;
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
    client.on("error", () => undefined);
    let dst: ReturnType<OriginalDestinationLookup>;
    try {
      dst = options.originalDestination(client);
    } catch (error) {
      logger.warn({ code: (error as { code?: string }).code, err: (error as Error).message }, "transparent connection without an original destination");
      dst = undefined;
    }
    if (dst === undefined || !dst.redirected) {
      const local = formatHostPort(client.localAddress ?? "", client.localPort ?? 0);
      metrics.recordError("outbound", "no_original_destination", local);
      logger.warn({ client: client.remoteAddress, local }, "transparent outbound connection refused: it was not redirected (no original destination)");
      client.destroy();
      return;
    }
    if (options.intercept?.(client, dst) === true) return;
    const authority = formatHostPort(dst.address, dst.port);
    options.track(client, authority);
    serveOutboundConnection(client, authority, "transparent", options);
  });
  server.maxConnections = options.maxConnections;
  server.on("drop", () => metrics.recordRefused("transparent", "max_connections"));
  return server;
}
