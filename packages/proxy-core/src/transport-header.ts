import type { Duplex } from "node:stream";
import { ApiError, decodeTransportHeader, encodeTransportHeader, TRANSPORT_HEADER_ALPN } from "@meshtls/api";
import type { DecodedTransportHeader, TransportHeaderFields } from "@meshtls/api";
import { ProxyError } from "./errors.js";

/** The ALPN protocol of opaque transport. */
export const TRANSPORT_ALPN = TRANSPORT_HEADER_ALPN;

/** Options of {@link readTransportHeader}. */
export interface ReadTransportHeaderOptions {
  /** The (decrypted) stream the header starts. */
  stream: Duplex;
  /** Fail if no complete header arrives in this time. Default 10000. */
  timeoutMs?: number;
  /** Most header bytes accepted (preface + length + body). Default 4096. */
  maxBytes?: number;
}

/**
 * Reads the opaque transport header from the start of `stream`, puts any
 * application bytes that followed it back, and leaves the stream paused.
 * @throws ProxyError `ERR_TRANSPORT_HEADER_INVALID` (wrong preface, malformed,
 *   too large, stream ended), `ERR_TRANSPORT_HEADER_TIMEOUT`
 */
export function readTransportHeader(options: ReadTransportHeaderOptions): Promise<DecodedTransportHeader> {
  const { stream } = options;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxBytes = options.maxBytes ?? 4096;
  return new Promise((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    const cleanup = (): void => {
      clearTimeout(timer);
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("error", onEnd);
      stream.pause();
    };
    const fail = (error: ProxyError): void => {
      cleanup();
      reject(error);
    };
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      let header: DecodedTransportHeader;
      try {
        header = decodeTransportHeader(buffered);
      } catch (cause) {
        if (cause instanceof ApiError && cause.code === "ERR_TRANSPORT_HEADER_TRUNCATED" && buffered.length < maxBytes) return;
        fail(new ProxyError("ERR_TRANSPORT_HEADER_INVALID", `bad transport header: ${(cause as Error).message}`, { cause }));
        return;
      }
      if (header.byteLength > maxBytes) {
        fail(new ProxyError("ERR_TRANSPORT_HEADER_INVALID", `transport header of ${header.byteLength} bytes exceeds ${maxBytes}`));
        return;
      }
      cleanup();
      if (buffered.length > header.byteLength) stream.unshift(buffered.subarray(header.byteLength));
      resolve(header);
    };
    const onEnd = (): void => {
      fail(new ProxyError("ERR_TRANSPORT_HEADER_INVALID", `the stream ended after ${buffered.length} bytes, before a transport header`));
    };
    const timer = setTimeout(() => {
      fail(new ProxyError("ERR_TRANSPORT_HEADER_TIMEOUT", `no transport header after ${timeoutMs} ms`));
    }, timeoutMs);
    stream.on("data", onData);
    stream.once("end", onEnd);
    stream.once("error", onEnd);
    stream.resume();
  });
}

/** Encodes a transport header (preface, length, protobuf) to write first on an opaque connection. */
export function encodeHeader(fields: TransportHeaderFields): Buffer {
  return encodeTransportHeader(fields);
}
