import http from "node:http";
import type net from "node:net";
import { formatHostPort } from "../address.js";
import { ProxyError } from "../errors.js";
import type { ConnectWorkload } from "../inbound/connect-workload.js";
import type { InboundTarget } from "../inbound/target.js";
import type { Logger } from "../logger.js";
import type { HttpOutcome, ProxyMetrics } from "../metrics.js";
import type { AuthorizeDecision } from "../policy.js";
import type { Headers } from "./headers.js";
import { headerValue, L5D_CLIENT_ID, L5D_ORIG_PROTO } from "./headers.js";
import type { ProxiedRequest, ProxiedResponse, ResponseSink } from "./message.js";
import { fromHttp1, fromHttp2, http1Sink, http2Sink, sendHttp1, sendHttp2 } from "./message.js";
import { createConnectionPools, h2Transport } from "./pools.js";
import { pipeUpgrade, upgradeHead } from "./upgrade.js";
import http2 from "node:http2";

/** Decides one request under the port's current policy; undefined when the port is not under policy. */
export type Authorize = () => AuthorizeDecision | undefined;

/** Options of {@link createInboundHttp}. */
export interface CreateInboundHttpOptions {
  metrics: ProxyMetrics;
  logger: Logger;
  /** The inbound's connect seam: each pooled connection to the workload is one call. */
  connect: ConnectWorkload;
  idleTimeoutMs: number;
  /** Idle HTTP/1 connections to the workload close after this long. Default 3000. */
  poolIdleTimeoutMs?: number;
  /** Idle HTTP/1 connections kept to the workload. Default 10000. */
  maxIdle?: number;
}

/** The inbound HTTP layer: identity header, HTTP/2 downgrade, pooled connections to the workload, per-request metrics. */
export interface InboundHttp {
  /**
   * Serves the requests of an authorized, detected connection. `authorize`
   * decides each request under the port's policy now (undefined: not
   * authorized, a skipped port); a denied request gets 403 with `l5d-proxy-error`.
   */
  serve(socket: net.Socket, target: InboundTarget, kind: "http1" | "h2", authorize: Authorize): void;
  /**
   * Asks the peers to go elsewhere before a shutdown, without cutting a request: idle HTTP/1 connections
   * close now, every later HTTP/1 response says `connection: close`, and HTTP/2 sessions get GOAWAY
   * (their open streams finish).
   */
  drain(): void;
  /**
   * Ends one connection now, served here or not: an HTTP/2 session sends
   * GOAWAY (NO_ERROR) and is destroyed, its streams in flight reset, before
   * the socket closes; any other socket is destroyed. For an identity that
   * stopped being valid, so nothing is waited for.
   */
  end(socket: net.Socket): void;
  close(): void;
}

const grpcStatusOf = (response: ProxiedResponse): number | undefined => {
  const value = headerValue(response.trailers() ?? {}, "grpc-status") ?? headerValue(response.headers, "grpc-status");
  return value === undefined || !/^\d+$/.test(value) ? undefined : Number(value);
};

/** `l5d-client-id` is the verified client identity, or absent: never what the client wrote. */
function setClientId(headers: Headers, target: InboundTarget): void {
  if (target.clientId === undefined) delete headers[L5D_CLIENT_ID];
  else headers[L5D_CLIENT_ID] = target.clientId;
}

// The response headers a downgraded request adds (read only, shared by every response).
const NO_HEADERS: Headers = {};
const DOWNGRADED_1_0: Headers = { [L5D_ORIG_PROTO]: "HTTP/1.0" };
const DOWNGRADED_1_1: Headers = { [L5D_ORIG_PROTO]: "HTTP/1.1" };

/** One served connection: its target, its per-request authorization, and the workload address it goes to. */
interface Connection {
  target: InboundTarget;
  authorize: Authorize;
  targetAddr: string;
}

