import * as w from "./der-writer.ts";
import { children, content, decodeOid, expectTag, readTlv, whole, type Tlv } from "./der-reader.ts";
import { PkiError } from "./errors.ts";
import { decodeGeneralNamesDer } from "./general-names.ts";
import { checkP256Spki, exportPublicKey } from "./keys.ts";
import { parseSpiffeId } from "./names.ts";
import { OID, SIGNATURE_NAMES } from "./oids.ts";
import { toDer } from "./pem.ts";
import { signDer, signerFor } from "./signer.ts";
import { describeNameDer, describeSpki, verifySignature, type RawExtension } from "./x509.ts";
import type { CryptoKeyPair } from "./webcrypto.ts";

/** A plain-data view of a PKCS#10 certificate signing request. */
export interface CsrSummary {
  /** The version field as encoded (0 is the only defined value, "v1"). */
  version: number;
  subject: { commonName?: string; text: string };
  san: { dns: string[]; uri: string[]; ip: string[]; email: string[]; other: number };
  publicKey: {
    algorithm: "ECDSA" | "RSA" | "Ed25519" | "unknown";
    curve?: "P-256" | "P-384" | "P-521" | string;
    /** False when EC parameters are explicit (a strict validator rejects those). */
    namedCurve: boolean;
    bits?: number;
    /** DER SubjectPublicKeyInfo. */
    spki: Uint8Array;
  };
  signatureAlgorithm: string;
  /** The self-signature verifies with the enclosed key. */
  signatureValid: boolean;
  extensions: { oid: string; critical: boolean }[];
  /** DER of the request. */
  der: Uint8Array;
}

function csrError(message: string, cause?: unknown): PkiError {
  return new PkiError("ERR_CSR_INVALID", message, cause === undefined ? undefined : { cause });
}

/** Reads the Extension list of an extensionRequest attribute strictly (DER: no explicit critical FALSE, no duplicates). */
function readExtensionRequest(buf: Uint8Array, list: Tlv): RawExtension[] {
  expectTag(list, 0x30, "extensionRequest value");
  const out: RawExtension[] = [];
  const seen = new Set<string>();
  for (const item of children(buf, list)) {
    expectTag(item, 0x30, "requested extension");
    const parts = children(buf, item);
    const id = decodeOid(content(buf, expectTag(parts[0], 0x06, "requested extension OID")));
    let critical = false;
    let valueItem = parts[1];
    if (valueItem?.tag === 0x01) {
      const b = content(buf, valueItem);
      if (b.length !== 1 || (b[0] !== 0 && b[0] !== 0xff)) throw csrError(`requested extension ${id} has a malformed critical flag`);
      critical = b[0] === 0xff;
      if (!critical) throw csrError(`requested extension ${id} encodes critical=FALSE explicitly, which DER forbids`);
      valueItem = parts[2];
      if (parts.length !== 3) throw csrError(`requested extension ${id} has extra fields`);
    } else if (parts.length !== 2) throw csrError(`requested extension ${id} has extra fields`);
    if (valueItem?.tag !== 0x04) throw csrError(`requested extension ${id} has no OCTET STRING value`);
    if (seen.has(id)) throw csrError(`requested extension ${id} appears twice`);
    seen.add(id);
    out.push({ oid: id, critical, value: content(buf, valueItem) });
  }
  return out;
}

/**
 * Parses any PKCS#10 request (PEM `CERTIFICATE REQUEST` / `NEW CERTIFICATE REQUEST`, or DER) into a summary
 * and checks its self-signature. Never throws except PkiError ERR_CSR_INVALID (malformed structure,
 * version other than v1, duplicate or non-DER extensions), ERR_PEM_INVALID, ERR_DER_INVALID.
 * A wrong signature is not an error: it is reported as `signatureValid: false`.
 */
export async function parseCsr(input: string | Uint8Array): Promise<CsrSummary> {
  let der: Uint8Array;
  let parsed: ReturnType<typeof readCsr>;
  try {
    der = toDer(input, "CERTIFICATE REQUEST");
    parsed = readCsr(der);
  } catch (err) {
    throw PkiError.from(err, "ERR_CSR_INVALID", `CSR is malformed: ${err instanceof Error ? err.message : String(err)}`);
  }
  const { summary, tbs, signature, algorithmOid } = parsed;
  summary.signatureValid = verifySignature({ data: tbs, signature, algorithmOid, key: summary.publicKey.spki });
  return summary;
}

