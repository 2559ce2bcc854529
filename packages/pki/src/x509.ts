// Internal model of a parsed certificate or CSR, shared by certificate.ts, csr.ts, ca.ts and verify.ts.
import { createHash, createPublicKey, verify as nodeVerify, type KeyObject } from "node:crypto";
import { CURVE_NAMES, OID, SIGNATURE_NAMES } from "./oids.ts";
import { PkiError } from "./errors.ts";
import { decodeGeneralNamesDer, type GeneralNames } from "./general-names.ts";
import { MAX_DER_BYTES } from "./limits.ts";
import { children, content, decodeOid, decodeString, expectTag, readTlv, type Tlv } from "./der-reader.ts";

export interface RawExtension {
  oid: string;
  critical: boolean;
  value: Uint8Array;
}

/** One GeneralSubtree of a NameConstraints extension. */
export interface Subtree {
  kind: "dns" | "email" | "uri" | "ip" | "dn" | "other";
  /** dns/email/uri text; for "other" a description. */
  value: string;
  /** ip: address and mask (4+4 or 16+16 bytes split). */
  ip?: Uint8Array;
  mask?: Uint8Array;
  /** dn: DER of the Name. */
  der?: Uint8Array;
  /** Why this subtree is malformed, if it is. */
  invalid?: string;
}

export interface NameConstraints {
  permitted?: Subtree[];
  excluded?: Subtree[];
  /** Why the extension itself is malformed, if it is. */
  invalid?: string;
}

export interface DecodedExtensions {
  list: RawExtension[];
  basicConstraints?: { ca: boolean; pathLength?: number; critical: boolean };
  keyUsage?: string[];
  extKeyUsage?: { oids: string[]; critical: boolean };
  san?: GeneralNames & { critical: boolean };
  nameConstraints?: NameConstraints & { critical: boolean };
  subjectKeyIdentifier?: Uint8Array;
  authorityKeyIdentifier?: Uint8Array;
  /** Extensions whose value could not be decoded: the certificate is treated as invalid when verifying. */
  malformed: string[];
  duplicates: string[];
}

export interface PublicKeySummary {
  algorithm: "ECDSA" | "RSA" | "Ed25519" | "unknown";
  curve?: string;
  namedCurve: boolean;
  bits?: number;
  spki: Uint8Array;
}

export interface NameInfo {
  commonName?: string;
  text: string;
  der: Uint8Array;
}

export interface ParsedCertificate {
  der: Uint8Array;
  version: number;
  serialNumber: Uint8Array;
  issuer: NameInfo;
  subject: NameInfo;
  notBefore: Date;
  notAfter: Date;
  publicKey: PublicKeySummary;
  tbs: Uint8Array;
  signatureAlgorithm: string;
  signatureAlgorithmOid: string;
  innerSignatureAlgorithmOid: string;
  signature: Uint8Array;
  extensions: DecodedExtensions;
  fingerprintSha256: string;
}

const KEY_USAGE_NAMES = [
  "digitalSignature",
  "nonRepudiation",
  "keyEncipherment",
  "dataEncipherment",
  "keyAgreement",
  "keyCertSign",
  "cRLSign",
  "encipherOnly",
  "decipherOnly",
] as const;

const EKU_NAMES: Record<string, string> = {
  [OID.serverAuth]: "serverAuth",
  [OID.clientAuth]: "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
  [OID.anyExtendedKeyUsage]: "anyExtendedKeyUsage",
};

const EKU_OIDS: Record<string, string> = Object.fromEntries(Object.entries(EKU_NAMES).map(([k, v]) => [v, k]));

export function ekuName(oid: string): string {
  return EKU_NAMES[oid] ?? oid;
}

export function ekuOid(name: string): string {
  return EKU_OIDS[name] ?? name;
}

const ATTRIBUTE_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.5": "serialNumber",
  "1.2.840.113549.1.9.1": "emailAddress",
  "0.9.2342.19200300.100.1.25": "DC",
  "0.9.2342.19200300.100.1.1": "UID",
};

