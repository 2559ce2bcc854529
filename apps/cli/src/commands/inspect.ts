import { createHash, X509Certificate } from "node:crypto";
import path from "node:path";
import { checkCsr } from "@meshtls/identity";
import {
  parseCertificate,
  parseCsr,
  pemDecode,
  verifyChain,
  type CertificateSummary,
  type CsrSummary,
} from "@meshtls/pki";
import { CliError, describeError } from "../errors.ts";
import { describeExpiry } from "../duration.ts";
import { readInputFile } from "../files.ts";
import { readCertificates } from "../inputs.ts";
import type { Output } from "../output.ts";

export interface InspectFileOptions {
  /** A certificate, PEM chain, or CSR, in PEM or DER (auto-detected). */
  file: string;
  /** Print JSON instead of words. Default false. */
  json?: boolean;
  /**
   * Trust bundle to verify a certificate or chain against (the file's first
   * certificate is the leaf, the rest untrusted intermediates). Default: none,
   * and a chain ending in a self-signed certificate is verified to that one.
   */
  anchorsFile?: string;
  /** Clock for "expires in" and chain verification. Default `() => new Date()`. */
  now?: () => Date;
}

/** A certificate as `inspect --json` prints it. */
export interface InspectedCertificate {
  subject: string;
  subjectCommonName?: string;
  issuer: string;
  issuerCommonName?: string;
  serialNumber: string;
  notBefore: string;
  notAfter: string;
  expiresInSeconds: number;
  expired: boolean;
  notYetValid: boolean;
  san: CertificateSummary["san"];
  ca: boolean;
  pathLength?: number;
  keyUsage: string[];
  extKeyUsage: string[];
  publicKey: CertificateSummary["publicKey"];
  signatureAlgorithm: string;
  fingerprintSha256: string;
  selfSigned: boolean;
  /** For all but the last certificate of a chain: whether the next one's key verifies this one's signature. */
  signedByNext?: boolean;
}

/** A CSR as `inspect --json` prints it. */
export interface InspectedCsr {
  version: number;
  subject: string;
  subjectCommonName?: string;
  san: CsrSummary["san"];
  publicKey: Omit<CsrSummary["publicKey"], "spki"> & { spkiSha256: string };
  signatureAlgorithm: string;
  signatureValid: boolean;
  extensions: CsrSummary["extensions"];
  /** Why the meshtls identity service would refuse this CSR for its DNS SAN (its first refusal, `checkCsr`); empty if it would not. */
  meshProblems: string[];
}

export type InspectResult =
  | { kind: "certificate" | "chain"; file: string; certificates: InspectedCertificate[]; verification?: ChainVerification }
  | { kind: "csr"; file: string; csr: InspectedCsr };

/** Outcome of verifying a chain: against `anchorsFile` (then `anchor` names the anchor reached), or to the self-signed certificate at its end. */
export type ChainVerification = { ok: true; anchor?: string } | { ok: false; code: string; reason: string };

type Item = { type: "certificate" | "csr"; der: Uint8Array };

/**
 * `meshtls inspect FILE`: describes a certificate, a chain (PEM bundle, leaf
 * first) or a CSR, in words or as JSON. For a chain it says whether each
 * certificate is signed by the next and, if the last one is self-signed,
 * whether the whole chain verifies to it now (pki verifyChain, any purpose;
 * mesh leaf rules unless the first certificate is a CA).
 */
