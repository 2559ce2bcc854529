// A minimal DER encoder for the certificate templates this package signs. Values are built as a tree and
// written into one buffer at the end, which keeps allocation (and so garbage collection) low per certificate.

/** A DER value: encoded bytes, or a TLV whose content is encoded later. */
export type Der = Uint8Array | DerNode;

export interface DerNode {
  readonly tag: number;
  readonly parts: readonly Der[];
  /** Content length in bytes. */
  readonly length: number;
}

function size(d: Der): number {
  return d instanceof Uint8Array ? d.length : 1 + headerLength(d.length) + d.length;
}

function headerLength(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 4;
}

/** One TLV with `tag` around the concatenated `parts`. */
export function tlv(tag: number, ...parts: Der[]): DerNode {
  let length = 0;
  for (const p of parts) length += size(p);
  return { tag, parts, length };
}

function write(d: Der, out: Uint8Array, offset: number): number {
  if (d instanceof Uint8Array) {
    out.set(d, offset);
    return offset + d.length;
  }
  let p = offset;
  out[p++] = d.tag;
  const n = d.length;
  if (n < 0x80) out[p++] = n;
  else if (n < 0x100) {
    out[p++] = 0x81;
    out[p++] = n;
  } else if (n < 0x10000) {
    out[p++] = 0x82;
    out[p++] = n >> 8;
    out[p++] = n & 0xff;
  } else {
    out[p++] = 0x83;
    out[p++] = n >> 16;
    out[p++] = (n >> 8) & 0xff;
    out[p++] = n & 0xff;
  }
  for (const part of d.parts) p = write(part, out, p);
  return p;
}

/** Encodes a value to bytes. */
export function encode(d: Der): Uint8Array {
  if (d instanceof Uint8Array) return d;
  const out = new Uint8Array(size(d));
  write(d, out, 0);
  return out;
}

export const seq = (...parts: Der[]): DerNode => tlv(0x30, ...parts);
export const set = (...parts: Der[]): DerNode => tlv(0x31, ...parts);
export const octetString = (b: Der): DerNode => tlv(0x04, b);
export const bitString = (b: Der, unusedBits = 0): DerNode => tlv(0x03, new Uint8Array([unusedBits]), b);
export const utf8String = (s: string): DerNode => tlv(0x0c, Buffer.from(s, "utf8"));
export const ia5String = (tag: number, s: string): DerNode => tlv(tag, Buffer.from(s, "latin1"));
export const TRUE = new Uint8Array([0x01, 0x01, 0xff]);

/** A non-negative INTEGER from big-endian magnitude bytes (adds a sign byte, strips redundant zeros). */
export function unsignedInteger(magnitude: Uint8Array): DerNode {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const body = magnitude.subarray(i);
  if (body.length === 0) return tlv(0x02, new Uint8Array([0]));
  return (body[0] ?? 0) & 0x80 ? tlv(0x02, new Uint8Array([0]), body) : tlv(0x02, body);
}

export function smallInteger(n: number): DerNode {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  return unsignedInteger(new Uint8Array(bytes));
}

/** OBJECT IDENTIFIER from dotted text, encoded. */
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
  return encode(tlv(0x06, new Uint8Array(body)));
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5), seconds precision, Zulu. Years 0–9999. */
export function x509Time(d: Date): DerNode {
  const y = d.getUTCFullYear();
  if (!(y >= 0 && y <= 9999)) throw new RangeError(`year ${y} cannot be encoded in X.509`);
  const utc = y >= 1950 && y < 2050;
  // The digits are written straight into the value: this runs twice per certificate.
  const out = new Uint8Array(utc ? 13 : 15);
  let p = 0;
  const two = (v: number) => {
    out[p++] = 0x30 + Math.floor(v / 10);
    out[p++] = 0x30 + (v % 10);
  };
  if (!utc) two(Math.floor(y / 100));
  two(y % 100);
  two(d.getUTCMonth() + 1);
  two(d.getUTCDate());
  two(d.getUTCHours());
  two(d.getUTCMinutes());
  two(d.getUTCSeconds());
  out[p] = 0x5a; // Z
  return tlv(utc ? 0x17 : 0x18, out);
}

/** An Extension SEQUENCE. */
export function extension(id: string | Uint8Array, critical: boolean, value: Der): DerNode {
  const encodedOid = typeof id === "string" ? oid(id) : id;
  return critical ? seq(encodedOid, TRUE, octetString(value)) : seq(encodedOid, octetString(value));
}

const CN_OID = oid("2.5.4.3");

/** A Name holding one CN (UTF8String), or the empty Name. */
export function commonNameName(cn: string): DerNode {
  if (cn === "") return seq();
  return seq(set(seq(CN_OID, utf8String(cn))));
}
