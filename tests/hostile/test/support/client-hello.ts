// TLS ClientHellos (RFC 8446 §4.1.2) built byte by byte, so that lengths can lie.
import { randomBytes } from "node:crypto";

const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const u24 = (n: number): Buffer => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);

export function extension(type: number, body: Buffer): Buffer {
  return Buffer.concat([u16(type), u16(body.length), body]);
}

export function sniExtension(name: string): Buffer {
  const host = Buffer.from(name, "latin1");
  const entry = Buffer.concat([Buffer.from([0]), u16(host.length), host]);
  return extension(0, Buffer.concat([u16(entry.length), entry]));
}

export function alpnExtension(protocols: string[]): Buffer {
  const list = Buffer.concat(protocols.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, "latin1")])));
  return extension(16, Buffer.concat([u16(list.length), list]));
}

/** The ClientHello handshake message (type 1) with the given extensions. */
export function clientHelloBody(extensions: Buffer[]): Buffer {
  const exts = Buffer.concat(extensions);
  const hello = Buffer.concat([
    u16(0x0303),
    randomBytes(32),
    Buffer.from([32]),
    randomBytes(32),
    u16(6),
    u16(0x1301),
    u16(0x1302),
    u16(0x1303),
    Buffer.from([1, 0]),
    u16(exts.length),
    exts,
  ]);
  return Buffer.concat([Buffer.from([1]), u24(hello.length), hello]);
}

/** Handshake bytes cut into TLS records of at most 16 KiB. */
export function records(handshake: Buffer, recordSize = 16_384): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < handshake.length; at += recordSize) {
    const fragment = handshake.subarray(at, at + recordSize);
    out.push(Buffer.concat([Buffer.from([22, 3, 1]), u16(fragment.length), fragment]));
  }
  return Buffer.concat(out);
}

/** A plausible TLS 1.3 ClientHello naming `sni` (and offering `alpn`). */
export function clientHello(sni: string, alpn: string[] = []): Buffer {
  const extensions = [
    sniExtension(sni),
    extension(43, Buffer.from([2, 3, 4])), // supported_versions: TLS 1.3
    extension(10, Buffer.concat([u16(2), u16(23)])), // supported_groups: P-256
    extension(13, Buffer.concat([u16(2), u16(0x0403)])), // signature_algorithms
  ];
  if (alpn.length > 0) extensions.push(alpnExtension(alpn));
  return records(clientHelloBody(extensions));
}
