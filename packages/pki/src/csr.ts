import * as asn1js from "asn1js";
import * as pkijs from "pkijs";
import { asBufferSource, OID, SIGNATURE_NAMES, parseDer } from "./der.ts";
import { engine } from "./engine.ts";
import { PkiError } from "./errors.ts";
import { decodeGeneralNames } from "./general-names.ts";
import { checkP256Spki, exportPublicKey } from "./keys.ts";
import { parseSpiffeId } from "./names.ts";
import { toDer } from "./pem.ts";
import { describeName, describePublicKey, verifySignature, type RawExtension } from "./x509.ts";
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
function readExtensionRequest(value: asn1js.AsnType): RawExtension[] {
  if (!(value instanceof asn1js.Sequence)) throw csrError("extensionRequest attribute is not a SEQUENCE of extensions");
  const out: RawExtension[] = [];
  const seen = new Set<string>();
  for (const item of value.valueBlock.value) {
    if (!(item instanceof asn1js.Sequence)) throw csrError("requested extension is not a SEQUENCE");
    const parts = item.valueBlock.value;
    const oid = parts[0];
    if (!(oid instanceof asn1js.ObjectIdentifier)) throw csrError("requested extension has no OID");
    const id = oid.valueBlock.toString();
    let critical = false;
    let valueItem = parts[1];
    if (valueItem instanceof asn1js.Boolean) {
      critical = valueItem.valueBlock.value;
      if (!critical) throw csrError(`requested extension ${id} encodes critical=FALSE explicitly, which DER forbids`);
      valueItem = parts[2];
      if (parts.length !== 3) throw csrError(`requested extension ${id} has extra fields`);
    } else if (parts.length !== 2) throw csrError(`requested extension ${id} has extra fields`);
    if (!(valueItem instanceof asn1js.OctetString)) throw csrError(`requested extension ${id} has no OCTET STRING value`);
    if (seen.has(id)) throw csrError(`requested extension ${id} appears twice`);
    seen.add(id);
    out.push({ oid: id, critical, value: new Uint8Array(valueItem.valueBlock.valueHexView) });
  }
  return out;
}

/**
 * Parses any PKCS#10 request (PEM `CERTIFICATE REQUEST` / `NEW CERTIFICATE REQUEST`, or DER) into a summary
 * and checks its self-signature. Never throws except PkiError ERR_CSR_INVALID (malformed structure,
 * version other than v1, duplicate or non-DER extensions), ERR_PEM_INVALID, ERR_DER_INVALID, ERR_INPUT_TOO_LARGE.
 * A wrong signature is not an error: it is reported as `signatureValid: false`.
 */
export async function parseCsr(input: string | Uint8Array): Promise<CsrSummary> {
  return parseCsrSync(input);
}

