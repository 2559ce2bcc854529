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

/** A forward-only reader that reports running past the end instead of throwing. */
class Reader {
  offset = 0;
  constructor(private readonly bytes: Uint8Array) {}
  get remaining(): number {
    return this.bytes.length - this.offset;
  }
  u8(): number | undefined {
    if (this.remaining < 1) return undefined;
    return this.bytes[this.offset++];
  }
  u16(): number | undefined {
    if (this.remaining < 2) return undefined;
    const value = ((this.bytes[this.offset] ?? 0) << 8) | (this.bytes[this.offset + 1] ?? 0);
    this.offset += 2;
    return value;
  }
  u24(): number | undefined {
    if (this.remaining < 3) return undefined;
    const b = this.bytes;
    const value = ((b[this.offset] ?? 0) << 16) | ((b[this.offset + 1] ?? 0) << 8) | (b[this.offset + 2] ?? 0);
    this.offset += 3;
    return value;
  }
  /** Steps over `length` bytes without a view of them; false past the end. */
  skip(length: number): boolean {
    if (this.remaining < length) return false;
    this.offset += length;
    return true;
  }
  take(length: number): Uint8Array | undefined {
    if (this.remaining < length) return undefined;
    const out = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }
}

/**
 * Parses the start of a connection as a TLS ClientHello (RFC 8446 §4.1.2),
 * possibly fragmented over several handshake records, and extracts SNI and
 * ALPN. Bytes that are not a TLS handshake record, or a ClientHello that does
 * not parse, are `not_tls`: the connection is then plaintext to policy.
 */
export function parseClientHello(input: Uint8Array): ClientHelloParse {
  // Reassemble the handshake layer from consecutive handshake records.
  const fragments: Uint8Array[] = [];
  let handshakeLength = 0;
  const records = new Reader(input);
  for (;;) {
    if (records.remaining === 0) return { kind: "need_more" };
    const type = records.u8();
    if (type !== RECORD_HANDSHAKE) return fragments.length === 0 ? { kind: "not_tls" } : { kind: "not_tls" };
    const major = records.u8();
    if (major === undefined) return { kind: "need_more" };
    if (major !== 3) return { kind: "not_tls" };
    const minor = records.u8();
    if (minor === undefined) return { kind: "need_more" };
    if (minor > 4) return { kind: "not_tls" };
    const length = records.u16();
    if (length === undefined) return { kind: "need_more" };
    if (length === 0 || length > 16384 + 2048) return { kind: "not_tls" };
    const fragment = records.take(length);
    if (fragment === undefined) return { kind: "need_more" };
    fragments.push(fragment);
    handshakeLength += fragment.length;
    if (handshakeLength >= 4) {
      const joined = fragments.length === 1 ? fragment : Buffer.concat(fragments);
      const handshake = new Reader(joined);
      if (handshake.u8() !== HANDSHAKE_CLIENT_HELLO) return { kind: "not_tls" };
      const bodyLength = handshake.u24() ?? 0;
      if (handshake.remaining >= bodyLength) {
        return parseClientHelloBody(joined.subarray(4, 4 + bodyLength));
      }
    }
  }
}

function parseClientHelloBody(body: Uint8Array): ClientHelloParse {
  // Only the two extensions read get a view of their bytes (a view per field was most of detection's allocation).
  const r = new Reader(body);
  const version = r.u16();
  if (version === undefined || version >> 8 !== 3) return { kind: "not_tls" };
  if (!r.skip(32)) return { kind: "not_tls" };
  const sessionIdLength = r.u8();
  if (sessionIdLength === undefined || sessionIdLength > 32 || !r.skip(sessionIdLength)) return { kind: "not_tls" };
  const suitesLength = r.u16();
  if (suitesLength === undefined || suitesLength % 2 !== 0 || !r.skip(suitesLength)) return { kind: "not_tls" };
  const compressionLength = r.u8();
  if (compressionLength === undefined || !r.skip(compressionLength)) return { kind: "not_tls" };
  const result: { kind: "tls"; sni?: string; alpn: string[] } = { kind: "tls", alpn: [] };
  if (r.remaining === 0) return result;
  const extensionsLength = r.u16();
  if (extensionsLength === undefined || r.remaining < extensionsLength) return { kind: "not_tls" };
  const end = r.offset + extensionsLength;
  while (r.offset < end) {
    const type = end - r.offset >= 2 ? r.u16() : undefined;
    const length = end - r.offset >= 2 ? r.u16() : undefined;
    if (type === undefined || length === undefined || end - r.offset < length) return { kind: "not_tls" };
    if (type === EXT_SERVER_NAME) {
      const sni = parseServerName(r.take(length) ?? new Uint8Array());
      if (sni === null) return { kind: "not_tls" };
      if (sni !== undefined) result.sni = sni;
    } else if (type === EXT_ALPN) {
      const alpn = parseAlpn(r.take(length) ?? new Uint8Array());
      if (alpn === undefined) return { kind: "not_tls" };
      result.alpn = alpn;
    } else {
      r.skip(length);
    }
  }
  return result;
}

/** The bytes as a latin1 string, without copying them first. */
function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("latin1");
}

/** `undefined` = no host_name entry, `null` = malformed. */
function parseServerName(data: Uint8Array): string | undefined | null {
  const r = new Reader(data);
  const listLength = r.u16();
  const list = listLength === undefined ? undefined : r.take(listLength);
  if (list === undefined || r.remaining !== 0) return null;
  const l = new Reader(list);
  while (l.remaining > 0) {
    const nameType = l.u8();
    const nameLength = l.u16();
    const name = nameLength === undefined ? undefined : l.take(nameLength);
    if (nameType === undefined || name === undefined) return null;
    if (nameType === 0) {
      // RFC 6066: an ASCII host name without a trailing dot.
      if (name.length === 0 || name.length > 255) return null;
      for (const byte of name) if (byte <= 0x20 || byte >= 0x7f) return null;
      return latin1(name).toLowerCase();
    }
  }
  return undefined;
}

function parseAlpn(data: Uint8Array): string[] | undefined {
  const r = new Reader(data);
  const listLength = r.u16();
  const list = listLength === undefined ? undefined : r.take(listLength);
  if (list === undefined || r.remaining !== 0) return undefined;
  const l = new Reader(list);
  const out: string[] = [];
  while (l.remaining > 0) {
    const length = l.u8();
    const name = length === undefined || length === 0 ? undefined : l.take(length);
    if (name === undefined) return undefined;
    out.push(latin1(name));
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
