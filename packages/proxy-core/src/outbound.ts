import type net from "node:net";
import type { HostPort } from "./address.js";
import { formatHostPort } from "./address.js";
import type { Balancer } from "./balancer.js";
import { createBalancer } from "./balancer.js";
import type { TlsCredentials } from "./credentials.js";
import { ProxyError } from "./errors.js";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import type { ProxyMetrics } from "./metrics.js";
import { normalizeAuthority } from "./outbound/authority.js";
import { createConnectOutbound } from "./outbound/connect.js";
import type { ConnectOutbound } from "./outbound/connect.js";
import { createDiscover } from "./outbound/discover.js";
import { createHttpProxyServer } from "./outbound/http-proxy.js";
import { createRouteServer } from "./outbound/route.js";
import { createTransparentServer } from "./outbound/transparent.js";
import type { TransparentIntercept } from "./outbound/transparent.js";
import type { OriginalDestinationLookup } from "./inbound/accept.js";
import { createOutboundHttp } from "./http/outbound-http.js";
import { createOwnSockets } from "./own-sockets.js";
import type { OwnSockets } from "./own-sockets.js";
import type { EndpointResolver } from "./sources.js";

export { normalizeAuthority };

/** A fixed route: a local listener whose connections all go to one authority. */
export interface Route {
  listen: HostPort;
  /** `name:port` or `ip:port`. */
  authority: string;
  /** `opaque`: forwarded as bytes without protocol detection (server-first protocols). Default `detect`. */
  protocol?: "detect" | "opaque";
}

/** Options of {@link createOutbound}. */
export interface CreateOutboundOptions {
  resolver: EndpointResolver;
  credentials: TlsCredentials;
  metrics: ProxyMetrics;
  logger?: Logger;
  /** TCP connect + TLS handshake per endpoint. Default 3000. */
  connectTimeoutMs?: number;
  /** Idle connections are closed. Default 3600000. */
  idleTimeoutMs?: number;
  /** Waiting for the first answer of service discovery. Default 10000. */
  discoveryTimeoutMs?: number;
  /** Endpoints tried per connection when connects fail. Default 3. */
  maxAttempts?: number;
  /** Local address to bind connections to endpoints to. */
  localAddress?: string;
  /** Most authorities with a live discovery; the oldest is dropped beyond. Default 1000. */
  maxResolutions?: number;
  balancer?: Balancer;
  /**
   * The proxy's own listeners and opened connections, shared by its parts.
   * Default: a record of this outbound's listeners alone.
   */
  own?: OwnSockets;
  /** Connections open at once on each listener (HTTP proxy, each route); more are closed at once and counted. Default 10000. */
  maxConnections?: number;
  /** Protocol detection on a route gives up (forwarding as bytes) after this long. Default 10000. */
  detectTimeoutMs?: number;
  /** Idle HTTP/1 connections to an endpoint close after this long. Default 3000 (Linkerd's). */
  http1PoolIdleTimeoutMs?: number;
  /** Idle HTTP/1 connections kept per endpoint. Default 10000 (Linkerd's). */
  maxIdlePerEndpoint?: number;
}

/** The outbound stack: HTTP proxy (absolute URI, CONNECT) and fixed routes → discover → balance → mesh connect → forward. */
export interface Outbound {
  /** Starts the HTTP proxy listener. */
  listenProxy(address: HostPort): Promise<net.AddressInfo>;
  /** Starts a fixed route listener. */
  listenRoute(route: Route): Promise<net.AddressInfo>;
  /** Starts the transparent listener: each connection goes to its original destination (`meshtls init`'s redirect). */
  listenTransparent(address: HostPort, originalDestination: OriginalDestinationLookup, intercept?: TransparentIntercept): Promise<net.AddressInfo>;
  /** The layer under every listener: a connection to the target's authority through discovery and the mesh. */
  connect: ConnectOutbound;
  stopAccepting(): Promise<void>;
  destroyAll(): void;
  connections(): number;
  close(): void;
}

/**
 * Creates the outbound stack: each listener (`outbound/http-proxy.ts`,
 * `outbound/route.ts`) builds an `OutboundTarget` and hands it to the
 * one connect layer (`outbound/connect.ts`: discovery, balancing, mesh TLS).
 */
