import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { formatHostPort, parseHostPort } from "../address.js";
import type { HostPort } from "../address.js";
import type { Balancer } from "../balancer.js";
import { endpointKey } from "../balancer.js";
import { connectEndpoint } from "../connect-endpoint.js";
import type { TlsCredentials } from "../credentials.js";
import { ProxyError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { HttpOutcome, ProxyMetrics } from "../metrics.js";
import type { ConnectOutbound } from "../outbound/connect.js";
import type { Discover } from "../outbound/discover.js";
import type { RetryReason } from "../outbound/retry-reason.js";
import { connectRetryReason } from "../outbound/retry-reason.js";
import type { OwnSockets } from "../own-sockets.js";
import type { Endpoint } from "../sources.js";
import type { TlsState } from "../tls-state.js";
import { connectMeshH2 } from "./connect-h2.js";
import type { Headers } from "./headers.js";
import { headerValue, L5D_CLIENT_ID, L5D_DST_CANONICAL, L5D_ORIG_PROTO, L5D_PROXY_ERROR } from "./headers.js";
import type { ProxiedRequest, ProxiedResponse, ResponseSink, SendAttempt } from "./message.js";
import { fromHttp1, fromHttp2, http1Sink, http2Sink, sendHttp1, sendHttp2 } from "./message.js";
import type { ConnectionPools } from "./pools.js";
import { createConnectionPools, h2Transport, retireHttp1Socket } from "./pools.js";
import { pipeUpgrade, upgradeHead } from "./upgrade.js";

/** Options of {@link createOutboundHttp}. */
export interface CreateOutboundHttpOptions {
  discover: Discover;
  balancer: Balancer;
  credentials: TlsCredentials;
  metrics: ProxyMetrics;
  logger: Logger;
  own: OwnSockets;
  /** The connection-level seam, for `Upgrade` requests (a WebSocket is a tunnel once agreed). */
  connect: ConnectOutbound;
  /** Endpoints tried per request when connects fail. */
  maxAttempts: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  localAddress?: string;
  /** Idle HTTP/1 connections per endpoint. Default 10000. */
  maxIdlePerEndpoint?: number;
  /** Idle HTTP/1 connections to endpoints close after this long. Default 3000. */
  poolIdleTimeoutMs?: number;
}

/** The outbound HTTP layer: per-request discovery, balancing, pooling and the HTTP/2 upgrade between proxies. */
export interface OutboundHttp {
  /** Serves the HTTP/1 or HTTP/2 requests of an application connection bound for `authority` (a route). */
  serve(socket: net.Socket, kind: "http1" | "h2", authority: string): void;
  /** Forwards one request to `authority` (the HTTP proxy's absolute-URI requests). */
  forward(request: ProxiedRequest, sink: ResponseSink, authority: string): void;
  /** Tunnels an HTTP/1 `Upgrade` request (WebSocket) to `authority`, never upgraded to HTTP/2. */
  upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer, authority: string, path: string): void;
  /** Mesh HTTP/2 sessions open now. */
  sessions(): number;
  close(): void;
}

/** How requests reach one endpoint: its pool keys, addresses and TLS label, derived once. */
interface EndpointLeg {
  meshH2: boolean;
  /** The HTTP/2 session's key: the mesh session (`h2|`) or HTTP/2 with prior knowledge behind the transport header (`pk|`). */
  h2Key: string;
  h1Key: string;
  /** Where connections go (the opaque-transport port of a meshed endpoint). */
  dialAddr: string;
  /** The endpoint as metrics name it. */
  targetAddr: string;
  tls: TlsState;
}

/** How long before the earlier leaf's expiry a pooled mesh connection leaves its pool (it closes at the expiry at the latest). */
const RETIRE_BEFORE_EXPIRY_MS = 5000;

/** A timer's delay: not negative, and within setTimeout's range. */
const timerDelay = (ms: number): number => Math.max(0, Math.min(ms, 2 ** 31 - 1));

/** Methods a stale keep-alive connection's request may be sent again for (Go's net/http `isReplayable`). */
const REPLAYABLE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);

/**
 * The reason to send a failed request to another endpoint, or undefined: a
 * connect failure (`connectRetryReason`: never a security failure), or, for a
 * request without a body, a stream HTTP/2 refused unprocessed, or a kept-alive
 * HTTP/1 connection that closed before any response when the method is
 * idempotent (as Go's net/http retries).
 */
