import { PkiError } from "./errors.ts";
import { toDer } from "./pem.ts";
import { ekuName, parseCertificateDer, type ParsedCertificate } from "./x509.ts";
import { hex } from "./bytes.ts";

/** A plain-data view of an X.509 certificate. */
export interface CertificateSummary {
  subject: { commonName?: string; text: string };
  issuer: { commonName?: string; text: string };
  /** Serial number, lowercase hex as encoded (no sign byte stripping). */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  san: { dns: string[]; uri: string[]; ip: string[]; email: string[] };
  ca: boolean;
  pathLength?: number;
  keyUsage: ("digitalSignature" | "keyEncipherment" | "keyCertSign" | "cRLSign" | string)[];
  extKeyUsage: ("serverAuth" | "clientAuth" | string)[];
  publicKey: { algorithm: string; curve?: string; namedCurve: boolean; bits?: number };
  signatureAlgorithm: string;
  /** SHA-256 of the DER, lowercase hex without colons. */
  fingerprintSha256: string;
  /** Subject and issuer names are equal (the certificate may still be signed by another key). */
  selfSigned: boolean;
  /** X.509 version (1–3). */
  version: number;
  /** Every extension present, by OID. */
  extensions: { oid: string; critical: boolean }[];
  der: Uint8Array;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Builds the summary from the internal model. */
export function summarize(p: ParsedCertificate): CertificateSummary {
  const ext = p.extensions;
  const san = ext.san ?? { dns: [], uri: [], ip: [], email: [] };
  const publicKey: CertificateSummary["publicKey"] = { algorithm: p.publicKey.algorithm, namedCurve: p.publicKey.namedCurve };
  if (p.publicKey.curve !== undefined) publicKey.curve = p.publicKey.curve;
  if (p.publicKey.bits !== undefined) publicKey.bits = p.publicKey.bits;
  const summary: CertificateSummary = {
    subject: p.subject.commonName === undefined ? { text: p.subject.text } : { commonName: p.subject.commonName, text: p.subject.text },
    issuer: p.issuer.commonName === undefined ? { text: p.issuer.text } : { commonName: p.issuer.commonName, text: p.issuer.text },
    serialNumber: hex(p.serialNumber),
    notBefore: p.notBefore,
    notAfter: p.notAfter,
    san: { dns: [...san.dns], uri: [...san.uri], ip: [...san.ip], email: [...san.email] },
    ca: ext.basicConstraints?.ca ?? false,
    keyUsage: [...(ext.keyUsage ?? [])],
    extKeyUsage: (ext.extKeyUsage?.oids ?? []).map(ekuName),
    publicKey,
    signatureAlgorithm: p.signatureAlgorithm,
    fingerprintSha256: p.fingerprintSha256,
    selfSigned: bytesEqual(p.subject.der, p.issuer.der),
    version: p.version,
    extensions: ext.list.map((e) => ({ oid: e.oid, critical: e.critical })),
    der: p.der,
  };
  if (ext.basicConstraints?.pathLength !== undefined) summary.pathLength = ext.basicConstraints.pathLength;
  return summary;
}

/**
 * Parses a certificate (PEM or DER; the first CERTIFICATE block of a bundle) into a summary.
 * Synchronous. Throws PkiError ERR_CERT_INVALID, ERR_PEM_INVALID or ERR_DER_INVALID.
 */
export function parseCertificate(input: string | Uint8Array): CertificateSummary {
  try {
    return summarize(parseCertificateDer(toDer(input, "CERTIFICATE")));
  } catch (err) {
    throw PkiError.from(err, "ERR_CERT_INVALID", "certificate could not be parsed");
  }
}
