import net from "node:net";
import tls from "node:tls";
import type { TlsCredentials } from "./credentials.js";
import { certificateNotAfter, peerIdentity, SESSION_TICKET_LIFETIME_S } from "./credentials.js";
import { detectTls } from "./detect-tls.js";
import type { Detection } from "./detect-tls.js";
import { ProxyError } from "./errors.js";
import { forwardStreams } from "./forward.js";
import type { HostPort } from "./address.js";
import { formatHostPort } from "./address.js";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import type { CountedSocket, ProxyMetrics } from "./metrics.js";
import { createOwnSockets } from "./own-sockets.js";
import type { OwnSockets } from "./own-sockets.js";
import type { InboundPolicy } from "./policy.js";
import type { TlsState } from "./tls-state.js";
import { readTransportHeader, TRANSPORT_ALPN } from "./transport-header.js";

/** Options of {@link createInbound}. */
export interface CreateInboundOptions {
  /** The local identity: a ClientHello with this SNI is terminated. */
  identity: string;
  credentials: TlsCredentials;
  policy: InboundPolicy;
  metrics: ProxyMetrics;
  /** Where connections without a transport header go (the workload's port). */
  workload: HostPort;
  /** The host a transport header's port is reached on. Default `workload.host`. */
  workloadHost?: string;
  /**
   * The workload's ports a transport header may name, besides `workload.port`
   * (always allowed). Empty or absent: any port that is not one of the
   * proxy's own listeners. The proxy's listener ports are refused either way.
   */
  inboundPorts?: number[];
  /**
   * The proxy's own listeners and opened connections, shared by its parts.
   * Default: a record of this inbound alone.
   */
  own?: OwnSockets;
  /** Connections open at once; more are closed at once and counted. Default 10000. */
  maxConnections?: number;
  logger?: Logger;
  /** TLS detection gives up after this long, failing the connection. Default 10000. */
  detectTimeoutMs?: number;
  /** The mTLS handshake and transport header must complete within this. Default 10000. */
  handshakeTimeoutMs?: number;
  /** Connecting to the workload. Default 3000. */
  connectTimeoutMs?: number;
  /** Idle connections are closed. Default 3600000. */
  idleTimeoutMs?: number;
}

/** The inbound stack: accept → detect TLS → terminate or pass through → transport header → policy → forward. */
export interface Inbound {
  listen(options: { host: string; port: number }): Promise<net.AddressInfo>;
  /** Stops accepting; open connections continue. */
  stopAccepting(): Promise<void>;
  /** Destroys every open connection. */
  destroyAll(): void;
  /** Connections accepted and not yet closed. */
  connections(): number;
}

interface Accepted {
  /** The workload port the connection is for. */
  port: number;
  target: HostPort;
  tls: TlsState;
  clientId?: string;
}

/**
 * Creates the inbound pipeline; the `handle` function below reads top to
 * bottom as the stack linkerd2-proxy's inbound server builds.
 */
