import net from "node:net";
import { formatHostPort } from "../address.js";
import type { ProxyError } from "../errors.js";
import { forwardStreams } from "../forward.js";
import { detectHttp } from "../http/detect-http.js";
import type { OutboundHttp } from "../http/outbound-http.js";
import type { OriginalDestinationLookup } from "../inbound/accept.js";
import type { Logger } from "../logger.js";
import type { ProxyMetrics } from "../metrics.js";
import type { ConnectOutbound } from "./connect.js";

/** Options of {@link createTransparentServer}. */
export interface CreateTransparentServerOptions {
  /** Where each redirected connection was going (SO_ORIGINAL_DST through `@meshtls/orig-dst`). */
  originalDestination: OriginalDestinationLookup;
  connect: ConnectOutbound;
  /** The HTTP layer detected HTTP goes through. */
  http: OutboundHttp;
  /** Whether the authority's traffic is opaque (every endpoint has the `opaque` hint): no detection. */
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
    const authority = formatHostPort(dst.address, dst.port);
    options.track(client, authority);
    const opaque = (): void => {
      if (!client.destroyed) forwardOpaque(client, authority);
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
  const forwardOpaque = (client: net.Socket, authority: string): void => {
    options.connect({ authority, listener: "transparent", client: { address: client.remoteAddress ?? "", port: client.remotePort ?? 0 } }).then(
      (upstream) => {
        if (client.destroyed) upstream.socket.destroy();
        else forwardStreams(client, upstream.socket, { idleTimeoutMs: options.idleTimeoutMs });
      },
      (error: unknown) => {
        logger.warn({ authority, code: (error as ProxyError).code, err: (error as Error).message }, "transparent outbound connection refused");
        client.destroy();
      },
    );
  };
  server.maxConnections = options.maxConnections;
  server.on("drop", () => metrics.recordRefused("transparent", "max_connections"));
  return server;
}
