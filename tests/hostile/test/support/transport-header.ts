// Opaque transport headers (Linkerd's transport.l5d.io/v1) encoded by hand, so that every field can be wrong.
export const TRANSPORT_ALPN = "transport.l5d.io/v1";
export const TRANSPORT_PREFACE = Buffer.from("transport.l5d.io/v1\r\n\r\n", "latin1");

function varint(value: bigint): Buffer {
  const out: number[] = [];
  let rest = BigInt.asUintN(64, value);
  while (rest >= 0x80n) {
    out.push(Number(rest & 0x7fn) | 0x80);
    rest >>= 7n;
  }
  out.push(Number(rest));
  return Buffer.from(out);
}

/** The protobuf `Header` body with field 1 (`port`, int32) as given, negative values sign-extended as protobuf does. */
export function portBody(port: number): Buffer {
  return Buffer.concat([Buffer.from([0x08]), varint(BigInt(port))]);
}

/** Preface, u32 big-endian body length (declared, not necessarily true) and body. */
export function transportHeader(body: Buffer, options: { declaredLength?: number; preface?: Buffer } = {}): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE((options.declaredLength ?? body.length) >>> 0);
  return Buffer.concat([options.preface ?? TRANSPORT_PREFACE, length, body]);
}

/** A well-formed header naming `port`. */
export function headerFor(port: number): Buffer {
  return transportHeader(portBody(port));
}
