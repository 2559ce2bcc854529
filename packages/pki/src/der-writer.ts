// A minimal DER encoder for the certificate templates this package signs (faster than building pkijs objects).

function lengthBytes(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

/** Encodes one TLV with `tag` around the concatenated `parts`. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const head = lengthBytes(len);
  const out = new Uint8Array(1 + head.length + len);
  out[0] = tag;
  out.set(head, 1);
  let off = 1 + head.length;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export const seq = (...parts: Uint8Array[]): Uint8Array => tlv(0x30, ...parts);
export const set = (...parts: Uint8Array[]): Uint8Array => tlv(0x31, ...parts);
export const octetString = (b: Uint8Array): Uint8Array => tlv(0x04, b);
export const bitString = (b: Uint8Array, unusedBits = 0): Uint8Array => tlv(0x03, new Uint8Array([unusedBits]), b);
export const utf8String = (s: string): Uint8Array => tlv(0x0c, new Uint8Array(Buffer.from(s, "utf8")));
export const ia5String = (tag: number, s: string): Uint8Array => tlv(tag, new Uint8Array(Buffer.from(s, "latin1")));
export const TRUE = new Uint8Array([0x01, 0x01, 0xff]);

/** A non-negative INTEGER from big-endian magnitude bytes (adds a sign byte, strips redundant zeros). */
export function unsignedInteger(magnitude: Uint8Array): Uint8Array {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const body = magnitude.subarray(i);
  return (body[0] ?? 0) & 0x80 ? tlv(0x02, new Uint8Array([0]), body) : tlv(0x02, body.length === 0 ? new Uint8Array([0]) : body);
}

export function smallInteger(n: number): Uint8Array {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  return unsignedInteger(new Uint8Array(bytes));
}

/** OBJECT IDENTIFIER from dotted text. */
export function oid(dotted: string): Uint8Array {
  const arcs = dotted.split(".").map(Number);
  const body: number[] = [(arcs[0] ?? 0) * 40 + (arcs[1] ?? 0)];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [];
    let v = arc;
    do {
      chunk.unshift(v & 0x7f);
      v = Math.floor(v / 128);
    } while (v > 0);
    for (let k = 0; k < chunk.length - 1; k++) chunk[k] = (chunk[k] ?? 0) | 0x80;
    body.push(...chunk);
  }
  return tlv(0x06, new Uint8Array(body));
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5), seconds precision, Zulu. */
export function x509Time(d: Date): Uint8Array {
  const y = d.getUTCFullYear();
  const rest = `${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(0x17, new Uint8Array(Buffer.from(`${pad(y % 100)}${rest}`, "latin1")));
  return tlv(0x18, new Uint8Array(Buffer.from(`${pad(y, 4)}${rest}`, "latin1")));
}

/** An Extension SEQUENCE. */
export function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(id), TRUE, octetString(value)) : seq(oid(id), octetString(value));
}

/** A Name holding one CN (UTF8String), or the empty Name. */
export function commonNameName(cn: string): Uint8Array {
  if (cn === "") return seq();
  return seq(set(seq(oid("2.5.4.3"), utf8String(cn))));
}