export async function inspectFile(options: InspectFileOptions, output: Output): Promise<InspectResult> {
  const now = (options.now ?? (() => new Date()))();
  const data = await readInputFile(options.file, "file");
  const items = await classify(data, options.file);
  const name = path.basename(options.file);

  let result: InspectResult;
  if (items[0]!.type === "csr") {
    if (options.anchorsFile !== undefined) throw new CliError("ERR_USAGE", "--anchors verifies certificates; a CSR has no chain to verify");
    result = { kind: "csr", file: options.file, csr: await inspectCsr(items[0]!.der, options.file) };
  } else {
    const summaries: CertificateSummary[] = [];
    for (const [index, item] of items.entries()) {
      summaries.push(await summarize(item.der, `${options.file} (certificate ${index + 1})`));
    }
    const certificates = summaries.map((summary, index) => {
      const inspected = toInspected(summary, now);
      const next = summaries[index + 1];
      if (next !== undefined) {
        inspected.signedByNext = isSignedBy(summary.der, next.der);
      }
      return inspected;
    });
    result = { kind: summaries.length === 1 ? "certificate" : "chain", file: options.file, certificates };
    const last = summaries[summaries.length - 1]!;
    if (options.anchorsFile !== undefined) {
      const anchors = await readCertificates(options.anchorsFile, "trust anchors");
      const verified = await verifyChain({
        leaf: summaries[0]!.der,
        // Only the bundle is trusted: a copy of an anchor inside the file is just another untrusted certificate.
        intermediates: summaries.slice(1).map((s) => s.der),
        anchors,
        now,
        profile: summaries[0]!.ca ? "rfc5280" : "mesh",
      });
      result.verification = verified.ok
        ? { ok: true, anchor: `${verified.chain[verified.chain.length - 1]!.subject.text}` }
        : { ok: false, code: verified.code, reason: verified.reason };
    } else if (summaries.length > 1 && last.selfSigned) {
      const verified = await verifyChain({
        leaf: summaries[0]!.der,
        intermediates: summaries.slice(1, -1).map((s) => s.der),
        anchors: [last.der],
        now,
        // A chain starting at a workload certificate gets the mesh leaf rules; one starting at a CA, RFC 5280's.
        profile: summaries[0]!.ca ? "rfc5280" : "mesh",
      });
      result.verification = verified.ok ? { ok: true } : { ok: false, code: verified.code, reason: verified.reason };
    }
  }

  if (options.json === true) {
    output.out(JSON.stringify(result, null, 2));
  } else {
    output.out(result.kind === "csr" ? describeCsr(name, result.csr) : describeCertificates(name, result, now, options.anchorsFile));
  }
  return result;
}

async function classify(data: Uint8Array, file: string): Promise<Item[]> {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(data);
  if (text.includes("-----BEGIN")) {
    let blocks: { label: string; der: Uint8Array }[];
    try {
      blocks = pemDecode(text);
    } catch (error) {
      throw new CliError("ERR_INPUT", `${file}: malformed PEM: ${describeError(error)}`, { cause: error });
    }
    const items: Item[] = [];
    for (const block of blocks) {
      if (block.label === "CERTIFICATE" || block.label === "TRUSTED CERTIFICATE") {
        items.push({ type: "certificate", der: block.der });
      } else if (block.label === "CERTIFICATE REQUEST" || block.label === "NEW CERTIFICATE REQUEST") {
        items.push({ type: "csr", der: block.der });
      } else if (block.label.includes("PRIVATE KEY")) {
        throw new CliError("ERR_INPUT", `${file} contains a private key (${block.label}); inspect describes certificates and CSRs only`);
      } else {
        throw new CliError("ERR_INPUT", `${file}: unsupported PEM block "${block.label}"; expected CERTIFICATE or CERTIFICATE REQUEST`);
      }
    }
    if (items.length === 0) {
      throw new CliError("ERR_INPUT", `${file} contains no PEM block`);
    }
    const csrs = items.filter((item) => item.type === "csr").length;
    if (csrs > 0 && items.length > 1) {
      throw new CliError("ERR_INPUT", `${file} holds ${items.length} PEM blocks including a CSR; inspect one CSR per file`);
    }
    return items;
  }
  // DER: one certificate or one CSR. Try the certificate first, then the CSR.
  try {
    await parseCertificate(data);
    return [{ type: "certificate", der: data }];
  } catch (certError) {
    try {
      await parseCsr(data);
      return [{ type: "csr", der: data }];
    } catch (csrError) {
      const reason = data.length > 0 && data[0] === 0x30 ? ` (as a certificate: ${describeError(certError)}; as a CSR: ${describeError(csrError)})` : "";
      throw new CliError("ERR_INPUT", `${file} is neither a certificate nor a CSR in PEM or DER${reason}`, { cause: csrError });
    }
  }
}

async function summarize(der: Uint8Array, where: string): Promise<CertificateSummary> {
  try {
    return await parseCertificate(der);
  } catch (error) {
    throw new CliError("ERR_INPUT", `${where}: not a valid certificate: ${describeError(error)}`, { cause: error });
  }
}