// The hot path of issuance: a direct DER walk (pkijs object construction costs milliseconds per request).
function readCsr(der: Uint8Array): { summary: CsrSummary; tbs: Uint8Array; signature: Uint8Array; algorithmOid: string } {
  const outer = expectTag(readTlv(der, 0), 0x30, "CertificationRequest");
  if (outer.end !== der.length) throw csrError("CSR has trailing bytes");
  const [info, alg, sig, ...extra] = children(der, outer);
  if (extra.length > 0) throw csrError("CSR has extra fields");
  expectTag(info, 0x30, "certificationRequestInfo");
  const algorithmOid = decodeOid(content(der, expectTag(children(der, expectTag(alg, 0x30, "signatureAlgorithm"))[0], 0x06, "signature algorithm OID")));
  const sigBytes = content(der, expectTag(sig, 0x03, "signature"));
  if (sigBytes[0] !== 0) throw csrError("CSR signature has unused bits");
  const [version, subject, spki, attributes, ...more] = children(der, info as Tlv);
  if (more.length > 0) throw csrError("certificationRequestInfo has extra fields");
  const v = content(der, expectTag(version, 0x02, "version"));
  if (v.length !== 1 || v[0] !== 0) {
    const shown = v.length <= 4 ? String(v.reduce((a, b) => a * 256 + b, 0)) : `0x${Buffer.from(v).toString("hex")}`;
    throw csrError(`CSR version ${shown} is not supported (only v1, encoded 0, is defined)`);
  }
  const name = describeNameDer(der, expectTag(subject, 0x30, "subject"));
  const spkiDer = new Uint8Array(whole(der, expectTag(spki, 0x30, "subjectPKInfo")));
  const publicKey = describeSpki(spkiDer);
  let extensions: RawExtension[] = [];
  if (attributes) {
    expectTag(attributes, 0xa0, "attributes");
    let requests = 0;
    for (const attr of children(der, attributes)) {
      const [type, values] = children(der, expectTag(attr, 0x30, "attribute"));
      if (decodeOid(content(der, expectTag(type, 0x06, "attribute type"))) !== OID.extensionRequest) continue;
      if (++requests > 1) throw csrError("CSR has more than one extensionRequest attribute");
      const vals = children(der, expectTag(values, 0x31, "attribute values"));
      if (vals.length !== 1) throw csrError("extensionRequest attribute must hold exactly one value");
      extensions = readExtensionRequest(der, vals[0] as Tlv);
    }
  }
  const san = { dns: [] as string[], uri: [] as string[], ip: [] as string[], email: [] as string[], other: 0 };
  const sanExt = extensions.find((e) => e.oid === OID.subjectAltName);
  if (sanExt) {
    const names = decodeGeneralNamesDer(sanExt.value);
    if (names.invalid.length > 0) throw csrError(`subjectAltName is malformed: ${names.invalid.join("; ")}`);
    Object.assign(san, { dns: names.dns, uri: names.uri, ip: names.ip, email: names.email, other: names.other + names.directoryNames.length });
  }
  const pk: CsrSummary["publicKey"] = { algorithm: publicKey.algorithm, namedCurve: publicKey.namedCurve, spki: spkiDer };
  if (publicKey.curve !== undefined) pk.curve = publicKey.curve;
  if (publicKey.bits !== undefined) pk.bits = publicKey.bits;
  return {
    summary: {
      version: 0,
      subject: name.commonName === undefined ? { text: name.text } : { commonName: name.commonName, text: name.text },
      san,
      publicKey: pk,
      signatureAlgorithm: SIGNATURE_NAMES[algorithmOid] ?? algorithmOid,
      signatureValid: false,
      extensions: extensions.map((e) => ({ oid: e.oid, critical: e.critical })),
      der,
    },
    tbs: whole(der, info as Tlv),
    signature: sigBytes.subarray(1),
    algorithmOid,
  };
}

/** DER of a GeneralNames SEQUENCE with one DNS name and optionally one URI. */
export function sanValue(dns: string, uri?: string): w.DerNode {
  return uri === undefined ? w.seq(w.ia5String(0x82, dns)) : w.seq(w.ia5String(0x82, dns), w.ia5String(0x86, uri));
}

const CSR_VERSION = w.encode(w.smallInteger(0));
const EXTENSION_REQUEST_OID = w.oid(OID.extensionRequest);
const SAN_OID = w.oid(OID.subjectAltName);

/** Longest CommonName X.520 allows (ub-common-name). */
export const MAX_COMMON_NAME = 64;

/**
 * Creates a DER CSR for a mesh identity: DNS SAN = `identity`, optional URI SAN = `spiffeId`, subject CN =
 * `commonName` (default `identity`; omitted when longer than 64 characters; pass "" for an empty subject),
 * ecdsa-with-SHA256 signature (the private key must be P-256). Throws ERR_NAME_INVALID, ERR_SPIFFE_ID_INVALID,
 * ERR_KEY_INVALID, ERR_KEY_UNSUPPORTED.
 */
export async function createCsr(options: {
  keyPair: CryptoKeyPair;
  identity: string;
  spiffeId?: string;
  commonName?: string;
}): Promise<Uint8Array> {
  const { keyPair, identity } = options;
  if (typeof identity !== "string" || !/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(identity)) {
    throw new PkiError("ERR_NAME_INVALID", `identity ${JSON.stringify(identity)} is not a DNS name`);
  }
  if (options.spiffeId !== undefined) parseSpiffeId(options.spiffeId);
  const spki = await exportPublicKey(keyPair.publicKey, { format: "der" });
  checkP256Spki(spki);
  const cn = options.commonName ?? (identity.length <= MAX_COMMON_NAME ? identity : "");
  if (cn.length > MAX_COMMON_NAME) throw new PkiError("ERR_NAME_INVALID", `common name is longer than ${MAX_COMMON_NAME} characters`);
  const signer = signerFor(keyPair.privateKey);
  if ((keyPair.privateKey.algorithm as { namedCurve?: string }).namedCurve !== "P-256") {
    throw new PkiError("ERR_KEY_UNSUPPORTED", "CSRs are signed with ECDSA P-256 keys only");
  }
  // PKCS#10 CertificationRequestInfo: version 0, subject, SPKI, [0] attributes holding one extensionRequest with the
  // SAN (critical when the subject is empty, RFC 5280 4.2.1.6).
  const info = w.encode(w.seq(
    CSR_VERSION,
    w.commonNameName(cn),
    spki,
    w.tlv(0xa0, w.seq(EXTENSION_REQUEST_OID, w.set(w.seq(w.extension(SAN_OID, cn === "", sanValue(identity, options.spiffeId)))))),
  ));
  return signDer(info, signer);
}