/** Describes a DER Name. The structure is checked now; the display text is built when first read. */
export function describeNameDer(buf: Uint8Array, name: Tlv): NameInfo {
  const attributes: { id: string; value: Tlv }[] = [];
  let commonName: string | undefined;
  for (const rdn of children(buf, name)) {
    expectTag(rdn, 0x31, "RelativeDistinguishedName");
    for (const atv of children(buf, rdn)) {
      const [type, value] = children(buf, expectTag(atv, 0x30, "AttributeTypeAndValue"));
      const id = decodeOid(content(buf, expectTag(type, 0x06, "attribute type")));
      if (!value) throw new Error("attribute has no value");
      if (id === OID.commonName && commonName === undefined) commonName = decodeString(buf, value);
      attributes.push({ id, value });
    }
  }
  const der = new Uint8Array(buf.subarray(name.start, name.end));
  let text: string | undefined;
  const info = {
    der,
    get text(): string {
      text ??= attributes.map(({ id, value }) => `${ATTRIBUTE_NAMES[id] ?? id}=${decodeString(der, { ...value, start: value.start - name.start, contentStart: value.contentStart - name.start, end: value.end - name.start }).replace(/([,+"\\<>;=])/g, "\\$1")}`).join(", ");
      return text;
    },
  };
  return commonName === undefined ? info : Object.assign(info, { commonName });
}

/** Summarises DER SubjectPublicKeyInfo. */
export function describeSpki(spki: Uint8Array): PublicKeySummary {
  if (isP256Spki(spki)) return { algorithm: "ECDSA", curve: "P-256", namedCurve: true, bits: 256, spki };
  const outer = expectTag(readTlv(spki, 0), 0x30, "SubjectPublicKeyInfo");
  if (outer.end !== spki.length) throw new Error("SubjectPublicKeyInfo has trailing bytes");
  const [alg, key] = children(spki, outer);
  const [algOid, params] = children(spki, expectTag(alg, 0x30, "public key algorithm"));
  const id = decodeOid(content(spki, expectTag(algOid, 0x06, "public key algorithm OID")));
  const keyBytes = content(spki, expectTag(key, 0x03, "subjectPublicKey"));
  if (keyBytes[0] !== 0) throw new Error("subjectPublicKey has unused bits");
  const bits = keyBytes.subarray(1);
  if (id === OID.ecPublicKey) {
    if (params?.tag === 0x06) {
      const curveOid = decodeOid(content(spki, params));
      const curve = CURVE_NAMES[curveOid] ?? curveOid;
      const size = curve === "P-256" ? 256 : curve === "P-384" ? 384 : curve === "P-521" ? 521 : undefined;
      return size === undefined ? { algorithm: "ECDSA", curve, namedCurve: true, spki } : { algorithm: "ECDSA", curve, namedCurve: true, bits: size, spki };
    }
    const fieldBytes = bits.length > 1 ? Math.floor((bits.length - 1) / 2) : 0;
    const curve = fieldBytes === 32 ? "P-256" : fieldBytes === 48 ? "P-384" : fieldBytes === 66 ? "P-521" : "explicit";
    return { algorithm: "ECDSA", curve, namedCurve: false, spki };
  }
  if (id === OID.rsaEncryption) {
    const n = rsaBits(bits);
    return n === undefined ? { algorithm: "RSA", namedCurve: false, spki } : { algorithm: "RSA", namedCurve: false, bits: n, spki };
  }
  if (id === OID.ed25519) return { algorithm: "Ed25519", namedCurve: false, bits: 256, spki };
  return { algorithm: "unknown", namedCurve: false, spki };
}

function rsaBits(key: Uint8Array): number | undefined {
  try {
    const seq = expectTag(readTlv(key, 0), 0x30, "RSAPublicKey");
    const modulus = content(key, expectTag(children(key, seq)[0], 0x02, "modulus"));
    let i = 0;
    while (i < modulus.length && modulus[i] === 0) i++;
    if (i === modulus.length) return 0;
    return (modulus.length - i) * 8 - Math.clz32(modulus[i] ?? 0) + 24;
  } catch {
    return undefined;
  }
}

/** A single DER value filling `bytes` exactly. */
function single(bytes: Uint8Array, what: string): Tlv {
  const t = readTlv(bytes, 0);
  if (t.end !== bytes.length) throw new Error(`${what} has trailing bytes`);
  return t;
}