async function inspectCsr(der: Uint8Array, file: string): Promise<InspectedCsr> {
  let csr: CsrSummary;
  try {
    csr = await parseCsr(der);
  } catch (error) {
    throw new CliError("ERR_INPUT", `${file}: not a valid CSR: ${describeError(error)}`, { cause: error });
  }
  const { spki, ...publicKey } = csr.publicKey;
  const inspected: InspectedCsr = {
    version: csr.version,
    subject: csr.subject.text,
    san: csr.san,
    publicKey: { ...publicKey, spkiSha256: createHash("sha256").update(spki).digest("hex") },
    signatureAlgorithm: csr.signatureAlgorithm,
    signatureValid: csr.signatureValid,
    extensions: csr.extensions,
    meshProblems: meshCsrProblems(csr),
  };
  if (csr.subject.commonName !== undefined) {
    inspected.subjectCommonName = csr.subject.commonName;
  }
  return inspected;
}

/**
 * The identity service's own CSR checks (`checkCsr`), for the identity the CSR
 * names: its one DNS SAN, and its SPIFFE ID as written (the trust domain is
 * not known here). The first refusal, or none.
 */
function meshCsrProblems(csr: CsrSummary): string[] {
  const identity = csr.san.dns.length === 1 ? csr.san.dns[0]! : "";
  const spiffeId = csr.san.uri.find((uri) => uri.startsWith("spiffe://")) ?? "";
  try {
    checkCsr(csr, { identity, spiffeId });
    return [];
  } catch (error) {
    return [(error as Error).message];
  }
}

function toInspected(summary: CertificateSummary, now: Date): InspectedCertificate {
  const inspected: InspectedCertificate = {
    subject: summary.subject.text,
    issuer: summary.issuer.text,
    serialNumber: summary.serialNumber,
    notBefore: summary.notBefore.toISOString(),
    notAfter: summary.notAfter.toISOString(),
    expiresInSeconds: Math.floor((summary.notAfter.getTime() - now.getTime()) / 1000),
    expired: summary.notAfter.getTime() <= now.getTime(),
    notYetValid: summary.notBefore.getTime() > now.getTime(),
    san: summary.san,
    ca: summary.ca,
    keyUsage: summary.keyUsage,
    extKeyUsage: summary.extKeyUsage,
    publicKey: summary.publicKey,
    signatureAlgorithm: summary.signatureAlgorithm,
    fingerprintSha256: summary.fingerprintSha256,
    selfSigned: summary.selfSigned,
  };
  if (summary.subject.commonName !== undefined) inspected.subjectCommonName = summary.subject.commonName;
  if (summary.issuer.commonName !== undefined) inspected.issuerCommonName = summary.issuer.commonName;
  if (summary.pathLength !== undefined) inspected.pathLength = summary.pathLength;
  return inspected;
}

/** Whether `issuerDer`'s public key verifies `der`'s signature (node:crypto, independent of pki). */
function isSignedBy(der: Uint8Array, issuerDer: Uint8Array): boolean {
  try {
    return new X509Certificate(der).verify(new X509Certificate(issuerDer).publicKey);
  } catch {
    return false;
  }
}

function describeKey(key: { algorithm: string; curve?: string | undefined; namedCurve: boolean; bits?: number | undefined }): string {
  const parts: string[] = [key.algorithm];
  if (key.curve !== undefined) parts.push(key.curve);
  if (key.bits !== undefined && key.curve === undefined) parts.push(`${key.bits} bits`);
  if (key.algorithm === "ECDSA") parts.push(key.namedCurve ? "(named curve)" : "(explicit curve parameters)");
  return parts.join(" ");
}

function describeSans(san: { dns: string[]; uri: string[]; ip: string[]; email: string[] }): string {
  const all = [
    ...san.dns.map((v) => `DNS:${v}`),
    ...san.uri.map((v) => `URI:${v}`),
    ...san.ip.map((v) => `IP:${v}`),
    ...san.email.map((v) => `email:${v}`),
  ];
  return all.length === 0 ? "(none)" : all.join(", ");
}

const EXTENSION_NAMES: Record<string, string> = {
  "2.5.29.14": "subjectKeyIdentifier",
  "2.5.29.15": "keyUsage",
  "2.5.29.17": "subjectAltName",
  "2.5.29.19": "basicConstraints",
  "2.5.29.30": "nameConstraints",
  "2.5.29.35": "authorityKeyIdentifier",
  "2.5.29.37": "extKeyUsage",
};

