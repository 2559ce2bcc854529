// Internal model of a parsed certificate or CSR, shared by certificate.ts, csr.ts, ca.ts and verify.ts.
import { createHash, createPublicKey, verify as nodeVerify, type KeyObject } from "node:crypto";
import * as asn1js from "asn1js";
import * as pkijs from "pkijs";
import { CURVE_NAMES, OID, SIGNATURE_NAMES, parseDer } from "./der.ts";
import { PkiError, type PkiErrorCode } from "./errors.ts";
import { decodeGeneralNames, type GeneralNames } from "./general-names.ts";
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

function attributeText(value: asn1js.AsnType): string {
  const v = (value as { valueBlock?: { value?: unknown } }).valueBlock?.value;
  if (typeof v === "string") return v;
  const view = (value as asn1js.Primitive).valueBlock?.valueHexView;
  return view instanceof Uint8Array ? `#${Buffer.from(view).toString("hex")}` : "?";
}

export function describeName(rdn: pkijs.RelativeDistinguishedNames): NameInfo {
  const parts: string[] = [];
  let commonName: string | undefined;
  for (const tv of rdn.typesAndValues) {
    const text = attributeText(tv.value);
    if (tv.type === OID.commonName && commonName === undefined) commonName = text;
    const escaped = text.replace(/([,+"\\<>;=])/g, "\\$1");
    parts.push(`${ATTRIBUTE_NAMES[tv.type] ?? tv.type}=${escaped}`);
  }
  const der = new Uint8Array(rdn.valueBeforeDecode.byteLength > 0 ? rdn.valueBeforeDecode : rdn.toSchema().toBER(false));
  return commonName === undefined ? { text: parts.join(", "), der } : { commonName, text: parts.join(", "), der };
}

/** Describes a DER Name (fast reader). */
export function describeNameDer(buf: Uint8Array, name: Tlv): NameInfo {
  const parts: string[] = [];
  let commonName: string | undefined;
  for (const rdn of children(buf, name)) {
    expectTag(rdn, 0x31, "RelativeDistinguishedName");
    for (const atv of children(buf, rdn)) {
      const [type, value] = children(buf, expectTag(atv, 0x30, "AttributeTypeAndValue"));
      const id = decodeOid(content(buf, expectTag(type, 0x06, "attribute type")));
      if (!value) throw new Error("attribute has no value");
      const text = decodeString(buf, value);
      if (id === OID.commonName && commonName === undefined) commonName = text;
      parts.push(`${ATTRIBUTE_NAMES[id] ?? id}=${text.replace(/([,+"\\<>;=])/g, "\\$1")}`);
    }
  }
  const der = new Uint8Array(buf.subarray(name.start, name.end));
  return commonName === undefined ? { text: parts.join(", "), der } : { commonName, text: parts.join(", "), der };
}

/** Summarises DER SubjectPublicKeyInfo (fast reader). */
export function describeSpki(spki: Uint8Array): PublicKeySummary {
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

function intValue(i: asn1js.Integer): number | undefined {
  const view = i.valueBlock.valueHexView;
  if (view.length > 4 || (view[0] ?? 0) & 0x80) return undefined;
  return i.valueBlock.valueDec;
}

function decodeBasicConstraints(value: asn1js.AsnType): { ca: boolean; pathLength?: number } {
  if (!(value instanceof asn1js.Sequence)) throw new Error("basicConstraints is not a SEQUENCE");
  let ca = false;
  let pathLength: number | undefined;
  for (const item of value.valueBlock.value) {
    if (item instanceof asn1js.Boolean) ca = item.valueBlock.value;
    else if (item instanceof asn1js.Integer) {
      const n = intValue(item);
      if (n === undefined) throw new Error("basicConstraints pathLenConstraint is negative or too large");
      pathLength = n;
    } else throw new Error("basicConstraints has an unexpected element");
  }
  return pathLength === undefined ? { ca } : { ca, pathLength };
}

function decodeKeyUsage(value: asn1js.AsnType): string[] {
  if (!(value instanceof asn1js.BitString)) throw new Error("keyUsage is not a BIT STRING");
  const bytes = value.valueBlock.valueHexView;
  const usages: string[] = [];
  for (let bit = 0; bit < bytes.length * 8; bit++) {
    if ((bytes[bit >> 3] ?? 0) & (0x80 >> (bit & 7))) usages.push(KEY_USAGE_NAMES[bit] ?? `bit${bit}`);
  }
  return usages;
}

function decodeOidList(value: asn1js.AsnType, what: string): string[] {
  if (!(value instanceof asn1js.Sequence)) throw new Error(`${what} is not a SEQUENCE`);
  return value.valueBlock.value.map((item) => {
    if (!(item instanceof asn1js.ObjectIdentifier)) throw new Error(`${what} holds a non-OID`);
    return item.valueBlock.toString();
  });
}

function decodeSubtree(item: asn1js.AsnType): Subtree {
  if (!(item instanceof asn1js.Sequence)) return { kind: "other", value: "?", invalid: "GeneralSubtree is not a SEQUENCE" };
  const [base, ...rest] = item.valueBlock.value;
  if (!base || base.idBlock.tagClass !== 3) return { kind: "other", value: "?", invalid: "GeneralSubtree has no base name" };
  // minimum MUST be 0 and maximum MUST be absent (RFC 5280 4.2.1.10).
  const bad = rest.some((r) => {
    if (r.idBlock.tagClass !== 3) return true;
    if (r.idBlock.tagNumber === 1) return true;
    const view = (r as asn1js.Primitive).valueBlock?.valueHexView;
    return r.idBlock.tagNumber === 0 && !(view instanceof Uint8Array && view.length === 1 && view[0] === 0);
  });
  const view = (base as asn1js.Primitive).valueBlock?.valueHexView;
  const text = view instanceof Uint8Array ? Buffer.from(view).toString("latin1") : "";
  const ascii = view instanceof Uint8Array && view.every((b) => b >= 0x20 && b <= 0x7e);
  const subtree = ((): Subtree => {
    switch (base.idBlock.tagNumber) {
      case 1:
        return ascii ? { kind: "email", value: text } : { kind: "email", value: text, invalid: "rfc822Name constraint is not ASCII" };
      case 2:
        return ascii ? { kind: "dns", value: text } : { kind: "dns", value: text, invalid: "dNSName constraint is not ASCII" };
      case 6:
        return ascii ? { kind: "uri", value: text } : { kind: "uri", value: text, invalid: "URI constraint is not ASCII" };
      case 7: {
        if (!(view instanceof Uint8Array) || (view.length !== 8 && view.length !== 32)) {
          return { kind: "ip", value: "?", invalid: "iPAddress constraint is not address+mask (8 or 32 bytes)" };
        }
        const half = view.length / 2;
        return { kind: "ip", value: Buffer.from(view).toString("hex"), ip: view.slice(0, half), mask: view.slice(half) };
      }
      case 4: {
        const inner = base instanceof asn1js.Constructed ? base.valueBlock.value[0] : undefined;
        return inner ? { kind: "dn", value: "directoryName", der: new Uint8Array(inner.toBER(false)) } : { kind: "dn", value: "", invalid: "empty directoryName" };
      }
      case 0:
        return { kind: "other", value: "otherName" };
      default:
        return { kind: "other", value: `GeneralName [${base.idBlock.tagNumber}]` };
    }
  })();
  if (bad) subtree.invalid = "GeneralSubtree minimum/maximum must be absent";
  return subtree;
}

function decodeNameConstraints(value: asn1js.AsnType): NameConstraints {
  if (!(value instanceof asn1js.Sequence)) throw new Error("nameConstraints is not a SEQUENCE");
  const out: NameConstraints = {};
  for (const item of value.valueBlock.value) {
    if (item.idBlock.tagClass !== 3 || (item.idBlock.tagNumber !== 0 && item.idBlock.tagNumber !== 1)) {
      out.invalid = "nameConstraints has an unexpected element";
      continue;
    }
    const subtrees = item instanceof asn1js.Constructed ? item.valueBlock.value.map(decodeSubtree) : [];
    if (subtrees.length === 0) out.invalid = "nameConstraints has an empty subtree list";
    if (item.idBlock.tagNumber === 0) out.permitted = subtrees;
    else out.excluded = subtrees;
  }
  if (out.permitted === undefined && out.excluded === undefined) out.invalid ??= "nameConstraints has neither permitted nor excluded subtrees";
  return out;
}

function octets(value: asn1js.AsnType): Uint8Array {
  if (!(value instanceof asn1js.OctetString)) throw new Error("not an OCTET STRING");
  return new Uint8Array(value.valueBlock.valueHexView);
}

function decodeAki(value: asn1js.AsnType): Uint8Array | undefined {
  if (!(value instanceof asn1js.Sequence)) throw new Error("authorityKeyIdentifier is not a SEQUENCE");
  const kid = value.valueBlock.value.find((i) => i.idBlock.tagClass === 3 && i.idBlock.tagNumber === 0);
  const view = (kid as asn1js.Primitive | undefined)?.valueBlock?.valueHexView;
  return view instanceof Uint8Array ? new Uint8Array(view) : undefined;
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
    if (!UNDERSTOOD_EXTENSIONS.has(ext.oid)) continue; // opaque: only its criticality matters
    let value: asn1js.AsnType;
    try {
      value = parseDer(ext.value, `extension ${ext.oid}`);
    } catch {
      out.malformed.push(ext.oid);
      continue;
    }
    try {
      switch (ext.oid) {
        case OID.basicConstraints:
          out.basicConstraints = { ...decodeBasicConstraints(value), critical: ext.critical };
          break;
        case OID.keyUsage:
          out.keyUsage = decodeKeyUsage(value);
          break;
        case OID.extKeyUsage:
          out.extKeyUsage = { oids: decodeOidList(value, "extKeyUsage"), critical: ext.critical };
          break;
        case OID.subjectAltName:
          out.san = { ...decodeGeneralNames(value), critical: ext.critical };
          break;
        case OID.nameConstraints:
          out.nameConstraints = { ...decodeNameConstraints(value), critical: ext.critical };
          break;
        case OID.subjectKeyIdentifier:
          out.subjectKeyIdentifier = octets(value);
          break;
        case OID.authorityKeyIdentifier: {
          const aki = decodeAki(value);
          if (aki) out.authorityKeyIdentifier = aki;
          break;
        }
        default:
          break;
      }
    } catch {
      out.malformed.push(ext.oid);
    }
  }
  return out;
}



function rsaBits(spkiBits: Uint8Array): number | undefined {
  try {
    const rsa = asn1js.fromBER(spkiBits);
    const modulus = rsa.result instanceof asn1js.Sequence ? rsa.result.valueBlock.value[0] : undefined;
    if (!(modulus instanceof asn1js.Integer)) return undefined;
    const view = modulus.valueBlock.valueHexView;
    let i = 0;
    while (i < view.length && view[i] === 0) i++;
    if (i === view.length) return 0;
    return (view.length - i) * 8 - Math.clz32(view[i] ?? 0) + 24;
  } catch {
    return undefined;
  }
}

/** Summarises a SubjectPublicKeyInfo. */
export function describePublicKey(info: pkijs.PublicKeyInfo, spki: Uint8Array): PublicKeySummary {
  const alg = info.algorithm.algorithmId;
  const bits = new Uint8Array(info.subjectPublicKey.valueBlock.valueHexView);
  if (alg === OID.ecPublicKey) {
    const params = info.algorithm.algorithmParams as asn1js.AsnType | undefined;
    if (params instanceof asn1js.ObjectIdentifier) {
      const oid = params.valueBlock.toString();
      const curve = CURVE_NAMES[oid] ?? oid;
      const size = curve === "P-256" ? 256 : curve === "P-384" ? 384 : curve === "P-521" ? 521 : undefined;
      return size === undefined ? { algorithm: "ECDSA", curve, namedCurve: true, spki } : { algorithm: "ECDSA", curve, namedCurve: true, bits: size, spki };
    }
    const fieldBytes = bits.length > 1 ? Math.floor((bits.length - 1) / 2) : 0;
    const curve = fieldBytes === 32 ? "P-256" : fieldBytes === 48 ? "P-384" : fieldBytes === 66 ? "P-521" : "explicit";
    return { algorithm: "ECDSA", curve, namedCurve: false, spki };
  }
  if (alg === OID.rsaEncryption) {
    const n = rsaBits(bits);
    return n === undefined ? { algorithm: "RSA", namedCurve: false, spki } : { algorithm: "RSA", namedCurve: false, bits: n, spki };
  }
  if (alg === OID.ed25519) return { algorithm: "Ed25519", namedCurve: false, bits: 256, spki };
  return { algorithm: "unknown", namedCurve: false, spki };
}

/** Reads pkijs Extension objects into raw form. */
function rawExtensions(exts: pkijs.Extension[] | undefined): RawExtension[] {
  return (exts ?? []).map((e) => ({
    oid: e.extnID,
    critical: e.critical,
    value: new Uint8Array(e.extnValue.valueBlock.valueHexView),
  }));
}

function timeValue(t: pkijs.Time, what: string, code: PkiErrorCode): Date {
  const d = t.value;
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new PkiError(code, `${what} is not a valid time`);
  return d;
}

/** Parses DER into the internal model, throwing ERR_CERT_INVALID (or ERR_DER_INVALID for bytes that are not DER). */
export function parseCertificateDer(der: Uint8Array): ParsedCertificate {
  const asn1 = parseDer(der, "certificate", "ERR_CERT_INVALID");
  let cert: pkijs.Certificate;
  try {
    cert = new pkijs.Certificate({ schema: asn1 });
  } catch (err) {
    throw new PkiError("ERR_CERT_INVALID", `not an X.509 certificate: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  try {
    const sig = cert.signatureValue.valueBlock;
    if (sig.unusedBits !== 0) throw new PkiError("ERR_CERT_INVALID", "certificate signature has unused bits");
    const spki = new Uint8Array(cert.subjectPublicKeyInfo.toSchema().toBER(false));
    const extensions = decodeExtensions(rawExtensions(cert.extensions));
    if (extensions.duplicates.length > 0) {
      throw new PkiError("ERR_CERT_INVALID", `certificate repeats extension ${extensions.duplicates.join(", ")}`);
    }
    const sigOid = cert.signatureAlgorithm.algorithmId;
    return {
      der,
      version: cert.version + 1,
      serialNumber: new Uint8Array(cert.serialNumber.valueBlock.valueHexView),
      issuer: describeName(cert.issuer),
      subject: describeName(cert.subject),
      notBefore: timeValue(cert.notBefore, "notBefore", "ERR_CERT_INVALID"),
      notAfter: timeValue(cert.notAfter, "notAfter", "ERR_CERT_INVALID"),
      publicKey: describePublicKey(cert.subjectPublicKeyInfo, spki),
      tbs: new Uint8Array(cert.tbsView),
      signatureAlgorithm: SIGNATURE_NAMES[sigOid] ?? sigOid,
      signatureAlgorithmOid: sigOid,
      innerSignatureAlgorithmOid: cert.signature.algorithmId,
      signature: new Uint8Array(sig.valueHexView),
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

/** Imports a SubjectPublicKeyInfo for node:crypto verification, or undefined if OpenSSL cannot use it. */
export function publicKeyObject(spki: Uint8Array): KeyObject | undefined {
  try {
    const buf = Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength);
    // Named-curve EC keys go through JWK, which OpenSSL 3 imports about twice as fast as DER SPKI.
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
