import type net from "node:net";
import type { HostPort } from "./address.js";
import { formatHostPort } from "./address.js";
import type { TlsCredentials } from "./credentials.js";
import { ProxyError } from "./errors.js";
import { createDirectRead, forwardStreams } from "./forward.js";
import { acceptTarget, createInboundServer } from "./inbound/accept.js";
import type { OriginalDestinationLookup } from "./inbound/accept.js";
import { authorizeTarget, authzPeer } from "./inbound/authorize.js";
import { createIdentityBounds } from "./inbound/bound-identity.js";
import type { IdentityEnd } from "./inbound/bound-identity.js";
import { createConnectWorkload, loopRefusal } from "./inbound/connect-workload.js";
import type { ConnectWorkload } from "./inbound/connect-workload.js";
import { detectLayer } from "./inbound/detect.js";
import { detectProtocolLayer } from "./inbound/detect-protocol.js";
import type { DetectedProtocol } from "./inbound/detect-protocol.js";
import { createInboundHttp } from "./http/inbound-http.js";
import { opaqueTransportLayer } from "./inbound/opaque-transport.js";
import type { InboundTarget, Refusal } from "./inbound/target.js";
import { isRefusal } from "./inbound/target.js";
import { createTerminateTls } from "./inbound/terminate-tls.js";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import type { CountedSocket, ProxyMetrics } from "./metrics.js";
import { createOwnSockets } from "./own-sockets.js";
import type { OwnSockets } from "./own-sockets.js";
import { policyLabel } from "./policy.js";
import type { AuthorizeDecision, ServerPolicy } from "./policy.js";
import type { PolicySource, TrustBundleSource } from "./sources.js";
import type { TlsState } from "./tls-state.js";

/** Options of {@link createInbound}. */
export interface CreateInboundOptions {
  /** The local identity: a ClientHello with this SNI is terminated. */
  identity: string;
  credentials: TlsCredentials;
  /**
   * The trust anchors `credentials` follows: at every change, open mesh
   * connections whose client chain no longer verifies against them are
   * closed. Without it only new handshakes see a change.
   */
  trustBundle?: TrustBundleSource;
  /**
   * Close open mesh connections when the identity they were made with ends:
   * the earlier leaf expiry, or (with `trustBundle`) a bundle change after
   * which the client's leaf no longer chains. Default false: a long-lived
   * stream survives certificate rotation (as in Linkerd), and only new
   * handshakes and resumptions are refused.
   */
  closeAtIdentityEnd?: boolean;
  /** Each workload port's current policy; changes apply to new connections at once and close open ones no longer allowed. */
  policy: PolicySource;
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
  /** Ports forwarded as they are, without detection or policy (`no_tls_reason="port_skipped"`); a transport header naming one is refused. */
  skipPorts?: number[];
  /**
   * The proxy's own listeners and opened connections, shared by its parts.
   * Default: a record of this inbound alone.
   */
  own?: OwnSockets;
  /** Connections open at once; more are closed at once and counted. Default 10000. */
  maxConnections?: number;
  logger?: Logger;
  /** TLS detection gives up after this long, failing the connection, unless the port's policy says otherwise. Default 10000. */
  detectTimeoutMs?: number;
  /** The mTLS handshake and transport header must complete within this. Default 10000. */
  handshakeTimeoutMs?: number;
  /** Connecting to the workload. Default 3000. */
  connectTimeoutMs?: number;
  /** The connect layer. Default: TCP to `target.workload` within `connectTimeoutMs`. */
  connect?: ConnectWorkload;
  /** Idle connections are closed. Default 3600000. */
  idleTimeoutMs?: number;
  /** With no client bytes after this long, protocol detection connects the workload to see whether it speaks first. Default 50. */
  serverFirstProbeMs?: number;
  /** Idle HTTP/1 connections to the workload close after this long. Default 3000 (Linkerd's). */
  http1PoolIdleTimeoutMs?: number;
  /**
   * Transparent mode: reads a redirected connection's original destination;
   * its port becomes the target's workload port (under detection and that
   * port's policy). Connections nothing redirected are handled as today.
   */
  originalDestination?: OriginalDestinationLookup;
}

/** The inbound stack: accept → detect TLS → terminate or pass through → transport header → policy → connect → forward. */
export interface Inbound {
  listen(options: { host: string; port: number }): Promise<net.AddressInfo>;
  /** Stops accepting; open connections continue. */
  stopAccepting(): Promise<void>;
  /** Destroys every open connection. */
  destroyAll(): void;
  /** Connections accepted and not yet closed. */
  connections(): number;
  /** Stops following policy changes. */
  close(): void;
}

