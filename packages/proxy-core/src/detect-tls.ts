import type net from "node:net";
import { ProxyError } from "./errors.js";

/** What the first bytes of a connection say, before anything is forwarded. */
export type ClientHelloParse =
  | { kind: "need_more" }
  | { kind: "not_tls" }
  | { kind: "tls"; sni?: string; alpn: string[] };

/** The outcome of detection on a socket; the read bytes are replayed into it. */
export type Detection =
  | { kind: "tls"; sni?: string; alpn: string[]; bytesRead: number }
  | { kind: "plaintext"; bytesRead: number };

const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;

/** Largest TLS record fragment accepted (TLSCiphertext's bound, RFC 8446 §5.2). */
const MAX_RECORD_LENGTH = 16384 + 2048;

/** The big-endian 16-bit value at `at` (the caller checked the bounds). */
function u16(bytes: Uint8Array, at: number): number {
  return ((bytes[at] ?? 0) << 8) | (bytes[at + 1] ?? 0);
}

/** `bytes[start, end)` as a latin1 string, without a view or a copy of them. */
function latin1(bytes: Uint8Array, start: number, end: number): string {
  return Buffer.isBuffer(bytes) ? bytes.toString("latin1", start, end) : Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString("latin1");
}

/**
 * Parses the start of a connection as a TLS ClientHello (RFC 8446 §4.1.2),
 * possibly fragmented over several handshake records, and extracts SNI and
 * ALPN. Bytes that are not a TLS handshake record, or a ClientHello that does
 * not parse, are `not_tls`: the connection is then plaintext to policy.
 *
 * Read in place by offsets (no reader object or view per field, which cost
 * more per connection than the rest of detection), and in time linear in the
 * input however many records the hello spans.
 */
export function parseClientHello(input: Uint8Array): ClientHelloParse {
  // Record i's fragment is input[starts[i], starts[i] + lengths[i]); the handshake layer is their concatenation, read
  // in place while it is one fragment (as every client sends it) and joined once, when a hello over several records
  // is whole. Never joined record by record: a hello cut into 1-byte records, read a byte at a time, cost about a
  // minute of CPU per connection that way.
  const starts: number[] = [];
  const lengths: number[] = [];
  let length = 0;
  let bodyLength = -1;
  let at = 0;
  for (;;) {
    const left = input.length - at;
    if (left === 0) return { kind: "need_more" };
    if (input[at] !== RECORD_HANDSHAKE) return { kind: "not_tls" };
    if (left < 2) return { kind: "need_more" };
    if (input[at + 1] !== 3) return { kind: "not_tls" };
    if (left < 3) return { kind: "need_more" };
    if ((input[at + 2] ?? 0) > 4) return { kind: "not_tls" };
    if (left < 5) return { kind: "need_more" };
    const recordLength = u16(input, at + 3);
    if (recordLength === 0 || recordLength > MAX_RECORD_LENGTH) return { kind: "not_tls" };
    if (left - 5 < recordLength) return { kind: "need_more" };
    starts.push(at + 5);
    lengths.push(recordLength);
    length += recordLength;
    at += 5 + recordLength;
    if (bodyLength < 0 && length >= 4) {
      const byte = (index: number): number => handshakeByte(input, starts, lengths, index);
      if (byte(0) !== HANDSHAKE_CLIENT_HELLO) return { kind: "not_tls" };
      bodyLength = (byte(1) << 16) | (byte(2) << 8) | byte(3);
    }
    if (bodyLength >= 0 && length - 4 >= bodyLength) {
      const first = starts[0] ?? 0;
      if (starts.length === 1) return parseClientHelloBody(input, first + 4, first + 4 + bodyLength);
      const joined = Buffer.concat(starts.map((start, i) => input.subarray(start, start + (lengths[i] ?? 0))), length);
      return parseClientHelloBody(joined, 4, 4 + bodyLength);
    }
  }
}

/** Byte `index` of the handshake layer (the fragments' concatenation; `index` is below its length). */
function handshakeByte(input: Uint8Array, starts: readonly number[], lengths: readonly number[], index: number): number {
  for (const [i, start] of starts.entries()) {
    const fragmentLength = lengths[i] ?? 0;
    if (index < fragmentLength) return input[start + index] ?? 0;
    index -= fragmentLength;
  }
  return 0;
}

/** The ClientHello body at `bytes[at, end)`. */
function parseClientHelloBody(bytes: Uint8Array, at: number, end: number): ClientHelloParse {
  // legacy_version (3.x) and random.
  if (end - at < 2 + 32 || bytes[at] !== 3) return { kind: "not_tls" };
  at += 2 + 32;
  if (end - at < 1) return { kind: "not_tls" };
  const sessionIdLength = bytes[at] ?? 0;
  at += 1;
  if (sessionIdLength > 32 || end - at < sessionIdLength) return { kind: "not_tls" };
  at += sessionIdLength;
  if (end - at < 2) return { kind: "not_tls" };
  const suitesLength = u16(bytes, at);
  at += 2;
  if (suitesLength % 2 !== 0 || end - at < suitesLength) return { kind: "not_tls" };
  at += suitesLength;
  if (end - at < 1) return { kind: "not_tls" };
  const compressionLength = bytes[at] ?? 0;
  at += 1;
  if (end - at < compressionLength) return { kind: "not_tls" };
  at += compressionLength;
  const result: { kind: "tls"; sni?: string; alpn: string[] } = { kind: "tls", alpn: [] };
  if (at === end) return result;
  if (end - at < 2) return { kind: "not_tls" };
  const extensionsLength = u16(bytes, at);
  at += 2;
  if (end - at < extensionsLength) return { kind: "not_tls" };
  const extensionsEnd = at + extensionsLength;
  while (at < extensionsEnd) {
    if (extensionsEnd - at < 4) return { kind: "not_tls" };
    const type = u16(bytes, at);
    const dataEnd = at + 4 + u16(bytes, at + 2);
    at += 4;
    if (dataEnd > extensionsEnd) return { kind: "not_tls" };
    if (type === EXT_SERVER_NAME) {
      const sni = parseServerName(bytes, at, dataEnd);
      if (sni === null) return { kind: "not_tls" };
      if (sni !== undefined) result.sni = sni;
    } else if (type === EXT_ALPN) {
      const alpn = parseAlpn(bytes, at, dataEnd);
      if (alpn === undefined) return { kind: "not_tls" };
      result.alpn = alpn;
    }
    at = dataEnd;
  }
  return result;
}

