import http from "node:http";
import net from "node:net";
import type { HostPort } from "./address.js";
import { formatHostPort, parseHostPort } from "./address.js";
import type { Balancer } from "./balancer.js";
import { createBalancer, endpointKey } from "./balancer.js";
import { connectEndpoint } from "./connect-endpoint.js";
import type { EndpointConnection } from "./connect-endpoint.js";
import type { TlsCredentials } from "./credentials.js";
import { ProxyError } from "./errors.js";
import { forwardStreams } from "./forward.js";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import type { ProxyMetrics } from "./metrics.js";
import { createOwnSockets } from "./own-sockets.js";
import type { OwnSockets } from "./own-sockets.js";
import type { Endpoint, EndpointResolver, Resolution } from "./sources.js";

/** A fixed route: a local listener whose connections all go to one authority. */
export interface Route {
  listen: HostPort;
  /** `name:port` or `ip:port`. */
  authority: string;
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
}

/** The outbound stack: HTTP proxy (absolute URI, CONNECT) and fixed routes → discover → balance → mesh connect → forward. */
export interface Outbound {
  /** Starts the HTTP proxy listener. */
  listenProxy(address: HostPort): Promise<net.AddressInfo>;
  /** Starts a fixed route listener. */
  listenRoute(route: Route): Promise<net.AddressInfo>;
  /** Opens a connection to an authority through discovery and the mesh (the layer under both listeners). */
  connect(authority: string): Promise<EndpointConnection & { endpoint: Endpoint }>;
  stopAccepting(): Promise<void>;
  destroyAll(): void;
  connections(): number;
  close(): void;
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade"]);

/** `host:port` as an authority, defaulting the port; lower-cased host. @throws ProxyError `ERR_ADDRESS_INVALID` */
export function normalizeAuthority(text: string, defaultPort?: number): string {
  const withPort = defaultPort !== undefined && !/:\d+$/.test(text) && !/^\[.*\]$/.test(text) ? `${text}:${defaultPort}` : text;
  const { host, port } = parseHostPort(withPort);
  if (port === 0) throw new ProxyError("ERR_ADDRESS_INVALID", `port 0 in ${JSON.stringify(text)}`);
  if (!net.isIP(host) && !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i.test(host)) {
    throw new ProxyError("ERR_ADDRESS_INVALID", `not a host name: ${JSON.stringify(host)}`);
  }
  return formatHostPort(host.toLowerCase().replace(/\.$/, ""), port);
}

/** Creates the outbound stack. */
export function createOutbound(options: CreateOutboundOptions): Outbound {
  const logger = options.logger ?? noopLogger;
  const { metrics, credentials } = options;
  const balancer = options.balancer ?? createBalancer();
  const maxAttempts = options.maxAttempts ?? 3;
  const maxResolutions = options.maxResolutions ?? 1000;
  const idleTimeoutMs = options.idleTimeoutMs ?? 3_600_000;
  const own = options.own ?? createOwnSockets();
  const maxConnections = options.maxConnections ?? 10_000;
  const resolutions = new Map<string, Resolution>();
  const servers = new Set<net.Server>();
  const sockets = new Set<net.Socket>();

  /** Discovery: the endpoints of an authority, from a cached live resolution. */
  const discover = async (authority: string): Promise<Endpoint[]> => {
    let resolution = resolutions.get(authority);
    if (resolution === undefined) {
      if (resolutions.size >= maxResolutions) {
        const oldest = resolutions.keys().next().value;
        if (oldest !== undefined) {
          resolutions.get(oldest)?.close();
          resolutions.delete(oldest);
        }
      }
      resolution = options.resolver.resolve(authority);
      resolutions.set(authority, resolution);
    }
    let set = resolution.current();
    if (set === undefined) {
      try {
        set = await resolution.ready({ timeoutMs: options.discoveryTimeoutMs ?? 10_000 });
      } catch (cause) {
        resolutions.delete(authority);
        resolution.close();
        throw new ProxyError("ERR_DISCOVERY_TIMEOUT", `no answer from service discovery for ${authority}`, { cause });
      }
    }
    if (!set.exists) {
      // Only an IP the destination service explicitly does not know is reached directly, in plaintext.
      const { host, port } = parseHostPort(authority);
      if (net.isIP(host)) return [{ address: host, port, weight: 1, labels: {} }];
      throw new ProxyError("ERR_DISCOVERY_UNKNOWN", `service discovery does not know ${authority}`);
    }
    if (set.endpoints.length === 0) throw new ProxyError("ERR_NO_ENDPOINTS", `${authority} has no endpoints`);
    return set.endpoints;
  };

  /** Balance over the endpoints; a failed connect tries another one. */
  const connect = async (authority: string): Promise<EndpointConnection & { endpoint: Endpoint }> => {
    const endpoints = await discover(authority);
    const tried = new Set<string>();
    let lastError: unknown;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const endpoint = balancer.pick(endpoints, tried);
      if (endpoint === undefined) break;
      tried.add(endpointKey(endpoint));
      const dialled = formatHostPort(endpoint.address, endpoint.identity === undefined ? endpoint.port : (endpoint.opaqueTransportPort ?? endpoint.port));
      // The proxy's own outbound, route and admin listeners are never a destination:
      // a loop, or a local-only admin request made on someone else's behalf.
      const loop = own.listenerAt(parseHostPort(dialled));
      if (loop !== undefined && loop !== "inbound") {
        lastError = new ProxyError("ERR_TARGET_FORBIDDEN", `${dialled} is the proxy's own ${loop} listener: refusing a loop`);
        metrics.recordError("outbound", "target_forbidden", dialled);
        logger.warn({ authority, endpoint: dialled, code: "ERR_TARGET_FORBIDDEN" }, "outbound connection refused: it would reach the proxy itself");
        continue;
      }
      const release = balancer.acquire(endpoint);
      try {
        const connection = await connectEndpoint({
          endpoint,
          credentials,
          authority,
          connectTimeoutMs: options.connectTimeoutMs ?? 3000,
          ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
        });
        connection.socket.once("close", release);
        own.trackOpened(connection.socket);
        metrics.trackConnection(connection.socket, { direction: "outbound", peer: "dst", targetAddr: connection.remote, tls: connection.tls });
        return { ...connection, endpoint };
      } catch (error) {
        release();
        lastError = error;
        const code = error instanceof ProxyError ? error.code : "ERR_CONNECT_FAILED";
        metrics.recordError("outbound", code.replace(/^ERR_/, "").toLowerCase(), dialled);
        logger.warn({ authority, endpoint: endpointKey(endpoint), serverId: endpoint.identity, code, err: (error as Error).message }, "outbound connect failed");
        // No certificate yet fails every endpoint alike: do not spin through them.
        if (code === "ERR_NO_CREDENTIALS") break;
      }
    }
    throw lastError instanceof ProxyError ? lastError : new ProxyError("ERR_CONNECT_FAILED", `no endpoint of ${authority} accepted`, { cause: lastError });
  };