/**
 * Creates the inbound stack; `handle` reads top to bottom as the stack
 * linkerd2-proxy's inbound server builds, each layer in `inbound/`.
 */
export function createInbound(options: CreateInboundOptions): Inbound {
  const logger = options.logger ?? noopLogger;
  const { metrics, policy } = options;
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
  const detectTimeoutMs = options.detectTimeoutMs ?? 10_000;
  const own = options.own ?? createOwnSockets();
  const skipPorts = new Set(options.skipPorts ?? []);
  const terminateTls = createTerminateTls({ identity: options.identity, credentials: options.credentials, handshakeTimeoutMs });
  const connect = options.connect ?? createConnectWorkload({ own, connectTimeoutMs: options.connectTimeoutMs ?? 3000 });
  const idleTimeoutMs = options.idleTimeoutMs ?? 3_600_000;
  const httpLayer = createInboundHttp({ metrics, logger, connect, idleTimeoutMs, ...(options.http1PoolIdleTimeoutMs === undefined ? {} : { poolIdleTimeoutMs: options.http1PoolIdleTimeoutMs }) });
  const headerOptions = {
    timeoutMs: handshakeTimeoutMs,
    workloadHost: options.workloadHost ?? options.workload.host,
    declaredPorts: new Set(options.inboundPorts ?? []),
    skipPorts,
    own,
    policy,
  };

  // Built once: the layers' options are the same for every connection.
  const acceptOptions = {
    // Set once the listener is bound.
    listenerPort: 0,
    workload: options.workload,
    policy,
    ...(options.workloadHost === undefined ? {} : { workloadHost: options.workloadHost }),
    ...(options.originalDestination === undefined ? {} : { originalDestination: options.originalDestination }),
  };
  const detectOptions = { identity: options.identity, detectTimeoutMs };
  const protocolOptions = { detectTimeoutMs, connect, ...(options.serverFirstProbeMs === undefined ? {} : { serverFirstProbeMs: options.serverFirstProbeMs }) };

  /** The pipeline for one accepted connection. */
  const handle = async (raw: net.Socket): Promise<void> => {
    const target = acceptTarget(raw, acceptOptions);
    if (skipPorts.has(target.port)) {
      await serve(raw, { ...target, tls: { tls: "no_identity", reason: "port_skipped" } }, { authorize: false });
      return;
    }
    const detected = await detectLayer(target, raw, detectOptions);
    if (isRefusal(detected)) return fail(raw, detected);
    // Plaintext, or someone else's TLS (the application's own): forwarded untouched.
    if (detected.tls.tls !== "true") return serve(raw, detected);

    const terminated = await terminateTls(detected, raw);
    if (isRefusal(terminated)) return fail(raw, terminated);
    // Not tracked apart from `raw`: node closes the TLS socket with the connection it wraps, and `raw` with it.
    const { socket } = terminated;
    bounds?.track(socket, terminated.target.clientId);
    const retargeted = await opaqueTransportLayer(terminated.target, socket, headerOptions);
    if (isRefusal(retargeted)) return fail(socket, retargeted);
    return serve(socket, retargeted);
  };

  /** No loop → authorize against the port's policy → connect → forward. */
  const serve = async (client: CountedSocket & net.Socket, target: InboundTarget, serveOptions = { authorize: true }): Promise<void> => {
    const loop = loopRefusal(target, own);
    if (loop !== undefined) return fail(client, loop);
    const targetAddr = formatHostPort(target.workload.host, target.workload.port);
    const decision = serveOptions.authorize ? authorizeTarget(target) : undefined;
    // The SNI of a pass-through connection is the client's own choice: it
    // becomes a label only once policy let the connection in.
    const legTls: TlsState = target.tls.tls === "opaque" && decision?.allow === false ? { tls: "opaque", sni: "" } : target.tls;
    const closeLeg = metrics.openConnection(client, { direction: "inbound", peer: "src", targetAddr, tls: legTls, ...(decision === undefined ? {} : { decision }) });
    // The connection's one close listener of the stack's own: its metrics leg, and its port's policy while it was followed.
    let release: (() => void) | undefined;
    let followed = false;
    client.on("close", () => {
      closeLeg();
      if (!followed) return;
      authorized.delete(client);
      release?.();
    });
    if (decision !== undefined) {
      metrics.recordAuthz(decision, targetAddr, authzPeer(target));
      if (!decision.allow) {
        logger.info({ client: target.client.address, clientId: target.clientId, port: target.port, policy: policyLabel(decision.server), server: decision.server.name, reason: decision.reason }, "inbound connection denied by policy");
        client.destroy();
        return;
      }
      if (decision.wouldDeny !== undefined) {
        logger.warn({ client: target.client.address, clientId: target.clientId, port: target.port, wouldDeny: decision.wouldDeny }, "audit: policy would deny this connection");
      }
      authorized.set(client, target);
      // Its port's policy stays followed while it is open: a later update may close it.
      release = policy.retain?.(target.port);
      followed = true;
    }
    // Protocol: HTTP is served per request; anything else is forwarded as bytes.
    const protocol: DetectedProtocol = serveOptions.authorize ? await detectProtocolLayer(target, client, protocolOptions) : { kind: "opaque", reason: "port_skipped" };
    if (protocol.kind === "closed") {
      client.destroy();
      return;
    }
    if (protocol.kind !== "opaque") {
      // Each request is decided again under the port's policy now (Linkerd's HTTP authorization).
      const perRequest = (): AuthorizeDecision | undefined => (decision === undefined ? undefined : authorizeTarget(authorized.get(client) ?? target, policy.current(target.port)));
      httpLayer.serve(client, target, protocol.kind, perRequest);
      return;
    }
    let upstream: net.Socket;
    const upstreamRead = createDirectRead();
    try {
      upstream = await (protocol.upstream ?? connect(target, upstreamRead.onread));
    } catch (error) {
      return fail(client, { refused: error instanceof ProxyError ? error : new ProxyError("ERR_CONNECT_FAILED", (error as Error).message, { cause: error }), errorLabel: "workload_connect" });
    }
    metrics.trackConnection(upstream, { direction: "inbound", peer: "dst", targetAddr, tls: { tls: "no_identity", reason: "loopback" } });
    forwardStreams(client, upstream, { idleTimeoutMs, bRead: upstreamRead });
  };

  const fail = (socket: { destroy(): void }, { refused, errorLabel }: Refusal): void => {
    metrics.recordError("inbound", errorLabel);
    logger.info({ code: refused.code, err: refused.message, client: (socket as net.Socket).remoteAddress }, "inbound connection refused");
    socket.destroy();
  };

  // Connections policy let in, by port: a new policy closes those it no longer allows.
  const authorized = new Map<net.Socket, InboundTarget>();
  const onPolicy = (port: number, next: ServerPolicy): void => {
    for (const [client, target] of authorized) {
      if (target.port !== port) continue;
      const decision = authorizeTarget(target, next);
      if (decision.allow) {
        authorized.set(client, { ...target, policy: next });
        continue;
      }
      metrics.recordAuthzTerminate(decision, formatHostPort(target.workload.host, target.workload.port));
      logger.info({ client: target.client.address, clientId: target.clientId, port, server: next.meta.name, reason: decision.reason }, "open inbound connection closed: the port's new policy denies it");
      authorized.delete(client);
      client.destroy();
    }
  };
  const offPolicy = policy.subscribe(onPolicy);

  // Open mesh connections end with the identities they were made with: the earlier leaf expiry, or an anchor dropped.
  const endCodes = { open_peer_cert_expired: "ERR_TLS_PEER_CERT_EXPIRED", open_local_cert_expired: "ERR_TLS_LOCAL_CERT_EXPIRED", open_client_cert_untrusted: "ERR_TLS_UNAUTHORIZED" } as const satisfies Record<IdentityEnd, string>;
  const bounds = options.closeAtIdentityEnd !== true ? undefined : createIdentityBounds({
    credentials: options.credentials,
    ...(options.trustBundle === undefined ? {} : { trustBundle: options.trustBundle }),
    end(socket, why, detail, clientId) {
      metrics.recordError("inbound", why);
      logger.info({ code: endCodes[why], err: detail, client: socket.remoteAddress, clientId }, "open inbound connection closed: its TLS identity is no longer valid");
      httpLayer.end(socket);
    },
  });

  // Accepted connections (a mesh connection's TLS socket wraps its entry: destroying one destroys the other, and both close together).
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  };
  const server = createInboundServer({ maxConnections: options.maxConnections ?? 10_000, metrics }, (raw) => {
    track(raw);
    handle(raw).catch((error: unknown) => fail(raw, { refused: new ProxyError("ERR_CONNECT_FAILED", (error as Error).message, { cause: error }), errorLabel: "internal" }));
  });

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
          acceptOptions.listenerPort = address.port;
          own.addListener(address, "inbound");
          resolve(address);
        });
      }),
    stopAccepting: async () => {
      // close() stops the listener now; its callback would wait for every connection.
      server.close();
      // Keep-alive and HTTP/2 peers are told to go elsewhere, so the drain ends without cutting a request.
      httpLayer.drain();
    },
    destroyAll() {
      for (const socket of sockets) socket.destroy();
    },
    connections: () => sockets.size,
    close() {
      offPolicy();
      bounds?.close();
      httpLayer.close();
    },
  };
}