const requestRetryReason = (error: unknown, request: ProxiedRequest, attempt: SendAttempt): RetryReason | undefined => {
  const connect = connectRetryReason(error);
  if (connect !== undefined || error instanceof ProxyError || !request.bodyless) return connect;
  if (attempt.refusedStream === true) return "stream_refused";
  const idempotent = REPLAYABLE_METHODS.has(request.method) || request.headers["idempotency-key"] !== undefined || request.headers["x-idempotency-key"] !== undefined;
  return attempt.reusedConnection === true && idempotent ? "stale_connection" : undefined;
};

const errorLabel = (error: unknown): string => (error instanceof ProxyError ? error.code.replace(/^ERR_/, "").toLowerCase() : "stream_reset");

/** The status a proxy-made error answers with. */
export function errorStatus(code: string): number {
  if (code === "ERR_ADDRESS_INVALID") return 400;
  if (code === "ERR_TARGET_FORBIDDEN") return 403;
  if (code === "ERR_DISCOVERY_TIMEOUT" || code === "ERR_CONNECT_TIMEOUT") return 504;
  return 502;
}

const grpcStatusOf = (response: ProxiedResponse): number | undefined => {
  const value = headerValue(response.trailers() ?? {}, "grpc-status") ?? headerValue(response.headers, "grpc-status");
  return value === undefined || !/^\d+$/.test(value) ? undefined : Number(value);
};

