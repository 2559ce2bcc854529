import type { Http2SecureServer, Http2Server, ServerHttp2Session } from "node:http2";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Server as GrpcServer, ServerCredentials } from "@grpc/grpc-js";
import { Counter } from "prom-client";
import type { Registry } from "prom-client";
import { ConfigError } from "./errors.ts";

/** Time bounds on every connection to a meshtls gRPC server, in milliseconds; every field is optional. */
export interface GrpcConnectionTimeouts {
  /**
   * Time from accepting a connection to receiving the client's HTTP/2 preface and SETTINGS frame (the TLS
   * handshake included); a connection still short of it is closed. Default 10000.
   */
  handshakeTimeoutMs?: number;
  /** Once the handshake is done, the server sends a PING this long after the last one was answered. Default 30000. */
  pingIntervalMs?: number;
  /** A PING not answered this long after it was sent closes the connection. Default 10000. */
  pingTimeoutMs?: number;
}

/** The bounds used when none are given (see {@link GrpcConnectionTimeouts}): a stalled connection is closed within 40 s of its handshake. */
export const GRPC_CONNECTION_TIMEOUTS: Readonly<Required<GrpcConnectionTimeouts>> = Object.freeze({
  handshakeTimeoutMs: 10_000,
  pingIntervalMs: 30_000,
  pingTimeoutMs: 10_000,
});

/** Why a gRPC connection was closed by a bound (`grpc_connections_closed_total{reason}`). */
export type GrpcConnectionCloseReason = "handshake_timeout" | "ping_timeout";

export interface GrpcConnectionLimitsOptions extends GrpcConnectionTimeouts {
  /**
   * Counts the connections closed by these bounds as `grpc_connections_closed_total{listener,reason}`
   * (registered on first use: several servers of one process share it). Default: not counted.
   */
  metricsRegistry?: Registry;
  /** The `listener` label: which of the process's gRPC servers this is (`identity`, `destination`, `policy`). Default `grpc`. */
  listener?: string;
  /**
   * Serve HTTP/2 on a TLS connection whose client offered no ALPN at all, as Linkerd's proxy does on its
   * identity, destination and policy connections (linkerd2-proxy `linkerd/tls/src/client.rs`). Node's HTTP/2
   * server would otherwise answer such a client with an HTTP/1.0 403 and close. A client that offered ALPN
   * protocols without `h2` is still refused in the handshake; the TLS checks (version, client certificate)
   * are the same either way. Default true.
   */
  acceptWithoutAlpn?: boolean;
}

type Http2ServerFactory = (credentials: ServerCredentials) => Http2Server | Http2SecureServer;
type CloseCounter = (reason: GrpcConnectionCloseReason) => void;

/**
 * Bounds the connections to a grpc-js `server` in time, the one place where meshtls reaches into the HTTP/2
 * servers grpc-js creates. Call before `bindAsync`.
 *
 * - A connection that has not completed its TLS handshake (TLS credentials) and sent the HTTP/2 preface and
 *   SETTINGS within `handshakeTimeoutMs` of being accepted is closed. Without it a client trickling a
 *   ClientHello holds a connection for node's 120 s TLS handshake timeout, and one trickling the preface for ever.
 * - After that, the server PINGs the client every `pingIntervalMs` and closes the connection when an answer
 *   takes longer than `pingTimeoutMs`. Node's HTTP/2 server has no header timeout (`headersTimeout` is
 *   HTTP/1's), and grpc-js only times a call once its HEADERS are complete: a client trickling a HEADERS frame,
 *   or its CONTINUATION frames, would hold the connection until the idle limit. It cannot answer a PING in the
 *   middle of a frame or of a header block (a PING there is a protocol error), so it is cut within
 *   `pingIntervalMs + pingTimeoutMs`; so is a dead or silent peer. This replaces grpc-js's own keepalive
 *   (`grpc.keepalive_time_ms`), which does the same but cannot be counted: leave that unset.
 * - With `acceptWithoutAlpn` (the default), clients that offer no ALPN, such as Linkerd's proxy, are served.
 *
 * grpc-js builds its HTTP/2 servers itself and exposes neither them nor a connection hook, so this wraps the one
 * method that creates them, `createHttp2Server` (grpc-js 1.10 to 1.14); everything else is node's public API.
 * It throws if that method is missing, so that a grpc-js upgrade that moves it fails at start, not open.
 */
export function limitGrpcConnections(server: GrpcServer, options: GrpcConnectionLimitsOptions = {}): void {
  const timeouts = resolveTimeouts(options);
  const acceptWithoutAlpn = options.acceptWithoutAlpn ?? true;
  const count = closeCounter(options.metricsRegistry, options.listener ?? "grpc");
  const internals = server as unknown as { createHttp2Server?: Http2ServerFactory };
  const create = internals.createHttp2Server;
  if (typeof create !== "function") {
    throw new TypeError("this @grpc/grpc-js has no Server.createHttp2Server: the gRPC connection limits cannot be installed (see @meshtls/runtime's limitGrpcConnections)");
  }
  internals.createHttp2Server = function (credentials) {
    const http2Server = create.call(this, credentials);
    limitHandshakes(http2Server, timeouts.handshakeTimeoutMs, count);
    pingClients(http2Server, timeouts, count);
    if (acceptWithoutAlpn) treatNoAlpnAsH2(http2Server);
    return http2Server;
  };
}