function decodeBasicConstraints(v: Uint8Array): { ca: boolean; pathLength?: number } {
  const items = children(v, expectTag(single(v, "basicConstraints"), 0x30, "basicConstraints"));
  let ca = false;
  let pathLength: number | undefined;
  let i = 0;
  if (items[i]?.tag === 0x01) {
    const b = content(v, items[i] as Tlv);
    if (b.length !== 1) throw new Error("basicConstraints cA is malformed");
    ca = b[0] !== 0;
    i++;
  }
  if (items[i]?.tag === 0x02) {
    const n = content(v, items[i] as Tlv);
    if (n.length === 0 || n.length > 4 || (n[0] ?? 0) & 0x80) throw new Error("basicConstraints pathLenConstraint is negative or too large");
    pathLength = n.reduce((a, b) => a * 256 + b, 0);
    i++;
  }
  if (i !== items.length) throw new Error("basicConstraints has an unexpected element");
  return pathLength === undefined ? { ca } : { ca, pathLength };
}

function decodeKeyUsage(v: Uint8Array): string[] {
  const b = content(v, expectTag(single(v, "keyUsage"), 0x03, "keyUsage"));
  if (b.length === 0 || (b[0] ?? 0) > 7) throw new Error("keyUsage BIT STRING is malformed");
  const bytes = b.subarray(1);
  const usages: string[] = [];
  for (let bit = 0; bit < bytes.length * 8; bit++) {
    if ((bytes[bit >> 3] ?? 0) & (0x80 >> (bit & 7))) usages.push(KEY_USAGE_NAMES[bit] ?? `bit${bit}`);
  }
  return usages;
}

function decodeOidList(v: Uint8Array, what: string): string[] {
  return children(v, expectTag(single(v, what), 0x30, what)).map((t) => decodeOid(content(v, expectTag(t, 0x06, `${what} item`))));
}

function decodeSubtree(buf: Uint8Array, item: Tlv): Subtree {
  if (item.tag !== 0x30) return { kind: "other", value: "?", invalid: "GeneralSubtree is not a SEQUENCE" };
  const [base, ...rest] = children(buf, item);
  if (!base || (base.tag & 0x80) === 0) return { kind: "other", value: "?", invalid: "GeneralSubtree has no base name" };
  // minimum MUST be 0 and maximum MUST be absent (RFC 5280 4.2.1.10).
  const bad = rest.some((r) => {
    if (r.tag !== 0x80) return true;
    const b = content(buf, r);
    return !(b.length === 1 && b[0] === 0);
  });
  const view = content(buf, base);
  const text = Buffer.from(view).toString("latin1");
  const ascii = view.every((b) => b >= 0x20 && b <= 0x7e);
  const subtree = ((): Subtree => {
    switch (base.tag) {
      case 0x81:
        return ascii ? { kind: "email", value: text } : { kind: "email", value: text, invalid: "rfc822Name constraint is not ASCII" };
      case 0x82:
        return ascii ? { kind: "dns", value: text } : { kind: "dns", value: text, invalid: "dNSName constraint is not ASCII" };
      case 0x86:
        return ascii ? { kind: "uri", value: text } : { kind: "uri", value: text, invalid: "URI constraint is not ASCII" };
      case 0x87: {
        if (view.length !== 8 && view.length !== 32) return { kind: "ip", value: "?", invalid: "iPAddress constraint is not address+mask (8 or 32 bytes)" };
        const half = view.length / 2;
        return { kind: "ip", value: Buffer.from(view).toString("hex"), ip: view.slice(0, half), mask: view.slice(half) };
      }
      case 0xa4:
        return view.length > 0 ? { kind: "dn", value: "directoryName", der: new Uint8Array(view) } : { kind: "dn", value: "", invalid: "empty directoryName" };
      case 0xa0:
        return { kind: "other", value: "otherName" };
      default:
        return { kind: "other", value: `GeneralName [${base.tag & 0x1f}]` };
    }
  })();
  if (bad) subtree.invalid = "GeneralSubtree minimum/maximum must be absent";
  return subtree;
}

function decodeNameConstraints(v: Uint8Array): NameConstraints {
  const items = children(v, expectTag(single(v, "nameConstraints"), 0x30, "nameConstraints"));
  const out: NameConstraints = {};
  for (const item of items) {
    if (item.tag !== 0xa0 && item.tag !== 0xa1) {
      out.invalid = "nameConstraints has an unexpected element";
      continue;
    }
    const subtrees = children(v, item).map((t) => decodeSubtree(v, t));
    if (subtrees.length === 0) out.invalid = "nameConstraints has an empty subtree list";
    if (item.tag === 0xa0) out.permitted = subtrees;
    else out.excluded = subtrees;
  }
  if (out.permitted === undefined && out.excluded === undefined) out.invalid ??= "nameConstraints has neither permitted nor excluded subtrees";
  return out;
}

