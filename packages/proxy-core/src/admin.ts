import type http from "node:http";
import type { AddressInfo } from "node:net";
import { createAdminServer as createAdminCore, isLoopback } from "@meshtls/runtime";
import type { AdminReadiness, AdminRoute } from "@meshtls/runtime";
import type { Registry } from "prom-client";
import { listenOn } from "./listen.js";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import type { TapHub } from "./tap.js";
import { serveTapStream } from "./tap-stream.js";

/** The proxy's identity material as `GET /identity` shows it; all of it is public. */
export interface AdminIdentity {
  identity: string;
  /** notAfter of the certificate in use, or null before the first one. */
  notAfter: Date | null;
  /** PEM of the leaf and intermediates the proxy presents, or null before the first certificate. */
  certificateChainPem: string | null;
  /** PEM of the anchors the proxy verifies peers with. */
  trustAnchorsPem: string;
}

/** Options of {@link createAdminServer}. */
export interface CreateAdminServerOptions {
  /** Served on `/metrics`; the admin's refused connections count in its `tcp_connections_refused_total{listener="admin"}`. */
  registry: Registry;
  /**
   * Whether the proxy can serve mesh TLS, and if not why (the body of the 503
   * `/ready` answers, e.g. no certificate yet or the certificate expired): the
   * runtime admin core's contract, as for every meshtls binary.
   */
  ready: () => AdminReadiness;
  /** Called on a local `POST /shutdown`. */
  onShutdown: () => void;
  /**
   * Called on a local `POST /renew`: resolves once a new certificate is in
   * use. Without it `/renew` answers 404.
   */
  onRenew?: () => Promise<{ notAfter: Date }>;
  /**
   * What `GET /tap` streams (one JSON line per event), to local clients only.
   * Without it `/tap` answers 404.
   */
  tap?: TapHub;
  /** What `GET /identity` shows. Without it `/identity` answers 404. */
  identity?: () => AdminIdentity;
  /**
   * Whether a remote `address:port` is the local end of a connection the
   * proxy itself opened (see `OwnSockets.openedByProxy`): such a request came
   * through the proxy and is not local, whatever its source address.
   * Default: none is.
   */
  openedByProxy?: (address: string | undefined, port: number | undefined) => boolean;
  /** Connections open at once; more are closed at once and counted in `registry`. Default 100. */
  maxConnections?: number;
  logger?: Logger;
}

/** The admin HTTP server: the runtime core's `/metrics`, `/live`, `/ready`, and the proxy's `/identity`, `/tap`, `/shutdown`, `/renew`. */
export interface AdminServer {
  /** @throws ProxyError `ERR_LISTEN_FAILED` */
  listen(options: { host: string; port: number }): Promise<AddressInfo>;
  close(): Promise<void>;
}

/**
 * Creates the proxy's admin server: @meshtls/runtime's admin core (its
 * limits, `/metrics`, `/live`, `/ready`) with the proxy's routes added. It
 * never touches the data path.
 */
export function createAdminServer(options: CreateAdminServerOptions): AdminServer {
  const logger = options.logger ?? noopLogger;
  const openedByProxy = options.openedByProxy ?? (() => false);
  const send = (res: http.ServerResponse, status: number, body: string, type = "text/plain; charset=utf-8"): void => {
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) });
    res.end(body);
  };
  const sendJson = (res: http.ServerResponse, status: number, value: unknown): void => send(res, status, `${JSON.stringify(value)}\n`, "application/json");

  /**
   * State-changing endpoints are for the workload's own host only: a loopback
   * source that is not one of the proxy's own connections (a meshed peer
   * could otherwise reach the admin port through the proxy's inbound leg,
   * which has a loopback source). A header check would not do: a forwarded
   * byte stream can carry any header.
   */
  const local = (req: http.IncomingMessage): boolean => {
    const { remoteAddress, remotePort } = req.socket;
    return isLoopback(remoteAddress) && !openedByProxy(remoteAddress, remotePort);
  };
  /** The checks of a local POST endpoint; false when it has answered. */
  const localPost = (req: http.IncomingMessage, res: http.ServerResponse, what: string): boolean => {
    if (!local(req)) {
      logger.warn({ remote: req.socket.remoteAddress, remotePort: req.socket.remotePort, path: what }, "admin request refused: not from the local host");
      send(res, 403, `${what} is only accepted from the local host\n`);
      return false;
    }
    if (req.method !== "POST") {
      res.setHeader("allow", "POST");
      send(res, 405, "use POST\n");
      return false;
    }
    return true;
  };

  // A route whose option is absent is not added: the core answers 404.
  const routes: Record<string, AdminRoute> = {};
  const { identity, tap, onRenew } = options;
  if (identity !== undefined) {
    routes["/identity"] = (req, res) => {
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.setHeader("allow", "GET, HEAD");
        send(res, 405, "use GET\n");
        return;
      }
      const current = identity();
      if (current.certificateChainPem === null || current.notAfter === null) {
        sendJson(res, 503, { identity: current.identity, error: "no certificate yet", trustAnchorsPem: current.trustAnchorsPem });
        return;
      }
      sendJson(res, 200, { identity: current.identity, notAfter: current.notAfter.toISOString(), certificateChainPem: current.certificateChainPem, trustAnchorsPem: current.trustAnchorsPem });
    };
  }
  if (tap !== undefined) {
    routes["/tap"] = (req, res) => {
      // Metadata of every connection and request: for the workload's own host only, like the POST endpoints.
      if (!local(req)) {
        logger.warn({ remote: req.socket.remoteAddress, remotePort: req.socket.remotePort, path: "/tap" }, "admin request refused: not from the local host");
        send(res, 403, "/tap is only served to the local host\n");
        return;
      }
      if (serveTapStream(tap, req, res)) logger.info({ remote: req.socket.remoteAddress }, "tap subscriber connected");
    };
  }
  routes["/shutdown"] = (req, res) => {
    if (!localPost(req, res, "/shutdown")) return;
    logger.info({ remote: req.socket.remoteAddress }, "shutdown requested on the admin server");
    send(res, 202, "shutting down\n");
    options.onShutdown();
  };
  if (onRenew !== undefined) {
    routes["/renew"] = (req, res) => {
      if (!localPost(req, res, "/renew")) return;
      logger.info({ remote: req.socket.remoteAddress }, "certificate renewal requested on the admin server");
      // Called in a promise chain so that a synchronous throw is a 503 too.
      Promise.resolve()
        .then(onRenew)
        .then(
          ({ notAfter }) => sendJson(res, 200, { notAfter: notAfter.toISOString() }),
          (cause: unknown) => {
            const reason = cause instanceof Error ? cause.message : String(cause);
            logger.warn({ err: reason }, "certificate renewal failed");
            send(res, 503, `renewal failed: ${reason}\n`);
          },
        );
    };
  }

  const server = createAdminCore({
    registry: options.registry,
    ready: options.ready,
    routes,
    limits: { maxConnections: options.maxConnections ?? 100 },
    logger,
  });
  return {
    listen: (address) => listenOn(server, address, "the admin server", logger),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