/** Synchronous form of {@link parseCsr}. */
export function parseCsrSync(input: string | Uint8Array): CsrSummary {
  try {
    const der = toDer(input, "CERTIFICATE REQUEST");
    const asn1 = parseDer(der, "CSR", "ERR_CSR_INVALID");
    let csr: pkijs.CertificationRequest;
    try {
      csr = new pkijs.CertificationRequest({ schema: asn1 });
    } catch (err) {
      throw csrError(`not a PKCS#10 request: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    if (csr.version !== 0) throw csrError(`CSR version ${csr.version} is not supported (only v1, encoded 0, is defined)`);
    const sig = csr.signatureValue.valueBlock;
    if (sig.unusedBits !== 0) throw csrError("CSR signature has unused bits");
    const spki = new Uint8Array(csr.subjectPublicKeyInfo.toSchema().toBER(false));
    const publicKey = describePublicKey(csr.subjectPublicKeyInfo, spki);
    let extensions: RawExtension[] = [];
    const requests = (csr.attributes ?? []).filter((a) => a.type === OID.extensionRequest);
    if (requests.length > 1) throw csrError("CSR has more than one extensionRequest attribute");
    const request = requests[0];
    if (request) {
      if (request.values.length !== 1) throw csrError("extensionRequest attribute must hold exactly one value");
      extensions = readExtensionRequest(request.values[0] as asn1js.AsnType);
    }
    const san = { dns: [] as string[], uri: [] as string[], ip: [] as string[], email: [] as string[], other: 0 };
    const sanExt = extensions.find((e) => e.oid === OID.subjectAltName);
    if (sanExt) {
      const names = decodeGeneralNames(parseDer(sanExt.value, "subjectAltName", "ERR_CSR_INVALID"));
      if (names.invalid.length > 0) throw csrError(`subjectAltName is malformed: ${names.invalid.join("; ")}`);
      Object.assign(san, { dns: names.dns, uri: names.uri, ip: names.ip, email: names.email, other: names.other + names.directoryNames.length });
    }
    const sigOid = csr.signatureAlgorithm.algorithmId;
    const signatureValid = verifySignature({
      data: new Uint8Array(csr.tbsView),
      signature: new Uint8Array(sig.valueHexView),
      algorithmOid: sigOid,
      key: spki,
    });
    const subject = describeName(csr.subject);
    const pk: CsrSummary["publicKey"] = { algorithm: publicKey.algorithm, namedCurve: publicKey.namedCurve, spki };
    if (publicKey.curve !== undefined) pk.curve = publicKey.curve;
    if (publicKey.bits !== undefined) pk.bits = publicKey.bits;
    return {
      version: csr.version,
      subject: subject.commonName === undefined ? { text: subject.text } : { commonName: subject.commonName, text: subject.text },
      san,
      publicKey: pk,
      signatureAlgorithm: SIGNATURE_NAMES[sigOid] ?? sigOid,
      signatureValid,
      extensions: extensions.map((e) => ({ oid: e.oid, critical: e.critical })),
      der,
    };
  } catch (err) {
    throw PkiError.from(err, "ERR_CSR_INVALID", `CSR could not be parsed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function ia5Name(tag: number, value: string): asn1js.Primitive {
  return new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: tag }, valueHex: asBufferSource(new Uint8Array(Buffer.from(value, "latin1"))) });
}

/** DER of a GeneralNames SEQUENCE with one DNS name and optionally one URI. */
export function sanValue(dns: string, uri?: string): Uint8Array {
  const names = [ia5Name(2, dns)];
  if (uri !== undefined) names.push(ia5Name(6, uri));
  return new Uint8Array(new asn1js.Sequence({ value: names }).toBER(false));
}

/** Longest CommonName X.520 allows (ub-common-name). */
export const MAX_COMMON_NAME = 64;

/**
 * Creates a DER CSR for a mesh identity: DNS SAN = `identity`, optional URI SAN = `spiffeId`, subject CN =
 * `commonName` (default `identity`; omitted when longer than 64 characters; pass "" for an empty subject),
 * ecdsa-with-SHA256 signature. Throws ERR_NAME_INVALID, ERR_SPIFFE_ID_INVALID, ERR_KEY_UNSUPPORTED.
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
  const csr = new pkijs.CertificationRequest();
  csr.version = 0;
  const cn = options.commonName ?? (identity.length <= MAX_COMMON_NAME ? identity : "");
  if (cn.length > MAX_COMMON_NAME) throw new PkiError("ERR_NAME_INVALID", `common name is longer than ${MAX_COMMON_NAME} characters`);
  if (cn !== "") {
    csr.subject.typesAndValues.push(new pkijs.AttributeTypeAndValue({ type: OID.commonName, value: new asn1js.Utf8String({ value: cn }) }));
  }
  csr.subjectPublicKeyInfo = pkijs.PublicKeyInfo.fromBER(asBufferSource(spki));
  const san = new pkijs.Extension({
    extnID: OID.subjectAltName,
    critical: cn === "",
    extnValue: asBufferSource(sanValue(identity, options.spiffeId)).buffer,
  });
  csr.attributes = [
    new pkijs.Attribute({ type: OID.extensionRequest, values: [new pkijs.Extensions({ extensions: [san] }).toSchema()] }),
  ];
  await csr.sign(keyPair.privateKey as never, "SHA-256", engine());
  return new Uint8Array(csr.toSchema().toBER(false));
}