function decodeAki(v: Uint8Array): Uint8Array | undefined {
  const kid = children(v, expectTag(single(v, "authorityKeyIdentifier"), 0x30, "authorityKeyIdentifier")).find((t) => t.tag === 0x80);
  return kid ? new Uint8Array(content(v, kid)) : undefined;
}

/** Extensions a verifier understands, so that they may be critical. */
export const UNDERSTOOD_EXTENSIONS: ReadonlySet<string> = new Set([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.nameConstraints,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
]);

/** Decodes the extensions this package understands; unknown ones are only listed. */
export function decodeExtensions(list: RawExtension[]): DecodedExtensions {
  const out: DecodedExtensions = { list, malformed: [], duplicates: [] };
  const seen = new Set<string>();
  for (const ext of list) {
    if (seen.has(ext.oid)) out.duplicates.push(ext.oid);
    seen.add(ext.oid);
    const v = ext.value;
    try {
      switch (ext.oid) {
        case OID.basicConstraints:
          out.basicConstraints = { ...decodeBasicConstraints(v), critical: ext.critical };
          break;
        case OID.keyUsage:
          out.keyUsage = decodeKeyUsage(v);
          break;
        case OID.extKeyUsage:
          out.extKeyUsage = { oids: decodeOidList(v, "extKeyUsage"), critical: ext.critical };
          break;
        case OID.subjectAltName:
          out.san = { ...decodeGeneralNamesDer(v), critical: ext.critical };
          break;
        case OID.nameConstraints:
          out.nameConstraints = { ...decodeNameConstraints(v), critical: ext.critical };
          break;
        case OID.subjectKeyIdentifier:
          out.subjectKeyIdentifier = new Uint8Array(content(v, expectTag(single(v, "subjectKeyIdentifier"), 0x04, "subjectKeyIdentifier")));
          break;
        case OID.authorityKeyIdentifier: {
          const aki = decodeAki(v);
          if (aki) out.authorityKeyIdentifier = aki;
          break;
        }
        default:
          break; // opaque: only its criticality matters
      }
    } catch {
      out.malformed.push(ext.oid);
    }
  }
  return out;
}

function digits(s: string, from: number, len: number): number {
  const part = s.slice(from, from + len);
  if (!/^[0-9]+$/.test(part) || part.length !== len) throw new Error("time has a non-digit");
  return Number(part);
}

/** UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSS[.f]Z). */
function decodeTime(buf: Uint8Array, t: Tlv | undefined, what: string): Date {
  if (!t || (t.tag !== 0x17 && t.tag !== 0x18)) throw new Error(`${what} is not a UTCTime or GeneralizedTime`);
  const s = Buffer.from(content(buf, t)).toString("latin1");
  let year: number;
  let i: number;
  if (t.tag === 0x17) {
    const yy = digits(s, 0, 2);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    i = 2;
  } else {
    year = digits(s, 0, 4);
    i = 4;
  }
  const month = digits(s, i, 2);
  const day = digits(s, i + 2, 2);
  const hour = digits(s, i + 4, 2);
  const minute = digits(s, i + 6, 2);
  const second = digits(s, i + 8, 2);
  let rest = s.slice(i + 10);
  let ms = 0;
  if (t.tag === 0x18 && rest.startsWith(".")) {
    const m = /^\.([0-9]+)/.exec(rest);
    if (!m) throw new Error(`${what} has a malformed fraction`);
    ms = Math.floor(Number(`0.${m[1]}`) * 1000);
    rest = rest.slice((m[0] ?? "").length);
  }
  if (rest !== "Z") throw new Error(`${what} is not in UTC (Z)`);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) throw new Error(`${what} is out of range`);
  const d = new Date(Date.UTC(year, month - 1, day, hour, minute, second, ms));
  if (d.getUTCDate() !== day) throw new Error(`${what} names a day that does not exist`);
  return d;
}

