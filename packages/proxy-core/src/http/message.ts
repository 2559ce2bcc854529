import http from "node:http";
import http2 from "node:http2";
import type { Readable } from "node:stream";
import type { Headers } from "./headers.js";
import { endToEndHeaders, L5D_PROXY_ERROR } from "./headers.js";

/** The HTTP version a request arrived with. */
export type HttpVersion = "1.0" | "1.1" | "2";

/** One request as the proxy carries it, whichever version it came in and goes out as. */
export interface ProxiedRequest {
  method: string;
  /** Origin-form path and query (`/a?b`), or `*`. */
  path: string;
  /** `:authority`, else `Host`; "" when neither. */
  authority: string;
  /** End-to-end fields only (see `endToEndHeaders`). */
  headers: Headers;
  version: HttpVersion;
  /** The HTTP/1 request line had an absolute URI (`GET http://host/ HTTP/1.1`). */
  absoluteForm: boolean;
  /** The head ends the request (HTTP/1: no length and no transfer coding; HTTP/2: END_STREAM on the headers): sent on with no body. */
  bodyless: boolean;
  body: Readable;
}

/** A response on its way back, whichever version it came in as. */
export interface ProxiedResponse {
  status: number;
  headers: Headers;
  body: Readable;
  /** The trailers, once `body` has ended (gRPC's `grpc-status`). */
  trailers(): Headers | undefined;
  /** The head ended the stream (a gRPC trailers-only response): sent on as such, with no body and no trailers. */
  endAfterHeaders?: boolean;
  /** Trailers may follow the body (HTTP/2 without a `grpc-status` in the head; HTTP/1 announcing `Trailer`). */
  mayHaveTrailers?: boolean;
}

/** Where a response goes: the client's HTTP/1 or HTTP/2 stream. */
export interface ResponseSink {
  readonly version: HttpVersion;
  /** Whether the response head was already sent. */
  headersSent(): boolean;
  /** Sends the response; resolves once its body (and trailers) went out, rejects when the client went away first. */
  send(response: ProxiedResponse): Promise<void>;
  /** Ends the exchange with a proxy-made error response (`l5d-proxy-error: code`), or resets it when the head went out. */
  fail(status: number, code: string, message: string): void;
  /** Called once when the client goes away before the response completed. */
  onAbort(listener: () => void): void;
}

/** The request an HTTP/1 server received. */
export function fromHttp1(req: http.IncomingMessage): ProxiedRequest {
  const url = req.url ?? "/";
  const absoluteForm = /^[a-z][a-z0-9+.-]*:\/\//i.test(url);
  let path = url;
  let authority = req.headers.host ?? "";
  if (absoluteForm) {
    const parsed = new URL(url);
    path = `${parsed.pathname}${parsed.search}`;
    authority = parsed.host;
  }
  // RFC 9112 §6.3: a request without Content-Length and Transfer-Encoding has no body.
  const { "content-length": length, "transfer-encoding": coding } = req.headers;
  const bodyless = coding === undefined && (length === undefined || length === "0");
  return { method: req.method ?? "GET", path, authority, headers: endToEndHeaders(req.headers), version: req.httpVersion === "1.0" ? "1.0" : "1.1", absoluteForm, bodyless, body: req };
}

/** The request an HTTP/2 server stream received. */
export function fromHttp2(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): ProxiedRequest {
  return {
    method: String(headers[":method"] ?? "GET"),
    path: String(headers[":path"] ?? "/"),
    authority: String(headers[":authority"] ?? headers.host ?? ""),
    headers: endToEndHeaders(headers),
    version: "2",
    absoluteForm: false,
    bodyless: stream.endAfterHeaders,
    body: stream,
  };
}

/** The response sink of an HTTP/1 server exchange. */
export function http1Sink(res: http.ServerResponse): ResponseSink {
  return {
    version: res.req.httpVersion === "1.0" ? "1.0" : "1.1",
    headersSent: () => res.headersSent,
    send(response) {
      return new Promise((resolve, reject) => {
        const { headers } = response;
        // An HTTP/1.0 client cannot read chunked bodies: without a length, node closes after the body.
        res.writeHead(response.status, headers);
        response.body.on("error", (error) => {
          res.destroy();
          reject(error);
        });
        res.once("close", () => (res.writableFinished ? resolve() : reject(new Error("the client went away"))));
        response.body.once("close", () => {
          if (!response.body.readableEnded) {
            res.destroy();
            reject(new Error("the upstream response was cut short"));
          }
        });
        response.body.pipe(res, { end: false });
        response.body.once("end", () => {
          const trailers = response.trailers();
          if (trailers !== undefined && Object.keys(trailers).length > 0 && res.chunkedEncoding) res.addTrailers(trailers);
          res.end();
        });
      });
    },
    fail(status, code, message) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const body = `${message}\n`;
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8", [L5D_PROXY_ERROR]: code, "content-length": Buffer.byteLength(body) });
      res.end(body);
    },
    onAbort(listener) {
      res.once("close", () => {
        if (!res.writableFinished) listener();
      });
    },
  };
}