/** Creates the inbound HTTP layer. */
export function createInboundHttp(options: CreateInboundHttpOptions): InboundHttp {
  const { metrics, logger } = options;
  const targets = new Map<string, InboundTarget>();
  const pools = createConnectionPools({
    async openSocket(key) {
      const target = targets.get(key);
      if (target === undefined) throw new ProxyError("ERR_CONNECT_FAILED", `no workload ${key}`);
      const socket = await options.connect(target);
      metrics.trackConnection(socket, { direction: "inbound", peer: "dst", targetAddr: key, tls: { tls: "no_identity", reason: "loopback" } });
      return socket;
    },
    ...(options.poolIdleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.poolIdleTimeoutMs }),
    ...(options.maxIdle === undefined ? {} : { maxIdlePerDestination: options.maxIdle }),
  });

  const forward = (request: ProxiedRequest, sink: ResponseSink, connection: Connection): void => {
    const { target, authorize, targetAddr } = connection;
    if (targets.get(targetAddr) !== target) targets.set(targetAddr, target);
    const record = metrics.recordHttpRequest({ direction: "inbound", authority: request.authority, targetAddr, tls: target.tls, method: request.method, path: request.path });
    const decision = authorize();
    if (decision !== undefined) {
      metrics.recordHttpAuthz(decision, targetAddr);
      if (!decision.allow) {
        record({ status: 403, error: "policy_denied" });
        request.body.resume();
        sink.fail(403, "ERR_POLICY_DENIED", `denied by the policy of port ${target.port} (${decision.reason})`);
        return;
      }
    }
    setClientId(request.headers, target);
    // Downgrade: an HTTP/1 request the peer proxy carried over HTTP/2 goes to the workload as HTTP/1.
    const origProto = headerValue(request.headers, L5D_ORIG_PROTO);
    delete request.headers[L5D_ORIG_PROTO];
    const h2ToWorkload = request.version === "2" && origProto === undefined;
    const authority = request.authority === "" ? targetAddr : request.authority;
    const sending = h2ToWorkload ? pools.http2(targetAddr).then((session) => sendHttp2(request, { session, authority })) : sendHttp1(request, { agent: pools.http1(targetAddr), authority });
    sending.then(
      (response) => {
        sink.onAbort(() => response.body.destroy());
        sink.send(response).then(
          () => {
            const grpcStatus = grpcStatusOf(response);
            const outcome: HttpOutcome = { status: response.status, ...(grpcStatus === undefined ? {} : { grpcStatus }) };
            record(outcome);
          },
          () => record({ status: response.status, error: "stream_reset" }),
        );
      },
      (error: unknown) => {
        const code = error instanceof ProxyError ? error.code : "ERR_CONNECT_FAILED";
        const status = code === "ERR_CONNECT_TIMEOUT" ? 504 : 502;
        logger.info({ code, err: (error as Error).message, workload: targetAddr }, "inbound HTTP request failed");
        record({ status, error: code.replace(/^ERR_/, "").toLowerCase() });
        request.body.resume();
        sink.fail(status, code, (error as Error).message);
      },
    );
  };

  const connections = new WeakMap<net.Socket, Connection>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const h2Sessions = new WeakMap<net.Socket, http2.ServerHttp2Session>();
  /** HTTP/1 connections between two requests (the server is never listening, so node does not track them). */
  const idle = new Set<net.Socket>();
  /** HTTP/1 responses in progress, by connection. */
  const busy = new Map<net.Socket, http.ServerResponse>();
  let draining = false;
  const http1Server = http.createServer({ keepAlive: true, noDelay: true, maxHeaderSize: 16 * 1024 });
  http1Server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const connection = connections.get(req.socket);
    // While draining, the peer learns from this response not to reuse the connection (no race with its next request).
    if (draining) res.shouldKeepAlive = false;
    idle.delete(req.socket);
    busy.set(req.socket, res);
    res.once("close", () => {
      if (busy.get(req.socket) === res) busy.delete(req.socket);
      if (req.socket.destroyed) return;
      // A response whose head went out before the drain began did not say `connection: close`: the connection goes now.
      if (draining) req.socket.destroy();
      else idle.add(req.socket);
    });
    if (connection === undefined) res.destroy();
    else forward(fromHttp1(req), http1Sink(res), connection);
  });
  // Upgrade (WebSocket): the head goes to the workload as HTTP/1, then the bytes.
  http1Server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const connection = connections.get(socket);
    if (connection === undefined) {
      socket.destroy();
      return;
    }
    socket.on("error", () => undefined);
    const { target, targetAddr } = connection;
    const record = metrics.recordHttpRequest({ direction: "inbound", authority: req.headers.host ?? "", targetAddr, tls: target.tls, method: req.method ?? "GET", path: req.url ?? "/" });
    const decision = connection.authorize();
    if (decision !== undefined) {
      metrics.recordHttpAuthz(decision, targetAddr);
      if (!decision.allow) {
        record({ status: 403, error: "policy_denied" });
        socket.end("HTTP/1.1 403 Forbidden\r\nl5d-proxy-error: ERR_POLICY_DENIED\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
      }
    }
    options.connect(target).then(
      (upstream) => {
        metrics.trackConnection(upstream, { direction: "inbound", peer: "dst", targetAddr, tls: { tls: "no_identity", reason: "loopback" } });
        pipeUpgrade(socket, upstream, upgradeHead(req, req.url ?? "/", { [L5D_CLIENT_ID]: target.clientId, [L5D_ORIG_PROTO]: undefined }), head, {
          idleTimeoutMs: options.idleTimeoutMs,
          onStatus: (status) => record(status === undefined ? { error: "stream_reset" } : { status }),
        });
      },
      (error: unknown) => {
        record({ status: 502, error: "connect_failed" });
        const message = (error as Error).message;
        socket.end(`HTTP/1.1 502 Bad Gateway\r\nl5d-proxy-error: ERR_CONNECT_FAILED\r\ncontent-length: ${Buffer.byteLength(message)}\r\nconnection: close\r\n\r\n${message}`);
      },
    );
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
    serve(socket, target, kind, authorize) {
      const connection: Connection = { target, authorize, targetAddr: formatHostPort(target.workload.host, target.workload.port) };
      if (kind === "http1") {
        connections.set(socket, connection);
        socket.once("close", () => idle.delete(socket));
        http1Server.emit("connection", socket);
        socket.resume();
        return;
      }
      const session = http2.performServerHandshake(h2Transport(socket));
      h2Sessions.set(socket, session);
      session.on("error", () => socket.destroy());
      if (draining) session.close();
      sessions.add(session);
      session.once("close", () => sessions.delete(session));
      session.on("stream", (stream, headers) => {
        const origProto = headerValue(headers as Headers, L5D_ORIG_PROTO);
        // The response of a downgraded request says which HTTP/1 version it had, for the peer to restore.
        const extra = origProto === undefined ? NO_HEADERS : origProto.startsWith("HTTP/1.0") ? DOWNGRADED_1_0 : DOWNGRADED_1_1;
        forward(fromHttp2(stream, headers), http2Sink(stream, extra), connection);
      });
      socket.once("close", () => session.destroy());
    },
    drain() {
      draining = true;
      for (const socket of idle) socket.destroy();
      for (const res of busy.values()) if (!res.headersSent) res.shouldKeepAlive = false;
      // close() sends GOAWAY and ends the session once its open streams are done.
      for (const session of sessions) session.close();
    },
    end(socket) {
      const session = h2Sessions.get(socket);
      if (session === undefined) {
        socket.destroy();
        return;
      }
      if (!session.destroyed) {
        session.goaway(http2.constants.NGHTTP2_NO_ERROR);
        session.destroy();
      }
      // The GOAWAY is written before the close; a peer that does not read it is cut a second later.
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    },
    close: () => pools.close(),
  };
}
