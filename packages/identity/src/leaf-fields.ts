import { IdentityError } from "./errors.ts";

/** What the Certify response and the issuance log need from a just-signed leaf. */
export interface LeafFields {
  /** Serial number, lowercase hex. */
  serialNumber: string;
  notAfter: Date;
}

/**
 * Reads the serial number and notAfter from a DER certificate by walking
 * only the TBSCertificate header (version, serial, signature, issuer,
 * validity): the leaf was just encoded by pki, and a full parse costs more
 * than the signature that made it.
 */
export function readLeafFields(der: Uint8Array): LeafFields {
  let pos = 0;
  const fail = (why: string): never => {
    throw new IdentityError("ERR_ISSUE_FAILED", `signed leaf is malformed: ${why}`);
  };
  const header = (expectTag?: number): { tag: number; start: number; end: number } => {
    if (pos + 2 > der.length) fail("truncated");
    const tag = der[pos] as number;
    if (expectTag !== undefined && tag !== expectTag) fail(`expected tag 0x${expectTag.toString(16)}, found 0x${tag.toString(16)}`);
    let len = der[pos + 1] as number;
    let start = pos + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 3 || start + n > der.length) fail("bad length");
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + (der[start + i] as number);
      start += n;
    }
    const end = start + len;
    if (end > der.length) fail("length past the end");
    return { tag, start, end };
  };
  const enter = (tag: number) => {
    const h = header(tag);
    pos = h.start;
    return h;
  };
  const skip = (tag?: number) => {
    const h = header(tag);
    pos = h.end;
    return h;
  };
  enter(0x30); // Certificate
  enter(0x30); // TBSCertificate
  if (der[pos] === 0xa0) skip(0xa0); // version
  const serial = skip(0x02);
  skip(0x30); // signature algorithm
  skip(0x30); // issuer
  enter(0x30); // validity
  skip(); // notBefore
  const notAfter = skip();
  let serialBytes = der.subarray(serial.start, serial.end);
  while (serialBytes.length > 1 && serialBytes[0] === 0) serialBytes = serialBytes.subarray(1);
  return { serialNumber: Buffer.from(serialBytes).toString("hex"), notAfter: parseTime(notAfter.tag, der.subarray(notAfter.start, notAfter.end), fail) };
}

function parseTime(tag: number, bytes: Uint8Array, fail: (why: string) => never): Date {
  const text = Buffer.from(bytes).toString("latin1");
  const m = tag === 0x17 ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text) : tag === 0x18 ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text) : null;
  if (!m) return fail(`unexpected time ${JSON.stringify(text)}`);
  let year = Number(m[1]);
  if (tag === 0x17) year += year >= 50 ? 1900 : 2000;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}