export function createOutbound(options: CreateOutboundOptions): Outbound {
  const logger = options.logger ?? noopLogger;
  const { metrics } = options;
  const idleTimeoutMs = options.idleTimeoutMs ?? 3_600_000;
  const own = options.own ?? createOwnSockets();
  const maxConnections = options.maxConnections ?? 10_000;
  const servers = new Set<net.Server>();
  const sockets = new Set<net.Socket>();

  const balancer = options.balancer ?? createBalancer();
  const discover = createDiscover({ resolver: options.resolver, discoveryTimeoutMs: options.discoveryTimeoutMs ?? 10_000, maxResolutions: options.maxResolutions ?? 1000 });
  const connect = createConnectOutbound({
    discover,
    balancer,
    credentials: options.credentials,
    metrics,
    logger,
    own,
    maxAttempts: options.maxAttempts ?? 3,
    connectTimeoutMs: options.connectTimeoutMs ?? 3000,
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
  });

  const http = createOutboundHttp({
    discover,
    balancer,
    credentials: options.credentials,
    metrics,
    logger,
    own,
    connect,
    maxAttempts: options.maxAttempts ?? 3,
    connectTimeoutMs: options.connectTimeoutMs ?? 3000,
    idleTimeoutMs,
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    ...(options.http1PoolIdleTimeoutMs === undefined ? {} : { poolIdleTimeoutMs: options.http1PoolIdleTimeoutMs }),
    ...(options.maxIdlePerEndpoint === undefined ? {} : { maxIdlePerEndpoint: options.maxIdlePerEndpoint }),
  });
  const detectTimeoutMs = options.detectTimeoutMs ?? 10_000;
  const hintedOpaque = async (authority: string): Promise<boolean> => {
    try {
      const endpoints = await discover.endpoints(authority);
      return endpoints.every((e) => e.protocolHint === "opaque");
    } catch {
      // The connect layer reports discovery's failure as it does today.
      return true;
    }
  };
  const track = (socket: net.Socket, targetAddr: string): void => {
    sockets.add(socket);
    const closeLeg = metrics.openConnection(socket, { direction: "outbound", peer: "src", targetAddr, tls: { tls: "no_identity", reason: "loopback" } });
    socket.on("close", () => {
      sockets.delete(socket);
      closeLeg();
    });
  };
  const listenerOptions = { connect, http, metrics, logger, idleTimeoutMs, maxConnections, track };
  const proxyServer = createHttpProxyServer(listenerOptions);

  const listen = (server: net.Server, address: HostPort, kind: "outbound" | "route", what: string): Promise<net.AddressInfo> =>
    new Promise((resolve, reject) => {
      const onError = (cause: Error): void => reject(new ProxyError("ERR_LISTEN_FAILED", `${what} cannot listen on ${formatHostPort(address.host, address.port)}: ${cause.message}`, { cause }));
      server.once("error", onError);
      server.listen(address.port, address.host, () => {
        server.off("error", onError);
        // Later failures to accept (e.g. EMFILE) are logged; the listener keeps serving.
        server.on("error", (cause) => logger.error({ code: "ERR_LISTEN_FAILED", err: cause.message }, `${what}: accept failed`));
        servers.add(server);
        const bound = server.address() as net.AddressInfo;
        own.addListener(bound, kind);
        resolve(bound);
      });
    });

  return {
    listenProxy: (address) => listen(proxyServer, address, "outbound", "the outbound HTTP proxy"),
    listenRoute(route) {
      const authority = normalizeAuthority(route.authority);
      const isOpaque = route.protocol === "opaque" ? () => Promise.resolve(true) : hintedOpaque;
      return listen(createRouteServer({ ...listenerOptions, authority, isOpaque, detectTimeoutMs }), route.listen, "route", `the route to ${authority}`);
    },
    listenTransparent: (address, originalDestination, intercept) =>
      listen(
        createTransparentServer({ ...listenerOptions, originalDestination, isOpaque: hintedOpaque, detectTimeoutMs, ...(intercept === undefined ? {} : { intercept }) }),
        address,
        "outbound",
        "the transparent outbound listener",
      ),
    connect,
    stopAccepting: async () => {
      for (const server of servers) server.close();
      proxyServer.closeIdleConnections();
    },
    destroyAll() {
      for (const socket of sockets) socket.destroy();
    },
    connections: () => sockets.size,
    close() {
      discover.close();
      http.close();
    },
  };
}