function resolveTimeouts(options: GrpcConnectionTimeouts): Required<GrpcConnectionTimeouts> {
  const resolved = {
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? GRPC_CONNECTION_TIMEOUTS.handshakeTimeoutMs,
    pingIntervalMs: options.pingIntervalMs ?? GRPC_CONNECTION_TIMEOUTS.pingIntervalMs,
    pingTimeoutMs: options.pingTimeoutMs ?? GRPC_CONNECTION_TIMEOUTS.pingTimeoutMs,
  };
  for (const [key, value] of Object.entries(resolved)) {
    if (!Number.isSafeInteger(value) || value < 1) throw new ConfigError(`${key} must be a whole number ≥ 1 (got ${String(value)})`);
  }
  return resolved;
}

const CLOSED_METRIC = "grpc_connections_closed_total";

/** Increments the registry's `grpc_connections_closed_total` for `listener` (both reasons start at 0); nothing without a registry. */
function closeCounter(registry: Registry | undefined, listener: string): CloseCounter {
  if (registry === undefined) return () => undefined;
  const existing = registry.getSingleMetric(CLOSED_METRIC);
  const counter =
    existing instanceof Counter
      ? (existing as Counter<"listener" | "reason">)
      : new Counter({
          name: CLOSED_METRIC,
          help: "gRPC connections closed by a time bound, by listener and reason (handshake_timeout, ping_timeout).",
          labelNames: ["listener", "reason"],
          registers: [registry],
        });
  const reasons: GrpcConnectionCloseReason[] = ["handshake_timeout", "ping_timeout"];
  for (const reason of reasons) counter.inc({ listener, reason }, 0);
  return (reason) => counter.inc({ listener, reason });
}

/** A connection's remote address and port: the same for its TCP socket, its TLS socket and its HTTP/2 session's socket. */
function peerKey(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string | undefined {
  return socket.remoteAddress === undefined || socket.remotePort === undefined ? undefined : `${socket.remoteAddress} ${socket.remotePort}`;
}

function limitHandshakes(http2Server: Http2Server | Http2SecureServer, timeoutMs: number, count: CloseCounter): void {
  // A timer per accepted TCP connection, keyed by its remote address and port (one live connection each): the
  // TLS and HTTP/2 layers above it only ever show their own socket objects.
  const pending = new Map<string, NodeJS.Timeout>();
  const settled = (key: string): void => {
    clearTimeout(pending.get(key));
    pending.delete(key);
  };
  http2Server.on("connection", (socket: Socket) => {
    const key = peerKey(socket);
    if (key === undefined) {
      // Gone already (or refused by grpc-js before its credentials loaded).
      socket.destroy();
      return;
    }
    const timer = setTimeout(() => {
      pending.delete(key);
      count("handshake_timeout");
      socket.destroy();
    }, timeoutMs);
    timer.unref();
    pending.set(key, timer);
    socket.once("close", () => {
      if (pending.get(key) === timer) settled(key);
    });
  });
  // A plaintext session is created inside node's own "connection" listener, before the one above: the key is
  // only looked up when the client's SETTINGS arrive, later.
  http2Server.on("session", (session: ServerHttp2Session) => {
    const key = peerKey(session.socket);
    if (key !== undefined) session.once("remoteSettings", () => settled(key));
  });
}

/** From the client's SETTINGS on, one PING in flight per session: sent `pingIntervalMs` after the last answer, the session destroyed if unanswered after `pingTimeoutMs`. */
function pingClients(http2Server: Http2Server | Http2SecureServer, timeouts: Required<GrpcConnectionTimeouts>, count: CloseCounter): void {
  http2Server.on("session", (session: ServerHttp2Session) => {
    let timer: NodeJS.Timeout | undefined;
    const schedule = (): void => {
      timer = setTimeout(ping, timeouts.pingIntervalMs);
      timer.unref();
    };
    const ping = (): void => {
      if (session.destroyed || session.closed) return;
      let sent = false;
      try {
        sent = session.ping((error) => {
          clearTimeout(timer);
          // An error means the session is closing anyway.
          if (error === null) schedule();
        });
      } catch {
        // Thrown once the session is being destroyed: nothing left to bound.
      }
      if (!sent) return;
      timer = setTimeout(() => {
        count("ping_timeout");
        session.destroy();
      }, timeouts.pingTimeoutMs);
      timer.unref();
    };
    session.once("remoteSettings", schedule);
    session.once("close", () => clearTimeout(timer));
  });
}

/**
 * Node's HTTP/2 secure server reads `alpnProtocol` on each TLS connection and hands one without ALPN to its
 * `unknownProtocol` path (a 403 and a close). A listener placed before Node's own marks a connection whose
 * client offered no ALPN (`false`) as `h2`, so Node opens an HTTP/2 session on it as on any other: the client
 * sends the HTTP/2 preface either way. `null` (no TLS) and a negotiated protocol are left alone.
 */
function treatNoAlpnAsH2(http2Server: Http2Server | Http2SecureServer): void {
  http2Server.prependListener("secureConnection", (socket: TLSSocket) => {
    if (socket.alpnProtocol === false) socket.alpnProtocol = "h2";
  });
}