function describeExtension(extension: { oid: string; critical: boolean }): string {
  const name = EXTENSION_NAMES[extension.oid] ?? extension.oid;
  return `${name}${extension.critical ? " (critical)" : ""}`;
}

function colonHex(hex: string): string {
  return (hex.match(/../g) ?? [hex]).join(":");
}

function field(label: string, value: string): string {
  return `  ${`${label}:`.padEnd(17)}${value}`;
}

function describeCertificates(name: string, result: Extract<InspectResult, { certificates: unknown }>, now: Date, anchorsFile: string | undefined): string {
  const lines: string[] = [];
  const count = result.certificates.length;
  lines.push(count === 1 ? `${name}: certificate` : `${name}: chain of ${count} certificates`);
  for (const [index, cert] of result.certificates.entries()) {
    lines.push("");
    lines.push(count === 1 ? "Certificate" : `Certificate ${index + 1} of ${count}`);
    lines.push(field("Subject", cert.subject || "(empty)"));
    lines.push(field("Issuer", cert.issuer || "(empty)"));
    lines.push(field("Serial", colonHex(cert.serialNumber)));
    const validity = cert.notYetValid
      ? `not yet valid (starts in ${describeExpiry(new Date(cert.notBefore), now).replace(/^expires in /, "")})`
      : describeExpiry(new Date(cert.notAfter), now);
    lines.push(field("Valid", `${cert.notBefore} to ${cert.notAfter} (${validity})`));
    lines.push(field("SANs", describeSans(cert.san)));
    lines.push(field("CA", cert.ca ? `yes${cert.pathLength === undefined ? ", no path length limit" : `, path length ${cert.pathLength}`}` : "no"));
    lines.push(field("Key usage", cert.keyUsage.length > 0 ? cert.keyUsage.join(", ") : "(none)"));
    lines.push(field("Ext key usage", cert.extKeyUsage.length > 0 ? cert.extKeyUsage.join(", ") : "(none)"));
    lines.push(field("Public key", describeKey(cert.publicKey)));
    lines.push(field("Signature", cert.signatureAlgorithm));
    lines.push(field("SHA-256", colonHex(cert.fingerprintSha256)));
    lines.push(field("Self-signed", cert.selfSigned ? "yes" : "no"));
    if (cert.signedByNext !== undefined) {
      lines.push(field("Signed by next", cert.signedByNext ? `yes (by certificate ${index + 2})` : `NO: certificate ${index + 2} did not sign it`));
    }
  }
  if (anchorsFile !== undefined && result.verification !== undefined) {
    lines.push("");
    lines.push(
      result.verification.ok
        ? `Trust: chains to trust anchor ${result.verification.anchor ?? "?"} (${anchorsFile})`
        : `Trust: does NOT verify against ${anchorsFile}: ${result.verification.reason} (${result.verification.code})`,
    );
  } else if (result.verification !== undefined) {
    lines.push("");
    lines.push(
      result.verification.ok
        ? "Chain: verifies to the self-signed certificate at its end"
        : `Chain: does NOT verify: ${result.verification.reason} (${result.verification.code})`,
    );
  } else if (count > 1) {
    lines.push("");
    lines.push("Chain: does not end in a self-signed certificate; not verified to a trust anchor");
  }
  return lines.join("\n");
}

function describeCsr(name: string, csr: InspectedCsr): string {
  const lines = [
    `${name}: certificate signing request`,
    "",
    "Certificate request",
    field("Version", `v${csr.version + 1} (encoded ${csr.version})`),
    field("Subject", csr.subject || "(empty)"),
    field("SANs", describeSans(csr.san)),
    field("Public key", describeKey(csr.publicKey)),
    field("Signature", `${csr.signatureAlgorithm}, ${csr.signatureValid ? "valid" : "INVALID (does not verify)"}`),
    field("Extensions", csr.extensions.length > 0 ? csr.extensions.map(describeExtension).join(", ") : "(none)"),
    field("SPKI SHA-256", colonHex(csr.publicKey.spkiSha256)),
  ];
  lines.push(
    csr.meshProblems.length === 0
      ? field("Mesh identity", `acceptable for ${csr.san.dns[0] ?? "?"}`)
      : field("Mesh identity", `would be refused: ${csr.meshProblems.join("; ")}`),
  );
  return lines.join("\n");
}