function readExtensions(buf: Uint8Array, wrapper: Tlv): RawExtension[] {
  const [list, ...extra] = children(buf, wrapper);
  if (extra.length > 0) throw new Error("extensions wrapper holds more than one value");
  const items = children(buf, expectTag(list, 0x30, "extensions"));
  if (items.length === 0) throw new Error("extensions list is empty");
  return items.map((item) => {
    const parts = children(buf, expectTag(item, 0x30, "extension"));
    const id = decodeOid(content(buf, expectTag(parts[0], 0x06, "extension OID")));
    let critical = false;
    let value = parts[1];
    if (value?.tag === 0x01) {
      const b = content(buf, value);
      if (b.length !== 1) throw new Error(`extension ${id} has a malformed critical flag`);
      critical = b[0] !== 0;
      value = parts[2];
      if (parts.length !== 3) throw new Error(`extension ${id} has extra fields`);
    } else if (parts.length !== 2) throw new Error(`extension ${id} has extra fields`);
    return { oid: id, critical, value: new Uint8Array(content(buf, expectTag(value, 0x04, `extension ${id} value`))) };
  });
}

function algorithmOid(buf: Uint8Array, t: Tlv | undefined, what: string): string {
  return decodeOid(content(buf, expectTag(children(buf, expectTag(t, 0x30, what))[0], 0x06, `${what} OID`)));
}

