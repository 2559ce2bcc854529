import { ApiError } from "./errors.js";
import { Header } from "./gen/opaque_transport.js";

/** The 23 bytes that open an opaque transport connection: `transport.l5d.io/v1\r\n\r\n`. */
export const TRANSPORT_HEADER_PREFACE: Buffer = Buffer.from("transport.l5d.io/v1\r\n\r\n", "latin1");

/** The ALPN protocol an opaque transport connection negotiates. */
export const TRANSPORT_HEADER_ALPN = "transport.l5d.io/v1";

/** The largest header body accepted: 64 KiB. */
export const MAX_TRANSPORT_HEADER_BYTES = 64 * 1024;

/** The session protocol an opaque transport header may announce. */
export type TransportSessionProtocolKind = "http1" | "http2";

/** A transport header in application terms. */
export interface TransportHeaderFields {
  /** The workload's own target port (1..65535). */
  port: number;
  /** Optional authority of the target; omitted when empty. */
  name?: string;
  sessionProtocol?: TransportSessionProtocolKind;
}

/** A decoded header and how many bytes of the input it used (preface + length + body). */
export interface DecodedTransportHeader extends TransportHeaderFields {
  byteLength: number;
}

function checkPort(port: number, code: "ERR_TRANSPORT_HEADER_MALFORMED"): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ApiError(code, `transport header port out of range: ${String(port)}`);
  }
}

/**
 * Encodes the preface, the u32 big-endian body length and the protobuf `Header`.
 * @throws ApiError `ERR_TRANSPORT_HEADER_MALFORMED` (bad port), `ERR_TRANSPORT_HEADER_TOO_LARGE`
 */
export function encodeTransportHeader(fields: TransportHeaderFields): Buffer {
  checkPort(fields.port, "ERR_TRANSPORT_HEADER_MALFORMED");
  const body = Header.encode({
    port: fields.port,
    name: fields.name ?? "",
    sessionProtocol:
      fields.sessionProtocol === undefined
        ? undefined
        : { kind: fields.sessionProtocol === "http1" ? { $case: "http1", value: {} } : { $case: "http2", value: {} } },
  }).finish();
  if (body.length > MAX_TRANSPORT_HEADER_BYTES) {
    throw new ApiError("ERR_TRANSPORT_HEADER_TOO_LARGE", `header body of ${body.length} bytes exceeds 64 KiB`);
  }
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([TRANSPORT_HEADER_PREFACE, length, body]);
}

/**
 * Decodes a transport header from the start of `input`; bytes after it (the
 * application's own stream) are left alone, see `byteLength`.
 *
 * A short input that is a valid beginning throws `ERR_TRANSPORT_HEADER_TRUNCATED`
 * so that a reader can wait for more bytes; anything else is final.
 * @throws ApiError `ERR_TRANSPORT_HEADER_PREFACE`, `ERR_TRANSPORT_HEADER_TOO_LARGE`
 *   (declared length > 64 KiB), `ERR_TRANSPORT_HEADER_TRUNCATED`, `ERR_TRANSPORT_HEADER_MALFORMED`
 */
export function decodeTransportHeader(input: Uint8Array): DecodedTransportHeader {
  const preface = TRANSPORT_HEADER_PREFACE;
  const seen = Math.min(input.length, preface.length);
  for (let i = 0; i < seen; i++) {
    if (input[i] !== preface[i]) {
      throw new ApiError("ERR_TRANSPORT_HEADER_PREFACE", "the input does not start with the transport.l5d.io/v1 preface");
    }
  }
  if (input.length < preface.length + 4) {
    throw new ApiError("ERR_TRANSPORT_HEADER_TRUNCATED", `need at least ${preface.length + 4} bytes, have ${input.length}`);
  }
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  const bodyLength = view.getUint32(preface.length, false);
  if (bodyLength > MAX_TRANSPORT_HEADER_BYTES) {
    throw new ApiError("ERR_TRANSPORT_HEADER_TOO_LARGE", `declared header length ${bodyLength} exceeds 64 KiB`);
  }
  const start = preface.length + 4;
  const end = start + bodyLength;
  if (input.length < end) {
    throw new ApiError("ERR_TRANSPORT_HEADER_TRUNCATED", `header body needs ${bodyLength} bytes, have ${input.length - start}`);
  }
  let header: Header;
  try {
    header = Header.decode(input.subarray(start, end));
  } catch (cause) {
    throw new ApiError("ERR_TRANSPORT_HEADER_MALFORMED", "the header body is not a valid protobuf Header", { cause });
  }
  checkPort(header.port, "ERR_TRANSPORT_HEADER_MALFORMED");
  const decoded: DecodedTransportHeader = { port: header.port, byteLength: end };
  if (header.name !== "") decoded.name = header.name;
  const kind = header.sessionProtocol?.kind?.$case;
  if (kind !== undefined) decoded.sessionProtocol = kind;
  return decoded;
}