  const track = (socket: net.Socket, targetAddr: string): void => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    metrics.trackConnection(socket, { direction: "outbound", peer: "src", targetAddr, tls: { tls: "no_identity", reason: "loopback" } });
  };

  const errorText = (error: unknown): { status: number; code: string; message: string } => {
    const code = error instanceof ProxyError ? error.code : "ERR_CONNECT_FAILED";
    const status = code === "ERR_ADDRESS_INVALID" ? 400 : code === "ERR_TARGET_FORBIDDEN" ? 403 : code === "ERR_DISCOVERY_TIMEOUT" || code === "ERR_CONNECT_TIMEOUT" ? 504 : 502;
    return { status, code, message: (error as Error).message };
  };

  // The HTTP proxy: CONNECT tunnels any TCP protocol; absolute-URI requests are forwarded.
  // Request lines and headers are bounded by node's 16 KiB (maxHeaderSize, said here so it stays).
  const proxyServer = http.createServer({ keepAlive: true, noDelay: true, maxHeaderSize: 16 * 1024 });
  proxyServer.maxConnections = maxConnections;
  proxyServer.on("drop", () => metrics.recordRefused("outbound", "max_connections"));
  proxyServer.on("connection", (socket: net.Socket) => track(socket, "proxy"));
  // No handler may throw into node's event loop: a bad request gets its answer and the listener keeps serving.
  const guarded = <A extends unknown[]>(what: string, handler: (...args: A) => void, onThrow: (...args: A) => void) => (...args: A): void => {
    try {
      handler(...args);
    } catch (error) {
      logger.error({ code: error instanceof ProxyError ? error.code : "ERR_INTERNAL", err: (error as Error).message }, `outbound ${what} handler failed`);
      try {
        onThrow(...args);
      } catch {
        // The answer could not be written: the connection is already gone.
      }
    }
  };
  proxyServer.on("connect", guarded("CONNECT", (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    client.on("error", () => undefined);
    let authority: string;
    try {
      authority = normalizeAuthority(req.url ?? "");
    } catch (error) {
      const { status, code, message } = errorText(error);
      client.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nl5d-proxy-error: ${code}\r\ncontent-length: ${Buffer.byteLength(message)}\r\nconnection: close\r\n\r\n${message}`);
      return;
    }
    connect(authority).then(
      (upstream) => {
        if (client.destroyed) {
          upstream.socket.destroy();
          return;
        }
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.length > 0) upstream.socket.write(head);
        forwardStreams(client, upstream.socket, { idleTimeoutMs });
      },
      (error: unknown) => {
        const { status, code, message } = errorText(error);
        client.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nl5d-proxy-error: ${code}\r\ncontent-length: ${Buffer.byteLength(message)}\r\nconnection: close\r\n\r\n${message}`);
      },
    );
  }, (_req, client) => client.destroy()));
  proxyServer.on("request", guarded("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const reply = (status: number, code: string, message: string): void => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "l5d-proxy-error": code, "content-length": Buffer.byteLength(message) + 1 });
      res.end(`${message}\n`);
    };
    let url: URL;
    let authority: string;
    try {
      url = new URL(req.url ?? "");
      if (url.protocol !== "http:") throw new ProxyError("ERR_ADDRESS_INVALID", `only http:// absolute URIs are proxied (use CONNECT for others), got ${url.protocol}`);
      authority = normalizeAuthority(url.host, 80);
    } catch (error) {
      reply(400, "ERR_ADDRESS_INVALID", error instanceof ProxyError ? error.message : "the meshtls outbound proxy takes absolute-URI requests (http://host/path) and CONNECT");
      return;
    }
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
    }
    // One upstream connection per request: the mesh connection is opened by
    // the same discover → balance → connect layer as CONNECT uses.
    let upstreamReq: http.ClientRequest;
    try {
      upstreamReq = http.request({
        method: req.method,
        path: `${url.pathname}${url.search}`,
        headers,
        createConnection: (_opts: unknown, callback: (error: Error | null, socket: net.Socket) => void) => {
          connect(authority).then(
            (upstream) => callback(null, upstream.socket),
            (error: unknown) => callback(error as Error, undefined as unknown as net.Socket),
          );
          return undefined;
        },
      } as http.RequestOptions);
    } catch (error) {
      // Something node's parser accepted and its client refuses (a method, a header value).
      reply(400, "ERR_ADDRESS_INVALID", `the request cannot be forwarded: ${(error as Error).message}`);
      return;
    }
    upstreamReq.on("response", (upstreamRes) => {
      upstreamRes.on("error", () => res.destroy());
      const responseHeaders: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(upstreamRes.headers)) {
        if (value !== undefined && !HOP_BY_HOP.has(name)) responseHeaders[name] = value;
      }
      try {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, responseHeaders);
      } catch (error) {
        // A response node's own parser took but its writer refuses (a bad status text or header).
        upstreamRes.destroy();
        reply(502, "ERR_CONNECT_FAILED", `the upstream response cannot be relayed: ${(error as Error).message}`);
        return;
      }
      upstreamRes.pipe(res);
    });
    upstreamReq.on("error", (error) => {
      const { status, code, message } = errorText(error);
      reply(status, code, message);
    });
    upstreamReq.setTimeout(idleTimeoutMs, () => upstreamReq.destroy(new ProxyError("ERR_CONNECT_TIMEOUT", "upstream idle")));
    req.on("error", () => upstreamReq.destroy());
    req.pipe(upstreamReq);
  }, (_req, res) => {
    if (res.headersSent) res.destroy();
    else res.writeHead(500, { "content-length": 0, connection: "close" }).end();
  }));
  proxyServer.on("clientError", (error: NodeJS.ErrnoException, socket: net.Socket) => {
    const status = error.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    else socket.destroy();
  });
  proxyServer.headersTimeout = 30_000;
  proxyServer.requestTimeout = 0;

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
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => {
        track(client, authority);
        client.on("error", () => undefined);
        connect(authority).then(
          (upstream) => {
            if (client.destroyed) upstream.socket.destroy();
            else forwardStreams(client, upstream.socket, { idleTimeoutMs });
          },
          (error: unknown) => {
            logger.warn({ authority, code: (error as ProxyError).code, err: (error as Error).message }, "route connection refused");
            client.destroy();
          },
        );
      });
      server.maxConnections = maxConnections;
      server.on("drop", () => metrics.recordRefused("route", "max_connections"));
      return listen(server, route.listen, "route", `the route to ${authority}`);
    },
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
      for (const resolution of resolutions.values()) resolution.close();
      resolutions.clear();
    },
  };
}