/** Parses DER into the internal model, throwing ERR_CERT_INVALID (also for input over 64 KiB). */
export function parseCertificateDer(der: Uint8Array): ParsedCertificate {
  if (!(der instanceof Uint8Array)) throw new PkiError("ERR_CERT_INVALID", "certificate must be DER bytes");
  if (der.length > MAX_DER_BYTES) throw new PkiError("ERR_CERT_INVALID", `certificate is larger than ${MAX_DER_BYTES} bytes`);
  try {
    const outer = expectTag(readTlv(der, 0), 0x30, "Certificate");
    if (outer.end !== der.length) throw new Error(`${der.length - outer.end} trailing bytes after the certificate`);
    const [tbsT, sigAlgT, sigT, ...extra] = children(der, outer);
    if (extra.length > 0) throw new Error("Certificate has extra fields");
    const tbsFields = children(der, expectTag(tbsT, 0x30, "tbsCertificate"));
    let i = 0;
    let version = 1;
    if (tbsFields[0]?.tag === 0xa0) {
      const v = content(der, expectTag(children(der, tbsFields[0])[0], 0x02, "version"));
      if (v.length !== 1 || (v[0] ?? 0) > 2) throw new Error("version is not v1, v2 or v3");
      version = (v[0] ?? 0) + 1;
      i = 1;
    }
    const serialT = expectTag(tbsFields[i], 0x02, "serialNumber");
    const innerAlg = algorithmOid(der, tbsFields[i + 1], "signature");
    const issuer = describeNameDer(der, expectTag(tbsFields[i + 2], 0x30, "issuer"));
    const validity = children(der, expectTag(tbsFields[i + 3], 0x30, "validity"));
    if (validity.length !== 2) throw new Error("validity must hold notBefore and notAfter");
    const notBefore = decodeTime(der, validity[0], "notBefore");
    const notAfter = decodeTime(der, validity[1], "notAfter");
    const subject = describeNameDer(der, expectTag(tbsFields[i + 4], 0x30, "subject"));
    const spkiT = expectTag(tbsFields[i + 5], 0x30, "subjectPublicKeyInfo");
    const spki = new Uint8Array(der.subarray(spkiT.start, spkiT.end));
    let list: RawExtension[] = [];
    for (const t of tbsFields.slice(i + 6)) {
      if (t.tag === 0x81 || t.tag === 0x82) continue; // unique identifiers
      if (t.tag !== 0xa3 || list.length > 0) throw new Error("tbsCertificate has an unexpected field");
      if (version !== 3) throw new Error("only v3 certificates may carry extensions");
      list = readExtensions(der, t);
    }
    const extensions = decodeExtensions(list);
    if (extensions.duplicates.length > 0) throw new PkiError("ERR_CERT_INVALID", `certificate repeats extension ${extensions.duplicates.join(", ")}`);
    const sigOid = algorithmOid(der, sigAlgT, "signatureAlgorithm");
    const sig = content(der, expectTag(sigT, 0x03, "signatureValue"));
    if (sig[0] !== 0) throw new Error("signature has unused bits");
    return {
      der,
      version,
      serialNumber: new Uint8Array(content(der, serialT)),
      issuer,
      subject,
      notBefore,
      notAfter,
      publicKey: describeSpki(spki),
      tbs: der.subarray((tbsT as Tlv).start, (tbsT as Tlv).end),
      signatureAlgorithm: SIGNATURE_NAMES[sigOid] ?? sigOid,
      signatureAlgorithmOid: sigOid,
      innerSignatureAlgorithmOid: innerAlg,
      signature: sig.subarray(1),
      extensions,
      fingerprintSha256: createHash("sha256").update(der).digest("hex"),
    };
  } catch (err) {
    throw PkiError.from(err, "ERR_CERT_INVALID", `certificate is malformed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

const HASH_FOR_SIGNATURE: Record<string, string> = {
  [OID.ecdsaSha256]: "sha256",
  [OID.ecdsaSha384]: "sha384",
  [OID.ecdsaSha512]: "sha512",
  [OID.ecdsaSha1]: "sha1",
  [OID.sha256WithRsa]: "sha256",
  [OID.sha384WithRsa]: "sha384",
  [OID.sha512WithRsa]: "sha512",
  [OID.sha1WithRsa]: "sha1",
};

/** Signature algorithms accepted in chains: ECDSA and RSA PKCS#1 v1.5 with SHA-2. */
export const CHAIN_SIGNATURE_ALGORITHMS: ReadonlySet<string> = new Set([
  OID.ecdsaSha256,
  OID.ecdsaSha384,
  OID.ecdsaSha512,
  OID.sha256WithRsa,
  OID.sha384WithRsa,
  OID.sha512WithRsa,
]);

const EC_SPKI_HEADERS: { crv: string; header: Buffer; size: number }[] = [
  { crv: "P-256", header: Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004", "hex"), size: 32 },
  { crv: "P-384", header: Buffer.from("3076301006072a8648ce3d020106052b8104002203620004", "hex"), size: 48 },
];

const P256_SPKI_HEADER = (EC_SPKI_HEADERS[0] as { header: Buffer }).header;

/** True for the one DER encoding of a named-curve, uncompressed P-256 key (what every mesh CSR carries). */
function isP256Spki(spki: Uint8Array): boolean {
  if (spki.length !== P256_SPKI_HEADER.length + 64) return false;
  for (let i = 0; i < P256_SPKI_HEADER.length; i++) if (spki[i] !== P256_SPKI_HEADER[i]) return false;
  return true;
}

/** Imports a SubjectPublicKeyInfo for node:crypto verification, or undefined if OpenSSL cannot use it. */
export function publicKeyObject(spki: Uint8Array): KeyObject | undefined {
  try {
    const buf = Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength);
    // Named-curve EC keys go through JWK, which OpenSSL 3 imports about twice as fast as DER SPKI and as fast
    // as a raw point through WebCrypto (bench/issue.mjs measures the three), and synchronously.
    for (const { crv, header, size } of EC_SPKI_HEADERS) {
      if (buf.length === header.length + 2 * size && buf.subarray(0, header.length).equals(header)) {
        const x = buf.subarray(header.length, header.length + size).toString("base64url");
        const y = buf.subarray(header.length + size).toString("base64url");
        return createPublicKey({ key: { kty: "EC", crv, x, y }, format: "jwk" });
      }
    }
    return createPublicKey({ key: buf, format: "der", type: "spki" });
  } catch {
    return undefined;
  }
}

/**
 * Verifies a signature made with `algorithmOid` over `data`. Returns false (never throws) for a bad
 * signature, an unusable key, or an algorithm outside the supported set.
 */
export function verifySignature(options: {
  data: Uint8Array;
  signature: Uint8Array;
  algorithmOid: string;
  key: KeyObject | Uint8Array;
}): boolean {
  const hash = HASH_FOR_SIGNATURE[options.algorithmOid];
  if (!hash) return false;
  const key = options.key instanceof Uint8Array ? publicKeyObject(options.key) : options.key;
  if (!key) return false;
  const isEc = options.algorithmOid.startsWith("1.2.840.10045.4");
  if (isEc !== (key.asymmetricKeyType === "ec")) return false;
  if (!isEc && key.asymmetricKeyType !== "rsa") return false;
  try {
    return nodeVerify(hash, options.data, key, options.signature); // ECDSA signatures are DER by default
  } catch {
    return false;
  }
}
