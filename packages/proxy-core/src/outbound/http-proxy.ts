import http from "node:http";
import type net from "node:net";
import { ProxyError } from "../errors.js";
import { createDirectRead, forwardStreams } from "../forward.js";
import type { Logger } from "../logger.js";
import type { ProxyMetrics } from "../metrics.js";
import { normalizeAuthority } from "./authority.js";
import type { ConnectOutbound } from "./connect.js";
import type { OutboundHttp } from "../http/outbound-http.js";
import { fromHttp1, http1Sink } from "../http/message.js";

/** Options of {@link createHttpProxyServer}. */
export interface CreateHttpProxyServerOptions {
  connect: ConnectOutbound;
  /** The HTTP layer absolute-URI requests go through. */
  http: OutboundHttp;
  metrics: ProxyMetrics;
  logger: Logger;
  idleTimeoutMs: number;
  maxConnections: number;
  /** Counts an accepted connection (open legs, drain). */
  track: (socket: net.Socket, targetAddr: string) => void;
}

const clientOf = (socket: net.Socket): { address: string; port: number } => ({ address: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 });

/**
 * The outbound HTTP proxy listener: CONNECT tunnels any TCP protocol through
 * the connect layer; absolute-URI requests go through the HTTP layer (pooled,
 * balanced per request, HTTP/2 between proxies); `Upgrade` requests tunnel. Request lines and headers are bounded
 * by node's 16 KiB (maxHeaderSize, said here so it stays).
 */
export function createHttpProxyServer(options: CreateHttpProxyServerOptions): http.Server {
  const { connect, logger, idleTimeoutMs, metrics } = options;
  const errorText = (error: unknown): { status: number; code: string; message: string } => {
    const code = error instanceof ProxyError ? error.code : "ERR_CONNECT_FAILED";
    const status = code === "ERR_ADDRESS_INVALID" ? 400 : code === "ERR_TARGET_FORBIDDEN" ? 403 : code === "ERR_DISCOVERY_TIMEOUT" || code === "ERR_CONNECT_TIMEOUT" ? 504 : 502;
    return { status, code, message: (error as Error).message };
  };

  const proxyServer = http.createServer({ keepAlive: true, noDelay: true, maxHeaderSize: 16 * 1024 });
  proxyServer.maxConnections = options.maxConnections;
  proxyServer.on("drop", () => metrics.recordRefused("outbound", "max_connections"));
  proxyServer.on("connection", (socket: net.Socket) => options.track(socket, "proxy"));
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
    const upstreamRead = createDirectRead();
    connect({ authority, listener: "proxy", client: clientOf(client) }, { onread: upstreamRead.onread }).then(
      (upstream) => {
        if (client.destroyed) {
          upstream.socket.destroy();
          return;
        }
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        if (head.length > 0) upstream.socket.write(head);
        // What the server said before this (a server that speaks first) follows the 200.
        forwardStreams(client, upstream.socket, { idleTimeoutMs, bRead: upstreamRead });
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
    // Per request: discovery, balancing, the endpoint's pool or mesh HTTP/2 session (outbound-http.ts).
    options.http.forward(fromHttp1(req), http1Sink(res), authority);
  }, (_req, res) => {
    if (res.headersSent) res.destroy();
    else res.writeHead(500, { "content-length": 0, connection: "close" }).end();
  }));
  proxyServer.on("upgrade", guarded("upgrade", (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    let url: URL;
    let authority: string;
    try {
      url = new URL(req.url ?? "");
      if (url.protocol !== "http:" && url.protocol !== "ws:") throw new ProxyError("ERR_ADDRESS_INVALID", `only http:// and ws:// absolute URIs are proxied, got ${url.protocol}`);
      authority = normalizeAuthority(url.host, 80);
    } catch (error) {
      const message = error instanceof ProxyError ? error.message : "the meshtls outbound proxy takes absolute-URI requests (http://host/path) and CONNECT";
      client.end(`HTTP/1.1 400 Bad Request\r\nl5d-proxy-error: ERR_ADDRESS_INVALID\r\ncontent-length: ${Buffer.byteLength(message)}\r\nconnection: close\r\n\r\n${message}`);
      return;
    }
    options.http.upgrade(req, client, head, authority, `${url.pathname}${url.search}`);
  }, (_req, client) => client.destroy()));
  proxyServer.on("clientError", (error: NodeJS.ErrnoException, socket: net.Socket) => {
    const status = error.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    else socket.destroy();
  });
  proxyServer.headersTimeout = 30_000;
  proxyServer.requestTimeout = 0;
  // An application's idle keep-alive connection lasts the idle timeout, as on the inbound and the routes (node's default is 5 s).
  proxyServer.keepAliveTimeout = idleTimeoutMs;

  return proxyServer;
}
