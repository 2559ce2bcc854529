import { METHODS } from "node:http";
import type { Duplex } from "node:stream";

/** The HTTP/2 connection preface (RFC 9113 §3.4): a client with prior knowledge sends it first. */
export const H2_PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/** What a connection's first bytes say about its protocol. */
export type HttpDetection =
  | { kind: "http1" }
  | { kind: "h2" }
  /**
   * Forwarded as bytes: `not_http` (the first line is not HTTP/1.x nor the
   * preface), `timeout` (the client said nothing in time: a server-first
   * protocol), `server_first` (the server spoke first), `too_large` (no line
   * end within the bound).
   */
  | { kind: "opaque"; reason: "not_http" | "timeout" | "server_first" | "too_large" }
  | { kind: "closed" };

/** Options of {@link detectHttp}. */
export interface DetectHttpOptions {
  socket: Duplex;
  /** Give up and call the connection opaque after this long without a verdict. Default 10000. */
  timeoutMs?: number;
  /** Bytes read at most looking for the request line. Default 8192. */
  maxBytes?: number;
  /** Resolves when the server side spoke first: detection stops at once as `server_first`. */
  serverFirst?: Promise<unknown>;
}

const REQUEST_LINE = /^([A-Z-]+) [^ \r\n]+ HTTP\/1\.[01]\r?\n/;
/** node's parser takes these methods only: a first word that cannot become one is not HTTP (a short client-first message must not wait). */
const KNOWN_METHODS = new Set(METHODS);
const couldBeMethod = (word: string): boolean => METHODS.some((m) => m.startsWith(word));

/** Classifies buffered bytes: a verdict, or `undefined` when more bytes may decide. */
export function classifyHttp(bytes: Buffer, maxBytes: number): HttpDetection | undefined {
  const text = bytes.toString("latin1", 0, Math.min(bytes.length, maxBytes));
  if (text.startsWith(H2_PREFACE)) return { kind: "h2" };
  if (H2_PREFACE.startsWith(text)) return undefined;
  const newline = text.indexOf("\n");
  const space = text.indexOf(" ");
  if (space < 0 ? !couldBeMethod(text) : !KNOWN_METHODS.has(text.slice(0, space))) return { kind: "opaque", reason: "not_http" };
  if (newline >= 0) {
    const line = REQUEST_LINE.exec(text.slice(0, newline + 1));
    return line !== null ? { kind: "http1" } : { kind: "opaque", reason: "not_http" };
  }
  return bytes.length >= maxBytes ? { kind: "opaque", reason: "too_large" } : undefined;
}

/**
 * Reads a connection's first bytes until they are an HTTP/1.x request line,
 * the HTTP/2 preface, or clearly neither, within `timeoutMs` and `maxBytes`;
 * then replays them into the socket. Never refuses: what is not HTTP is
 * forwarded as it is, and a client that stays silent (SMTP, MySQL: the server
 * speaks first) is opaque once the timeout passes or once `serverFirst` resolves.
 */
export function detectHttp(options: DetectHttpOptions): Promise<HttpDetection> {
  const { socket } = options;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxBytes = options.maxBytes ?? 8192;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (result: HttpDetection): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      socket.pause();
      if (chunks.length > 0) socket.unshift(Buffer.concat(chunks));
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      const verdict = classifyHttp(chunks.length === 1 ? chunk : Buffer.concat(chunks), maxBytes);
      if (verdict !== undefined) finish(verdict);
    };
    const onEnd = (): void => finish(chunks.length === 0 ? { kind: "closed" } : { kind: "opaque", reason: "not_http" });
    const timer = setTimeout(() => finish({ kind: "opaque", reason: "timeout" }), timeoutMs);
    options.serverFirst?.then(() => finish({ kind: "opaque", reason: "server_first" }), () => undefined);
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
    socket.resume();
  });
}
