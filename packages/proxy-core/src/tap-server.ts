import type http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type tls from "node:tls";
import { pemEncode } from "@meshtls/pki";
import type { HostPort } from "./address.js";
import type { TlsCredentials } from "./credentials.js";
import { certificateNotAfter, peerIdentity } from "./credentials.js";
import { listenOn } from "./listen.js";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import { identityAllowed } from "./policy.js";
import type { TrustBundleSource } from "./sources.js";
import type { TapHub } from "./tap.js";
import { serveTapStream } from "./tap-stream.js";

/** Options of {@link createTapServer}. */
export interface CreateTapServerOptions {
  /** The stream served (the proxy's `metrics.tap`, the one the admin `/tap` serves locally). */
  tap: TapHub;
  /** The proxy's mesh TLS credentials: the server presents its certificate, and follows each rotation. */
  credentials: TlsCredentials;
  /** The proxy's trust anchors: a client certificate must chain to one. */
  trustBundle: TrustBundleSource;
  /**
   * Client identities allowed to tap: exact names, `*.suffix`, or `*` (any
   * verified mesh identity). Default none: every client is refused.
   */
  allow?: readonly string[];
  /** The handshake and the request head must come within this, in ms. Default 10000. */
  handshakeTimeoutMs?: number;
  /** Connections open at once; more are closed at once. Default 16. */
  maxConnections?: number;
  /** Called for each connection closed at once beyond `maxConnections` (the proxy counts it in `tcp_connections_refused_total{listener="tap"}`). */
  onRefused?: () => void;
  logger?: Logger;
}

/** The tap listener: `GET /tap` over mutual TLS. */
export interface TapServer {
  /** @throws ProxyError `ERR_LISTEN_FAILED` */
  listen(address: HostPort): Promise<AddressInfo>;
  close(): Promise<void>;
}

/**
 * Serves the tap stream beyond the local host, to authenticated mesh
 * clients only: TLS 1.3 with the proxy's own certificate, a client
 * certificate required and verified against the proxy's trust anchors by the
 * handshake itself (none, or a foreign one, is a TLS alert), then the
 * client's identity checked against `allow` (403 otherwise) before
 * `GET /tap` streams the admin `/tap`'s events: metadata, never payloads.
 * Before the first certificate, or with an empty trust bundle, every
 * connection is closed at once.
 */
export function createTapServer(options: CreateTapServerOptions): TapServer {
  const logger = options.logger ?? noopLogger;
  const allow = options.allow ?? [];
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
  const { credentials } = options;

  const send = (res: http.ServerResponse, status: number, body: string): void => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body) });
    res.end(body);
  };

  const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const socket = req.socket as tls.TLSSocket;
    const peer = socket.getPeerX509Certificate();
    // The handshake verified the chain; a resumed session skips that, so expiry is checked on every request.
    const expired = peer === undefined ? undefined : credentials.checkExpiry(certificateNotAfter(peer));
    const clientId = peer === undefined || !socket.authorized ? undefined : peerIdentity(peer.raw);
    if (expired !== undefined || clientId === undefined || !identityAllowed(clientId, allow)) {
      logger.warn({ remote: socket.remoteAddress, clientId, err: expired?.message }, "tap refused: client identity not allowed by --tap-allow");
      send(res, 403, `tap is not allowed for ${clientId ?? "a client without a mesh identity"}\n`);
      return;
    }
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/tap") {
      send(res, 404, "not found\n");
      return;
    }
    if (serveTapStream(options.tap, req, res)) logger.info({ remote: socket.remoteAddress, clientId }, "remote tap subscriber connected");
  };

  const server = https.createServer(
    {
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ecdhCurve: credentials.ecdhCurve,
      ALPNProtocols: ["http/1.1"],
      handshakeTimeout: handshakeTimeoutMs,
      // The head's timeout is checked this often (node's default, 30 s, would let a trickled head live 40 s).
      connectionsCheckingInterval: Math.min(5_000, handshakeTimeoutMs),
    },
    (req, res) => {
      try {
        handle(req, res);
      } catch (error) {
        logger.error({ err: (error as Error).message }, "tap request failed");
        res.destroy();
      }
    },
  );
  server.headersTimeout = handshakeTimeoutMs;
  server.requestTimeout = handshakeTimeoutMs;
  server.maxConnections = options.maxConnections ?? 16;
  server.on("drop", () => options.onRefused?.());
  // Fail closed: no certificate (or no anchors) is no connection, not a handshake with the server's empty default.
  server.prependListener("connection", (raw: Socket) => {
    if (credentials.context() === undefined) raw.destroy();
  });
  server.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
    logger.info({ remote: socket.remoteAddress, err: error.message }, "tap connection refused: mutual TLS failed");
  });

  // The server's context follows the credentials: rebuilt after each rotation or change of anchors.
  const load = (): void => {
    const current = credentials.current();
    if (current === undefined) return;
    server.setSecureContext({
      key: current.privateKeyPem,
      cert: current.certificateChainPem,
      ca: options.trustBundle.current().map((der) => pemEncode("CERTIFICATE", der)).join(""),
      ecdhCurve: credentials.ecdhCurve,
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
    });
  };
  load();
  const off = credentials.subscribe(load);

  return {
    listen: (address) => listenOn(server, address, "the tap server", logger),
    close: () =>
      new Promise((resolve) => {
        off();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