/** Creates the outbound HTTP layer. */
export function createOutboundHttp(options: CreateOutboundHttpOptions): OutboundHttp {
  const { metrics, logger, balancer, own } = options;
  // Pool key → the endpoint it dials and the authority its transport header names (the last one a request used).
  const endpoints = new Map<string, { endpoint: Endpoint; authority: string }>();
  const localAddress = options.localAddress === undefined ? {} : { localAddress: options.localAddress };
  const track = (socket: net.Socket, dialled: HostPort, remote: string, state: TlsState, peerNotAfter: Date | undefined, retire: () => void): void => {
    own.trackOpened(socket, dialled, options.localAddress);
    metrics.trackConnection(socket, { direction: "outbound", peer: "dst", targetAddr: remote, tls: state });
    if (state.tls === "true") closeAtExpiry(socket, peerNotAfter, retire);
  };
  // A pooled mesh connection outlives the request that opened it: it goes once
  // either certificate expires, so no request is sent on an expired identity.
  // Shortly before, it leaves its pool (`retire`): requests in flight end on it
  // and later ones open a new connection, as the peer renewed long before and a
  // close at the expiry itself would cut a request sent a moment earlier.
  const closeAtExpiry = (socket: net.Socket, peerNotAfter: Date | undefined, retire: () => void): void => {
    const times = [options.credentials.current()?.notAfter, peerNotAfter].filter((d): d is Date => d !== undefined).map((d) => d.getTime());
    if (times.length === 0) return;
    const untilExpiryMs = Math.min(...times) - Date.now();
    // A short-lived leaf keeps at least half its remaining life in the pool.
    const retireInMs = untilExpiryMs - Math.min(RETIRE_BEFORE_EXPIRY_MS, untilExpiryMs / 2);
    const timers = [setTimeout(retire, timerDelay(retireInMs)), setTimeout(() => socket.destroy(), timerDelay(untilExpiryMs))];
    for (const timer of timers) timer.unref();
    socket.once("close", () => {
      for (const timer of timers) clearTimeout(timer);
    });
  };
  // A connect's outcome, once per connection (requests waiting on one HTTP/2 session share it): a failure
  // that sent nothing sets the endpoint aside, a success brings it back.
  const connecting = <T>(endpoint: Endpoint, opening: Promise<T>): Promise<T> =>
    opening.then(
      (opened) => {
        balancer.connected(endpoint);
        return opened;
      },
      (error: unknown) => {
        const reason = connectRetryReason(error);
        if (reason !== undefined) {
          balancer.setAside(endpoint);
          metrics.recordEndpointSetAside(reason);
        }
        throw error;
      },
    );
  const pools: ConnectionPools = createConnectionPools({
    async openSocket(key, agent) {
      const entry = endpoints.get(key);
      if (entry === undefined) throw new ProxyError("ERR_CONNECT_FAILED", `no endpoint ${key}`);
      const connection = await connecting(entry.endpoint, connectEndpoint({ endpoint: entry.endpoint, credentials: options.credentials, authority: entry.authority, connectTimeoutMs: options.connectTimeoutMs, ...localAddress }));
      const { socket } = connection;
      track(socket, connection.dialled, connection.remote, connection.tls, connection.peerNotAfter, () => (agent === undefined ? socket.destroy() : retireHttp1Socket(agent, socket)));
      return socket;
    },
    async openSession(key) {
      const entry = endpoints.get(key);
      if (entry === undefined) throw new ProxyError("ERR_CONNECT_FAILED", `no endpoint ${key}`);
      const { endpoint, authority } = entry;
      if (key.startsWith("h2|") && endpoint.identity !== undefined) {
        const { session, socket, peerNotAfter } = await connecting(endpoint, connectMeshH2({ address: endpoint.address, port: endpoint.port, identity: endpoint.identity, credentials: options.credentials, connectTimeoutMs: options.connectTimeoutMs, ...localAddress }));
        // close(): GOAWAY, no new streams; the connection ends with its last stream.
        track(socket, { host: endpoint.address, port: endpoint.port }, formatHostPort(endpoint.address, endpoint.port), { tls: "true", peerId: endpoint.identity }, peerNotAfter, () => session.close());
        return session;
      }
      const connection = await connecting(endpoint, connectEndpoint({ endpoint, credentials: options.credentials, authority, connectTimeoutMs: options.connectTimeoutMs, ...localAddress }));
      const opened: { session?: http2.ClientHttp2Session } = {};
      track(connection.socket, connection.dialled, connection.remote, connection.tls, connection.peerNotAfter, () => (opened.session === undefined ? connection.socket.destroy() : opened.session.close()));
      // The transport header may still be on its way: node's HTTP/2 must not take the handle over a write in flight.
      await new Promise((resolve) => connection.socket.write(Buffer.alloc(0), resolve));
      opened.session = http2.connect(`http://${connection.remote}`, { createConnection: () => h2Transport(connection.socket) as net.Socket });
      return opened.session;
    },
    ...(options.maxIdlePerEndpoint === undefined ? {} : { maxIdlePerDestination: options.maxIdlePerEndpoint }),
    ...(options.poolIdleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.poolIdleTimeoutMs }),
  });

  // A change of our credentials or of the trust bundle retires every pooled mesh connection: requests
  // after it open new connections (a full handshake against the current anchors, as resumption is
  // bounded), while those in flight finish on the old ones.
  const offCredentials = options.credentials.subscribe(() => pools.retire());

  // What a request to an endpoint needs, worked out once per endpoint object: discovery hands out the
  // same objects until the endpoint set changes, so a request builds no keys or labels of its own.
  const legs = new WeakMap<Endpoint, EndpointLeg>();
  const legOf = (endpoint: Endpoint): EndpointLeg => {
    let leg = legs.get(endpoint);
    if (leg === undefined) {
      const base = `${endpointKey(endpoint)}|${endpoint.identity ?? ""}|${endpoint.opaqueTransportPort ?? ""}`;
      const meshH2 = endpoint.identity !== undefined && endpoint.protocolHint === "h2";
      leg = {
        meshH2,
        h2Key: `${meshH2 ? "h2" : "pk"}|${base}`,
        h1Key: `h1|${base}`,
        dialAddr: formatHostPort(endpoint.address, endpoint.identity === undefined ? endpoint.port : (endpoint.opaqueTransportPort ?? endpoint.port)),
        targetAddr: formatHostPort(endpoint.address, endpoint.port),
        tls: endpoint.identity === undefined ? { tls: "no_identity", reason: "not_provided_by_service_discovery" } : { tls: "true", peerId: endpoint.identity },
      };
      legs.set(endpoint, leg);
    }
    return leg;
  };
  // Whether an authority is a name (it gets `l5d-dst-canonical`), per authority; bounded, as the HTTP proxy's clients choose them.
  const named = new Map<string, boolean>();
  const isName = (authority: string): boolean => {
    let name = named.get(authority);
    if (name === undefined) {
      if (named.size >= 10_000) named.clear();
      name = !net.isIP(parseHostPort(authority).host);
      named.set(authority, name);
    }
    return name;
  };
  const remember = (key: string, endpoint: Endpoint, authority: string): void => {
    const entry = endpoints.get(key);
    if (entry === undefined || entry.endpoint !== endpoint || entry.authority !== authority) endpoints.set(key, { endpoint, authority });
  };

  /** Sends on the endpoint's client: the mesh HTTP/2 session (upgrading HTTP/1 with `l5d-orig-proto`), or a keep-alive HTTP/1 pool. */
  const send = (endpoint: Endpoint, leg: EndpointLeg, request: ProxiedRequest, authority: string, attempt: SendAttempt): Promise<ProxiedResponse> => {
    const extra: Headers = {};
    if (isName(authority)) extra[L5D_DST_CANONICAL] = authority;
    const requestAuthority = request.authority === "" ? authority : request.authority;
    if (request.version === "2" || leg.meshH2) {
      remember(leg.h2Key, endpoint, authority);
      if (request.version !== "2") extra[L5D_ORIG_PROTO] = `HTTP/${request.version}${request.absoluteForm ? "; absolute-form" : ""}`;
      return pools.http2(leg.h2Key).then((session) => sendHttp2(request, { session, authority: requestAuthority, headers: extra, attempt }));
    }
    remember(leg.h1Key, endpoint, authority);
    return sendHttp1(request, { agent: pools.http1(leg.h1Key), authority: requestAuthority, headers: extra, attempt });
  };

  const forward = (request: ProxiedRequest, sink: ResponseSink, authority: string): void => {
    // The application's own l5d-client-id means nothing outbound; the peer overwrites it anyway.
    delete request.headers[L5D_CLIENT_ID];
    const labelAuthority = request.authority === "" ? authority : request.authority;
    const failEarly = (error: unknown, tls?: TlsState, targetAddr = authority): void => {
      // Connect failures arrive as ProxyError; anything else failed an established connection, the request possibly sent.
      const code = error instanceof ProxyError ? error.code : "ERR_UPSTREAM_FAILED";
      const status = errorStatus(code);
      const record = metrics.recordHttpRequest({ direction: "outbound", authority: labelAuthority, targetAddr, ...(tls === undefined ? {} : { tls }), method: request.method, path: request.path });
      record({ status, error: errorLabel(error) });
      request.body.resume();
      sink.fail(status, code, (error as Error).message);
    };
    const run = async (): Promise<void> => {
      let candidates: Endpoint[];
      try {
        candidates = await options.discover.endpoints(authority);
      } catch (error) {
        failEarly(error);
        return;
      }
      const tried = new Set<string>();
      const deadline = performance.now() + options.connectTimeoutMs;
      let retrying: RetryReason | undefined;
      let lastError: unknown;
      let lastEndpoint: Endpoint | undefined;
      for (let attempt = 0; attempt < options.maxAttempts; attempt++) {
        if (retrying !== undefined && performance.now() >= deadline) break;
        // A stale connection or a refused stream says nothing against the endpoint: with no other left, it is tried again.
        const again = retrying === "stale_connection" || retrying === "stream_refused" ? lastEndpoint : undefined;
        const endpoint = balancer.pick(candidates, tried) ?? again;
        if (endpoint === undefined) break;
        tried.add(endpointKey(endpoint));
        lastEndpoint = endpoint;
        const loop = own.listenerAt({ host: endpoint.address, port: endpoint.identity === undefined ? endpoint.port : (endpoint.opaqueTransportPort ?? endpoint.port) });
        if (loop !== undefined && loop !== "inbound") {
          lastError = new ProxyError("ERR_TARGET_FORBIDDEN", `${endpointKey(endpoint)} is the proxy's own ${loop} listener: refusing a loop`);
          metrics.recordError("outbound", "target_forbidden", endpointKey(endpoint));
          continue;
        }
        if (retrying !== undefined) metrics.recordConnectRetry(retrying);
        const leg = legOf(endpoint);
        const release = balancer.acquire(endpoint);
        const started = performance.now();
        const sent: SendAttempt = {};
        let response: ProxiedResponse;
        try {
          response = await send(endpoint, leg, request, authority, sent);
        } catch (error) {
          release();
          balancer.fail(endpoint);
          lastError = error;
          if (error instanceof ProxyError) metrics.recordError("outbound", errorLabel(error), leg.dialAddr);
          logger.warn({ authority, endpoint: endpointKey(endpoint), code: (error as ProxyError).code, err: (error as Error).message }, "outbound HTTP request failed");
          retrying = requestRetryReason(error, request, sent);
          if (retrying === undefined) break;
          continue;
        }
        // The endpoint's latency is its time to the response head (Linkerd's peak-EWMA measures to the
        // response too): a long body (a stream, a download) says nothing about how fast the endpoint answers.
        const latencyMs = performance.now() - started;
        const record = metrics.recordHttpRequest({ direction: "outbound", authority: labelAuthority, targetAddr: leg.targetAddr, tls: leg.tls, method: request.method, path: request.path });
        // The peer proxy's own error (it could not reach its workload): the endpoint failed, not the application.
        if (response.headers[L5D_PROXY_ERROR] !== undefined) {
          balancer.fail(endpoint);
          delete response.headers[L5D_PROXY_ERROR];
        }
        delete response.headers[L5D_ORIG_PROTO];
        sink.onAbort(() => response.body.destroy());
        sink.send(response).then(
          () => {
            release();
            balancer.observe(endpoint, latencyMs);
            const grpcStatus = grpcStatusOf(response);
            const outcome: HttpOutcome = { status: response.status, ...(grpcStatus === undefined ? {} : { grpcStatus }) };
            record(outcome);
          },
          () => {
            release();
            record({ status: response.status, error: "stream_reset" });
          },
        );
        return;
      }
      const lastLeg = lastEndpoint === undefined ? undefined : legOf(lastEndpoint);
      failEarly(lastError ?? new ProxyError("ERR_NO_ENDPOINTS", `no endpoint of ${authority} to try`), lastLeg?.tls, lastLeg?.targetAddr ?? authority);
    };
    run().catch((error: unknown) => failEarly(error));
  };

  const upgrade = (req: http.IncomingMessage, socket: net.Socket, head: Buffer, authority: string, path: string): void => {
    socket.on("error", () => undefined);
    const record = metrics.recordHttpRequest({ direction: "outbound", authority: req.headers.host ?? authority, targetAddr: authority, method: req.method ?? "GET", path });
    options.connect({ authority, listener: "proxy", client: { address: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 } }).then(
      (upstream) => {
        if (socket.destroyed) {
          upstream.socket.destroy();
          return;
        }
        const { host } = parseHostPort(authority);
        const requestHead = upgradeHead(req, path, { [L5D_CLIENT_ID]: undefined, ...(net.isIP(host) ? {} : { [L5D_DST_CANONICAL]: authority }) });
        pipeUpgrade(socket, upstream.socket, requestHead, head, { idleTimeoutMs: options.idleTimeoutMs, onStatus: (status) => record(status === undefined ? { error: "stream_reset" } : { status }) });
      },
      (error: unknown) => {
        const code = error instanceof ProxyError ? error.code : "ERR_CONNECT_FAILED";
        const status = errorStatus(code);
        record({ status, error: errorLabel(error) });
        const message = (error as Error).message;
        socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n${L5D_PROXY_ERROR}: ${code}\r\ncontent-length: ${Buffer.byteLength(message)}\r\nconnection: close\r\n\r\n${message}`);
      },
    );
  };

  // Application connections already detected as HTTP: one parser for all, each socket's authority beside it.
  const routed = new WeakMap<net.Socket, string>();
  const http1Server = http.createServer({ keepAlive: true, noDelay: true, maxHeaderSize: 16 * 1024 });
  http1Server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const authority = routed.get(req.socket);
    if (authority === undefined) {
      res.destroy();
      return;
    }
    forward(fromHttp1(req), http1Sink(res), authority);
  });
  http1Server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const authority = routed.get(socket);
    if (authority === undefined) socket.destroy();
    else upgrade(req, socket, head, authority, fromHttp1(req).path);
  });
  http1Server.on("clientError", (_error: Error, socket: net.Socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    else socket.destroy();
  });
  http1Server.headersTimeout = 30_000;
  http1Server.requestTimeout = 0;
  // A client that half-closes after its request still gets the answer (node's default aborts it).
  (http1Server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  http1Server.keepAliveTimeout = options.idleTimeoutMs;

  return {
    serve(socket, kind, authority) {
      if (kind === "http1") {
        routed.set(socket, authority);
        http1Server.emit("connection", socket);
        socket.resume();
        return;
      }
      const session = http2.performServerHandshake(h2Transport(socket));
      session.on("error", () => socket.destroy());
      session.on("stream", (stream, headers) => forward(fromHttp2(stream, headers), http2Sink(stream), authority));
      socket.once("close", () => session.destroy());
    },
    forward,
    upgrade,
    sessions: () => pools.sessions(),
    close: () => {
      offCredentials();
      pools.close();
    },
  };
}
