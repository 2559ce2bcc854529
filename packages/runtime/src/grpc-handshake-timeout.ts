import type { Http2SecureServer, Http2Server, ServerHttp2Session } from "node:http2";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Server as GrpcServer, ServerCredentials } from "@grpc/grpc-js";
import { ConfigError } from "./errors.ts";

/** The time a gRPC client has from its TCP connect to a complete HTTP/2 preface + SETTINGS, when none is given. */
export const GRPC_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface GrpcHandshakeTimeoutOptions {
  /**
   * Time from accepting a connection to receiving the client's HTTP/2 preface and SETTINGS frame (the TLS
   * handshake included), in milliseconds; a connection still short of it is closed. Default 10000.
   */
  handshakeTimeoutMs?: number;
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

/**
 * Hardens the HTTP/2 servers grpc-js creates for `server`, the one place where meshtls reaches into them.
 *
 * Closes every connection to `server` that has not completed its TLS handshake (TLS credentials) and sent the
 * HTTP/2 preface and SETTINGS within `handshakeTimeoutMs` of being accepted. Without it a client trickling a
 * ClientHello holds a connection for node's 120 s TLS handshake timeout, and one trickling the preface for ever
 * (grpc-js's idle and keepalive timers are not meant for it). With `acceptWithoutAlpn` (the default) it also
 * serves clients that offer no ALPN, such as Linkerd's proxy. Call before `bindAsync`.
 *
 * grpc-js builds its HTTP/2 servers itself and exposes neither them nor a connection hook, so this wraps the one
 * method that creates them, `createHttp2Server` (grpc-js 1.10 to 1.14); everything else is node's public API.
 * It throws if that method is missing, so that a grpc-js upgrade that moves it fails at start, not open.
 */
export function setGrpcHandshakeTimeout(server: GrpcServer, options: GrpcHandshakeTimeoutOptions = {}): void {
  const timeoutMs = options.handshakeTimeoutMs ?? GRPC_HANDSHAKE_TIMEOUT_MS;
  const acceptWithoutAlpn = options.acceptWithoutAlpn ?? true;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) throw new ConfigError(`handshakeTimeoutMs must be a whole number ≥ 1 (got ${String(timeoutMs)})`);
  const internals = server as unknown as { createHttp2Server?: Http2ServerFactory };
  const create = internals.createHttp2Server;
  if (typeof create !== "function") {
    throw new TypeError("this @grpc/grpc-js has no Server.createHttp2Server: the gRPC handshake timeout cannot be installed (see @meshtls/runtime's setGrpcHandshakeTimeout)");
  }
  internals.createHttp2Server = function (credentials) {
    const http2Server = create.call(this, credentials);
    limitHandshakes(http2Server, timeoutMs);
    if (acceptWithoutAlpn) treatNoAlpnAsH2(http2Server);
    return http2Server;
  };
}

/** A connection's remote address and port: the same for its TCP socket, its TLS socket and its HTTP/2 session's socket. */
function peerKey(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string | undefined {
  return socket.remoteAddress === undefined || socket.remotePort === undefined ? undefined : `${socket.remoteAddress} ${socket.remotePort}`;
}

function limitHandshakes(http2Server: Http2Server | Http2SecureServer, timeoutMs: number): void {
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