export function createInbound(options: CreateInboundOptions): Inbound {
  const logger = options.logger ?? noopLogger;
  const { metrics, policy, credentials } = options;
  const workloadHost = options.workloadHost ?? options.workload.host;
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
  const own = options.own ?? createOwnSockets();
  const declaredPorts = new Set(options.inboundPorts ?? []);
  const sockets = new Set<net.Socket | tls.TLSSocket>();

  // One TLS server object (never listening) terminates every mesh connection;
  // SNICallback hands it the current context, so rotation only affects new
  // handshakes and there is nothing to terminate with before the first cert.
  const pending = new Map<string, (result: { socket: tls.TLSSocket } | { error: Error; socket?: tls.TLSSocket }) => void>();
  const tlsServer = tls.createServer({
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
    maxVersion: "TLSv1.3",
    ALPNProtocols: [TRANSPORT_ALPN],
    handshakeTimeout: handshakeTimeoutMs,
    sessionTimeout: SESSION_TICKET_LIFETIME_S,
    allowHalfOpen: true,
    SNICallback: (servername, callback) => {
      const context = credentials.context();
      if (servername !== options.identity) callback(new ProxyError("ERR_TLS_HANDSHAKE", `SNI ${servername} is not ${options.identity}`), undefined);
      else if (context === undefined) callback(new ProxyError("ERR_NO_CREDENTIALS", "no certificate yet: refusing mesh TLS"), undefined);
      else callback(null, context);
    },
  });
  // Tickets are sealed with this server's keys whatever context SNICallback picks: they follow the credentials.
  credentials.bindServer(tlsServer);
  const keyOf = (s: net.Socket): string => `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`;
  tlsServer.on("secureConnection", (socket: tls.TLSSocket) => pending.get(keyOf(socket))?.({ socket }));
  tlsServer.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => pending.get(keyOf(socket))?.({ error, socket }));

  const terminate = (raw: net.Socket): Promise<tls.TLSSocket> =>
    new Promise((resolve, reject) => {
      const key = keyOf(raw);
      pending.set(key, (result) => {
        pending.delete(key);
        if ("error" in result) {
          result.socket?.destroy();
          reject(new ProxyError("ERR_TLS_HANDSHAKE", `mesh TLS handshake failed: ${result.error.message}`, { cause: result.error }));
        } else {
          resolve(result.socket);
        }
      });
      raw.once("close", () => {
        if (pending.delete(key)) reject(new ProxyError("ERR_TLS_HANDSHAKE", "the client went away during the handshake"));
      });
      tlsServer.emit("connection", raw);
    });

  const fail = (socket: { destroy(): void; remoteAddress?: string | undefined }, error: unknown, errorLabel: string): void => {
    metrics.recordError("inbound", errorLabel);
    const code = error instanceof ProxyError ? error.code : "ERR_CONNECT_FAILED";
    logger.info({ code, err: (error as Error).message, client: socket.remoteAddress }, "inbound connection refused");
    socket.destroy();
  };

  /** The pipeline for one accepted connection. */
  const handle = async (raw: net.Socket): Promise<void> => {
    const defaultPort = options.workload.port;
    const portPolicy = policy.port(defaultPort);

    // Skipped ports are forwarded as they are: no detection, no policy.
    if (portPolicy.skip === true) {
      await forward(raw, raw, { port: defaultPort, target: options.workload, tls: { tls: "no_identity", reason: "port_skipped" } }, false);
      return;
    }

    // Detect TLS, unless the port is opaque (server-speaks-first).
    let detection: Detection = { kind: "plaintext", bytesRead: 0 };
    if (portPolicy.opaque !== true) {
      try {
        detection = await detectTls({ socket: raw, timeoutMs: options.detectTimeoutMs ?? 10_000 });
      } catch (error) {
        const code = error instanceof ProxyError ? error.code : "";
        fail(raw, error, code === "ERR_DETECT_TIMEOUT" ? "tls_detect_timeout" : code === "ERR_DETECT_TOO_LARGE" ? "tls_detect_too_large" : "tls_detect_closed");
        return;
      }
    }

    if (detection.kind === "plaintext") {
      await forward(raw, raw, { port: defaultPort, target: options.workload, tls: { tls: "no_identity", reason: "no_tls_from_remote" } });
      return;
    }
    if (detection.sni !== options.identity) {
      // Someone else's TLS (the application's own): forwarded untouched.
      await forward(raw, raw, { port: defaultPort, target: options.workload, tls: { tls: "opaque", sni: detection.sni ?? "" } });
      return;
    }

    // Ours: terminate mesh TLS 1.3 and learn the client's identity.
    let secure: tls.TLSSocket;
    try {
      secure = await terminate(raw);
    } catch (error) {
      fail(raw, error, "tls_handshake");
      return;
    }
    const peer = secure.getPeerX509Certificate();
    // A resumed session skips certificate checks: neither side's certificate may have expired since.
    const expired = credentials.checkExpiry(certificateNotAfter(peer));
    if (expired !== undefined) {
      fail(secure, expired, expired.code === "ERR_TLS_LOCAL_CERT_EXPIRED" ? "tls_local_cert_expired" : "tls_peer_cert_expired");
      return;
    }
    if (peer !== undefined && !secure.authorized) {
      // A certificate that does not chain to our anchors is refused, never treated as anonymous.
      fail(secure, new ProxyError("ERR_TLS_UNAUTHORIZED", `client certificate refused: ${String(secure.authorizationError)}`), "tls_client_cert_unverified");
      return;
    }
    sockets.add(secure);
    secure.once("close", () => sockets.delete(secure));
    const clientId = peer === undefined ? undefined : peerIdentity(peer.raw);
    const tlsState: TlsState = clientId === undefined ? { tls: "true" } : { tls: "true", peerId: clientId };

    // Opaque transport (direct connection): mTLS with a client identity, then the header names the port.
    if (secure.alpnProtocol === TRANSPORT_ALPN) {
      if (clientId === undefined) {
        fail(secure, new ProxyError("ERR_DIRECT_NOT_AUTHENTICATED", "opaque transport needs a client identity"), "direct_unauthenticated");
        return;
      }
      let port: number;
      try {
        port = (await readTransportHeader({ stream: secure, timeoutMs: handshakeTimeoutMs })).port;
      } catch (error) {
        fail(secure, error, "transport_header");
        return;
      }
      const refusal = headerPortRefusal(port);
      if (refusal !== undefined) {
        fail(secure, new ProxyError("ERR_TARGET_FORBIDDEN", `${refusal.message} (client ${clientId})`), refusal.label);
        return;
      }
      if (policy.port(port).skip === true) {
        fail(secure, new ProxyError("ERR_POLICY_DENIED", `port ${port} is skipped: not reachable through the mesh`), "port_skipped");
        return;
      }
      await forward(secure, raw, { port, target: { host: workloadHost, port }, tls: tlsState, clientId });
      return;
    }
    await forward(secure, raw, { port: defaultPort, target: options.workload, tls: tlsState, ...(clientId === undefined ? {} : { clientId }) });
  };

  /**
   * A transport header may name only the workload's own ports: never one of
   * the proxy's listeners (a meshed client would reach the admin server from
   * a loopback address, or leave through the outbound proxy under our
   * identity), and, when ports are declared, only those.
   */
  const headerPortRefusal = (port: number): { label: string; message: string } | undefined => {
    if (own.isListenerPort(port)) {
      return { label: "transport_header_proxy_port", message: `the transport header names port ${port}, one of the proxy's own listeners` };
    }
    if (declaredPorts.size > 0 && port !== options.workload.port && !declaredPorts.has(port)) {
      return { label: "transport_header_port_forbidden", message: `the transport header names port ${port}, not one of the workload's inbound ports` };
    }
    return undefined;
  };

  /** No loop, policy, then the connection to the workload, then the byte pipe. */
  const forward = async (client: CountedSocket & net.Socket, raw: net.Socket, accepted: Accepted, authorize = true): Promise<void> => {
    if (own.listenerAt(accepted.target) !== undefined) {
      fail(client, new ProxyError("ERR_TARGET_FORBIDDEN", `${formatHostPort(accepted.target.host, accepted.target.port)} is one of the proxy's own listeners: refusing a loop`), "proxy_loop");
      return;
    }
    const targetAddr = formatHostPort(accepted.target.host, accepted.target.port);
    const decision = authorize
      ? policy.authorize({
          port: accepted.port,
          clientAddress: raw.remoteAddress ?? "",
          ...(accepted.clientId === undefined ? {} : { clientId: accepted.clientId }),
        })
      : undefined;
    // The SNI of a pass-through connection is the client's own choice: it
    // becomes a label only once policy let the connection in.
    const legTls: TlsState = accepted.tls.tls === "opaque" && decision?.allow === false ? { tls: "opaque", sni: "" } : accepted.tls;
    metrics.trackConnection(client, { direction: "inbound", peer: "src", targetAddr, tls: legTls });
    if (decision !== undefined) {
      metrics.recordAuthz(decision, targetAddr);
      if (!decision.allow) {
        logger.info({ client: raw.remoteAddress, clientId: accepted.clientId, port: accepted.port, policy: decision.policy, reason: decision.reason }, "inbound connection denied by policy");
        client.destroy();
        return;
      }
      if (decision.wouldDeny !== undefined) {
        logger.warn({ client: raw.remoteAddress, clientId: accepted.clientId, port: accepted.port, wouldDeny: decision.wouldDeny }, "audit: policy would deny this connection");
      }
    }
    let upstream: net.Socket;
    try {
      upstream = await connectWorkload(accepted.target);
    } catch (error) {
      fail(client, error, "workload_connect");
      return;
    }
    metrics.trackConnection(upstream, { direction: "inbound", peer: "dst", targetAddr, tls: { tls: "no_identity", reason: "loopback" } });
    forwardStreams(client, upstream, { idleTimeoutMs: options.idleTimeoutMs ?? 3_600_000 });
  };

  const connectWorkload = (target: HostPort): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const timeoutMs = options.connectTimeoutMs ?? 3000;
      const socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ProxyError("ERR_CONNECT_TIMEOUT", `workload ${target.host}:${target.port} did not accept within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("error", (cause) => {
        clearTimeout(timer);
        reject(new ProxyError("ERR_CONNECT_FAILED", `workload ${target.host}:${target.port}: ${cause.message}`, { cause }));
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        own.trackOpened(socket);
        resolve(socket);
      });
    });

  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (raw) => {
    sockets.add(raw);
    raw.once("close", () => sockets.delete(raw));
    raw.on("error", () => undefined);
    handle(raw).catch((error: unknown) => fail(raw, error, "internal"));
  });
  // Beyond the cap node closes the connection at once, before any byte is read.
  server.maxConnections = options.maxConnections ?? 10_000;
  server.on("drop", () => metrics.recordRefused("inbound", "max_connections"));

  return {
    listen: ({ host, port }) =>
      new Promise((resolve, reject) => {
        const onError = (cause: Error): void => reject(new ProxyError("ERR_LISTEN_FAILED", `inbound cannot listen on ${host}:${port}: ${cause.message}`, { cause }));
        server.once("error", onError);
        server.listen(port, host, () => {
          server.off("error", onError);
          // Later failures to accept (e.g. EMFILE) are logged; the listener keeps serving.
          server.on("error", (cause) => logger.error({ code: "ERR_LISTEN_FAILED", err: cause.message }, "inbound: accept failed"));
          const address = server.address() as net.AddressInfo;
          own.addListener(address, "inbound");
          resolve(address);
        });
      }),
    stopAccepting: async () => {
      // close() stops the listener now; its callback would wait for every connection.
      server.close();
    },
    destroyAll() {
      for (const socket of sockets) socket.destroy();
    },
    connections: () => sockets.size,
  };
}