/** The server_name extension at `bytes[at, end)`: `undefined` = no host_name entry, `null` = malformed. */
function parseServerName(bytes: Uint8Array, at: number, end: number): string | undefined | null {
  if (end - at < 2 || u16(bytes, at) !== end - at - 2) return null;
  at += 2;
  while (at < end) {
    if (end - at < 3) return null;
    const nameType = bytes[at];
    const nameEnd = at + 3 + u16(bytes, at + 1);
    at += 3;
    if (nameEnd > end) return null;
    if (nameType === 0) {
      // RFC 6066: an ASCII host name without a trailing dot.
      if (nameEnd === at || nameEnd - at > 255) return null;
      for (let i = at; i < nameEnd; i++) {
        const byte = bytes[i] ?? 0;
        if (byte <= 0x20 || byte >= 0x7f) return null;
      }
      return latin1(bytes, at, nameEnd).toLowerCase();
    }
    at = nameEnd;
  }
  return undefined;
}

/** The ALPN extension's protocol names at `bytes[at, end)`; `undefined` when malformed. */
function parseAlpn(bytes: Uint8Array, at: number, end: number): string[] | undefined {
  if (end - at < 2 || u16(bytes, at) !== end - at - 2) return undefined;
  at += 2;
  const out: string[] = [];
  while (at < end) {
    const nameEnd = at + 1 + (bytes[at] ?? 0);
    at += 1;
    if (nameEnd === at || nameEnd > end) return undefined;
    out.push(latin1(bytes, at, nameEnd));
    at = nameEnd;
  }
  return out;
}

/** Options of {@link detectTls}. */
export interface DetectTlsOptions {
  socket: net.Socket;
  /** Give up (and fail the connection) after this long. Default 10000. */
  timeoutMs?: number;
  /** Most bytes read while waiting for a complete ClientHello. Default 8192. */
  maxBytes?: number;
  /** Bytes the caller already read from `socket` (and did not put back): detection starts with them. */
  firstBytes?: Buffer;
}

/**
 * Reads the first bytes of `socket` until they are a complete ClientHello or
 * clearly not TLS, then puts them back (`unshift`) and leaves the socket
 * paused, so the next layer sees the stream untouched. Never falls back to
 * plaintext on timeout: the caller fails the connection.
 * @throws ProxyError `ERR_DETECT_TIMEOUT`, `ERR_DETECT_TOO_LARGE`, `ERR_DETECT_CLOSED`
 */
export function detectTls(options: DetectTlsOptions): Promise<Detection> {
  const { socket } = options;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxBytes = options.maxBytes ?? 8192;
  return new Promise<Detection>((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      socket.off("error", onError);
      socket.pause();
    };
    const done = (detection: Detection): void => {
      cleanup();
      if (buffered.length > 0) socket.unshift(buffered);
      resolve(detection);
    };
    const fail = (error: ProxyError): void => {
      cleanup();
      reject(error);
    };
    /** Whether the bytes so far decide (or fail) detection. */
    const decide = (): boolean => {
      const parsed = parseClientHello(buffered);
      if (parsed.kind === "tls") {
        const detection: Detection = { kind: "tls", alpn: parsed.alpn, bytesRead: buffered.length };
        if (parsed.sni !== undefined) detection.sni = parsed.sni;
        done(detection);
      } else if (parsed.kind === "not_tls") {
        done({ kind: "plaintext", bytesRead: buffered.length });
      } else if (buffered.length >= maxBytes) {
        fail(new ProxyError("ERR_DETECT_TOO_LARGE", `no complete ClientHello within ${maxBytes} bytes`));
      } else {
        return false;
      }
      return true;
    };
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      decide();
    };
    const onEnd = (): void => {
      fail(new ProxyError("ERR_DETECT_CLOSED", `the peer closed after ${buffered.length} bytes, before detection`));
    };
    const onError = (cause: Error): void => {
      fail(new ProxyError("ERR_DETECT_CLOSED", "the connection failed during detection", { cause }));
    };
    // Assigned once the bytes read so far did not decide (cleanup may run before that).
    let timer: NodeJS.Timeout | undefined = undefined;
    if (options.firstBytes !== undefined && options.firstBytes.length > 0) {
      buffered = options.firstBytes;
      // Decided by what was read already: no timer, no listeners, the socket stays paused.
      if (decide()) return;
    }
    timer = setTimeout(() => {
      fail(new ProxyError("ERR_DETECT_TIMEOUT", `no decision after ${timeoutMs} ms (${buffered.length} bytes read)`));
    }, timeoutMs);
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
    socket.once("error", onError);
    socket.resume();
  });
}
