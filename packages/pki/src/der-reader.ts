// A minimal, bounds-checked DER reader used on hot paths (CSR parsing). Throws plain Errors; callers wrap them.

export interface Tlv {
  tag: number;
  /** Offset of the tag byte in the source. */
  start: number;
  /** Offset of the first content byte. */
  contentStart: number;
  /** Offset just past the content. */
  end: number;
}

/** Reads the TLV at `offset` within [offset, limit). Only definite, minimal lengths and single-byte tags. */
export function readTlv(buf: Uint8Array, offset: number, limit = buf.length): Tlv {
  if (offset + 2 > limit) throw new Error("truncated DER");
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new Error("multi-byte DER tags are not supported");
  let len = buf[offset + 1] as number;
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new Error("indefinite DER length");
    if (n > 3) throw new Error("DER length too large");
    if (p + n > limit) throw new Error("truncated DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[p + i] as number);
    if (len < 0x80 || (n > 1 && buf[p] === 0)) throw new Error("non-minimal DER length");
    p += n;
  }
  if (p + len > limit) throw new Error("DER content runs past its container");
  return { tag, start: offset, contentStart: p, end: p + len };
}

/** The child TLVs of a constructed TLV. */
export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let p = parent.contentStart;
  while (p < parent.end) {
    const t = readTlv(buf, p, parent.end);
    out.push(t);
    p = t.end;
  }
  return out;
}

export function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t || t.tag !== tag) throw new Error(`${what}: expected tag 0x${tag.toString(16)}${t ? `, found 0x${t.tag.toString(16)}` : ", found nothing"}`);
  return t;
}

export function content(buf: Uint8Array, t: Tlv): Uint8Array {
  return buf.subarray(t.contentStart, t.end);
}

export function whole(buf: Uint8Array, t: Tlv): Uint8Array {
  return buf.subarray(t.start, t.end);
}

/** Dotted text of an OBJECT IDENTIFIER's content bytes. */
export function decodeOid(bytes: Uint8Array): string {
  if (bytes.length === 0) throw new Error("empty OID");
  let text = "";
  let v = 0;
  let first = true;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number;
    if (v === 0 && b === 0x80) throw new Error("non-minimal OID arc");
    v = v * 128 + (b & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 256) throw new Error("OID arc too large");
    if (b & 0x80) {
      if (i === bytes.length - 1) throw new Error("truncated OID");
      continue;
    }
    if (first) {
      text = v < 40 ? `0.${v}` : v < 80 ? `1.${v - 40}` : `2.${v - 80}`;
      first = false;
    } else text += `.${v}`;
    v = 0;
  }
  return text;
}

/** Text of a directory string (UTF8String, PrintableString, IA5String, T61String, BMPString, UniversalString). */
export function decodeString(buf: Uint8Array, t: Tlv): string {
  const b = content(buf, t);
  switch (t.tag) {
    case 0x0c:
      return Buffer.from(b).toString("utf8");
    case 0x13:
    case 0x16:
    case 0x14:
    case 0x1a:
      return Buffer.from(b).toString("latin1");
    case 0x1e: {
      let s = "";
      for (let i = 0; i + 1 < b.length; i += 2) s += String.fromCharCode(((b[i] as number) << 8) | (b[i + 1] as number));
      return s;
    }
    case 0x1c: {
      let s = "";
      for (let i = 0; i + 3 < b.length; i += 4) s += String.fromCodePoint((((b[i] as number) << 24) | ((b[i + 1] as number) << 16) | ((b[i + 2] as number) << 8) | (b[i + 3] as number)) >>> 0 & 0x10ffff);
      return s;
    }
    default:
      return `#${Buffer.from(b).toString("hex")}`;
  }
}