/** The response sink of an HTTP/2 server stream; `extra` headers are added to every response (the downgrade's `l5d-orig-proto`). */
export function http2Sink(stream: http2.ServerHttp2Stream, extra: Headers = {}): ResponseSink {
  return {
    version: "2",
    headersSent: () => stream.headersSent,
    send(response) {
      return new Promise((resolve, reject) => {
        if (stream.destroyed || stream.closed) {
          response.body.destroy();
          reject(new Error("the client went away"));
          return;
        }
        if (response.endAfterHeaders === true) {
          stream.respond({ ":status": response.status, ...response.headers, ...extra }, { endStream: true });
          response.body.resume();
          stream.once("close", () => (stream.rstCode === 0 ? resolve() : reject(new Error(`stream reset (${stream.rstCode})`))));
          return;
        }
        // Trailers only where they may come: an empty trailers frame would hide a status sent in the head.
        const waitForTrailers = response.mayHaveTrailers === true;
        stream.respond({ ":status": response.status, ...response.headers, ...extra }, { waitForTrailers });
        if (waitForTrailers) {
          stream.once("wantTrailers", () => {
            const trailers = response.trailers();
            // No trailers came after all: an empty trailers frame ends the stream (node's close() would reset it).
            stream.sendTrailers(trailers ?? {});
          });
        }
        response.body.on("error", (error) => {
          stream.close(0x2);
          reject(error);
        });
        stream.once("close", () => (stream.rstCode === 0 ? resolve() : reject(new Error(`stream reset (${stream.rstCode})`))));
        response.body.once("close", () => {
          if (!response.body.readableEnded) {
            stream.close(0x2);
            reject(new Error("the upstream response was cut short"));
          }
        });
        response.body.pipe(stream);
      });
    },
    fail(status, code, message) {
      if (stream.destroyed || stream.closed) return;
      if (stream.headersSent) {
        stream.close(0x2);
        return;
      }
      const body = `${message}\n`;
      stream.respond({ ":status": status, "content-type": "text/plain; charset=utf-8", [L5D_PROXY_ERROR]: code, "content-length": Buffer.byteLength(body), ...extra });
      stream.end(body);
    },
    onAbort(listener) {
      stream.once("close", () => {
        if (stream.rstCode !== 0) listener();
      });
    },
  };
}

/** What a failed send says about where the request got: filled in by `sendHttp1` and `sendHttp2` before they reject. */
export interface SendAttempt {
  /** HTTP/1: the request went on a kept-alive connection an earlier request opened (the peer may have closed it unread). */
  reusedConnection?: boolean;
  /** HTTP/2: the session took no new stream, or the peer refused the stream unprocessed (REFUSED_STREAM, or beyond its GOAWAY). */
  refusedStream?: boolean;
}

/** Sends `request` on an HTTP/1 connection from `agent`; resolves with the response head. Rejects with the connect error before anything was sent. */
export function sendHttp1(request: ProxiedRequest, options: { agent: http.Agent; authority: string; headers?: Headers; attempt?: SendAttempt }): Promise<ProxiedResponse> {
  return new Promise((resolve, reject) => {
    const upstream = http.request({
      agent: options.agent,
      method: request.method,
      path: request.path,
      setHost: false,
      headers: { host: options.authority, ...request.headers, ...options.headers },
    });
    const failed = (error: Error): void => {
      if (options.attempt !== undefined) options.attempt.reusedConnection = upstream.reusedSocket;
      reject(error);
    };
    upstream.once("error", failed);
    if (request.bodyless) {
      request.body.resume();
      upstream.end();
    } else {
      // The body is read only once a connection holds it: a failed connect leaves it for another endpoint.
      upstream.once("socket", () => request.body.pipe(upstream));
    }
    upstream.once("response", (res) => {
      upstream.off("error", failed);
      upstream.on("error", (error) => res.destroy(error));
      resolve({
        status: res.statusCode ?? 502,
        headers: endToEndHeaders(res.headers),
        body: res,
        trailers: () => (Object.keys(res.trailers).length > 0 ? (res.trailers as Headers) : undefined),
        mayHaveTrailers: res.headers.trailer !== undefined,
      });
    });
  });
}

/** Sends `request` as an HTTP/2 stream on `session`; resolves with the response head. */
export function sendHttp2(request: ProxiedRequest, options: { session: http2.ClientHttp2Session; authority: string; headers?: Headers; attempt?: SendAttempt }): Promise<ProxiedResponse> {
  return new Promise((resolve, reject) => {
    let stream: http2.ClientHttp2Stream;
    try {
      // A bodyless request ends with its HEADERS frame (END_STREAM), rather than an empty DATA frame after it.
      stream = options.session.request({ ":method": request.method, ":path": request.path, ":authority": options.authority, ":scheme": "http", ...request.headers, ...options.headers }, { endStream: request.bodyless });
    } catch (error) {
      // A session closing (GOAWAY) or closed takes no new stream: nothing was sent.
      if (options.attempt !== undefined) options.attempt.refusedStream = true;
      reject(error as Error);
      return;
    }
    let trailers: Headers | undefined;
    stream.once("trailers", (received: http2.IncomingHttpHeaders) => {
      trailers = endToEndHeaders(received);
    });
    const failed = (error: Error): void => {
      if (options.attempt !== undefined) options.attempt.refusedStream = stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
      reject(error);
    };
    stream.once("error", failed);
    // Removed once the response came: every stream closes, and an Error (its stack) per request is not free.
    const closedEarly = (): void => failed(new Error(`stream closed before its response (${stream.rstCode})`));
    stream.once("close", closedEarly);
    stream.once("response", (headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader) => {
      stream.off("error", failed);
      stream.off("close", closedEarly);
      stream.on("error", () => undefined);
      resolve({
        status: Number(headers[":status"] ?? 502),
        headers: endToEndHeaders(headers),
        body: stream,
        trailers: () => trailers,
        // A head with grpc-status is gRPC's trailers-only response: it ends the stream (node may report its END_STREAM late).
        endAfterHeaders: stream.endAfterHeaders || headers["grpc-status"] !== undefined,
        mayHaveTrailers: !stream.endAfterHeaders && headers["grpc-status"] === undefined,
      });
    });
    if (request.bodyless) request.body.resume();
    else request.body.pipe(stream);
  });
}
