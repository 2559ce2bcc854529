import {
  certificateMatchesKey,
  decodeCertificates,
  generateKeyPair,
  identityName,
  importPrivateKey,
  issueLeaf,
  parseCertificate,
  prepareIssuer,
  verifyChain,
} from "@meshtls/pki";
import type { CryptoKey, PreparedIssuer } from "@meshtls/pki";
import { IdentityError } from "./errors.ts";
import type { Issuer, IssuerSource, IssuerState } from "./issuer.ts";

/** Why a candidate issuer was refused; the `reason` label of `identity_issuer_rejected_total`. */
export type IssuerRejection =
  | "not_found"
  | "unreadable"
  | "bad_certificate"
  | "bad_key"
  | "not_ca"
  | "key_unsupported"
  | "key_mismatch"
  | "not_yet_valid"
  | "expired"
  | "untrusted";

/** A refusal with its kind, for the store's log line and counter. */
export class Rejected extends Error {
  constructor(
    readonly rejection: IssuerRejection,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Validates a candidate issuer. `source` names the certificate and the key in
 * messages (file paths for a folder, anything for other sources).
 */
export async function validateCandidate(candidate: {
  source: { certificate: string; key: string };
  /** `Issuer.origin`. */
  origin: string;
  cert: Uint8Array | string;
  key: Uint8Array | string | CryptoKey;
  trustAnchors: Uint8Array[];
  now: Date;
  trustDomain?: string | undefined;
  controlNamespace?: string | undefined;
}): Promise<Issuer> {
  const files = candidate.source;
  let certs: Uint8Array[];
  try {
    certs = decodeCertificates(candidate.cert);
  } catch (error) {
    throw new Rejected("bad_certificate", `${files.certificate} holds no readable certificate: ${(error as Error).message}`);
  }
  const [certificate, ...bundled] = certs;
  if (certificate === undefined) throw new Rejected("bad_certificate", `${files.certificate} holds no certificate`);
  let summary;
  try {
    summary = await parseCertificate(certificate);
  } catch (error) {
    throw new Rejected("bad_certificate", `${files.certificate}: ${(error as Error).message}`);
  }
  const name = summary.subject.text || "(empty subject)";
  let privateKey: CryptoKey;
  try {
    privateKey = typeof candidate.key === "string" || candidate.key instanceof Uint8Array ? (await importPrivateKey(candidate.key)).privateKey : candidate.key;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "ERR_KEY_UNSUPPORTED") {
      throw new Rejected("key_unsupported", `${files.key}: ${(error as Error).message}; the issuer key must be ECDSA P-256`);
    }
    throw new Rejected("bad_key", `${files.key} holds no readable private key: ${(error as Error).message}`);
  }
  if (!summary.ca) throw new Rejected("not_ca", `issuer certificate ${name} is not a CA (basicConstraints cA is not true)`);
  if (summary.keyUsage.length > 0 && !summary.keyUsage.includes("keyCertSign")) {
    throw new Rejected("not_ca", `issuer certificate ${name} lacks the keyCertSign key usage`);
  }
  if (summary.publicKey.algorithm !== "ECDSA" || summary.publicKey.curve !== "P-256") {
    throw new Rejected(
      "key_unsupported",
      `issuer certificate ${name} has a ${summary.publicKey.algorithm} ${summary.publicKey.curve ?? ""} key; meshtls issuers use ECDSA P-256`,
    );
  }
  if (!(await certificateMatchesKey(certificate, privateKey))) {
    throw new Rejected("key_mismatch", `${files.key} is not the private key of issuer certificate ${name}`);
  }
  const at = candidate.now;
  if (at < summary.notBefore) {
    throw new Rejected("not_yet_valid", `issuer certificate ${name} is not valid before ${summary.notBefore.toISOString()}`);
  }
  if (at >= summary.notAfter) {
    throw new Rejected("expired", `issuer certificate ${name} expired at ${summary.notAfter.toISOString()}`);
  }
  const anchorList = candidate.trustAnchors;
  if (anchorList.length === 0) throw new Rejected("untrusted", "there are no trust anchors to check the issuer against");
  // Proving the chain with a real leaf catches what inspecting the issuer
  // alone would miss: path length, name constraints, key usage, signature.
  const probeKeys = await generateKeyPair();
  const probeName = identityName({
    serviceAccount: "issuer-probe",
    namespace: "meshtls-probe",
    ...(candidate.controlNamespace === undefined ? {} : { controlNamespace: candidate.controlNamespace }),
    ...(candidate.trustDomain === undefined ? {} : { trustDomain: candidate.trustDomain }),
  });
  let probe: Uint8Array;
  let prepared: PreparedIssuer;
  try {
    prepared = await prepareIssuer({ certificate, privateKey });
    probe = await issueLeaf({
      issuer: prepared,
      publicKey: probeKeys.publicKey,
      identity: probeName,
      lifetimeMs: 60_000,
      skewMs: 0,
      now: () => at,
    });
  } catch (error) {
    throw new Rejected("untrusted", `issuer ${name} cannot sign a leaf: ${(error as Error).message}`);
  }
  const result = await verifyChain({
    leaf: probe,
    intermediates: [certificate, ...bundled],
    anchors: anchorList,
    now: at,
    purpose: "clientAuth",
  });
  if (!result.ok) {
    throw new Rejected(
      result.code === "ERR_CHAIN_EXPIRED" ? "expired" : "untrusted",
      `issuer ${name} does not chain to the trust anchors: ${result.reason}`,
    );
  }
  const path = result.chain.slice(1);
  const usableUntil = new Date(Math.min(...path.map((c) => c.notAfter.getTime())));
  return {
    certificate,
    privateKey,
    prepared,
    intermediates: path.slice(0, -1).map((c) => c.der),
    notBefore: summary.notBefore,
    notAfter: summary.notAfter,
    usableUntil,
    subject: name,
    serialNumber: summary.serialNumber,
    fingerprintSha256: summary.fingerprintSha256,
    origin: candidate.origin,
  };
}

/** Whether `issuer` may sign at `now`: not before its notBefore, not after it or its anchor expired. */
export function issuerState(issuer: Issuer, now: Date): IssuerState {
  if (now >= issuer.usableUntil) {
    const what = issuer.usableUntil.getTime() === issuer.notAfter.getTime() ? `issuer ${issuer.subject}` : `the trust anchor of issuer ${issuer.subject}`;
    return { ok: false, reason: `${what} expired at ${issuer.usableUntil.toISOString()}; rotate the issuer` };
  }
  if (now < issuer.notBefore) {
    return { ok: false, reason: `issuer ${issuer.subject} is not valid before ${issuer.notBefore.toISOString()}` };
  }
  return { ok: true, issuer };
}

/**
 * Validates an issuer given in memory (a certificate, optionally followed by
 * its chain, and its private key) the way the issuer store validates files:
 * CA with keyCertSign, ECDSA P-256, key matches, inside its validity, chains
 * to `trustAnchors` (proved with a probe leaf). Throws `ERR_ISSUER_INVALID`
 * whose message says why. Defaults: `now` the system clock, `trustDomain`
 * "cluster.local", `controlNamespace` "meshtls" (names of the probe leaf).
 */
export async function validateIssuer(options: {
  /** DER, or PEM text with the issuer first and optionally its chain. */
  certificate: Uint8Array | string;
  /** A CryptoKey, or PKCS#8/SEC1 PEM or DER. */
  privateKey: CryptoKey | Uint8Array | string;
  trustAnchors: Uint8Array[];
  now?: Date;
  trustDomain?: string;
  controlNamespace?: string;
  /** Where the issuer comes from, in messages and `Issuer.origin` (a Vault path, a Secret's name). Default "the issuer given in memory". */
  origin?: string;
}): Promise<Issuer> {
  const origin = options.origin ?? "the issuer given in memory";
  try {
    return await validateCandidate({
      source: { certificate: `the certificate of ${origin}`, key: `the private key of ${origin}` },
      origin,
      cert: options.certificate,
      key: options.privateKey,
      trustAnchors: options.trustAnchors,
      now: options.now ?? new Date(),
      trustDomain: options.trustDomain,
      controlNamespace: options.controlNamespace,
    });
  } catch (error) {
    throw new IdentityError("ERR_ISSUER_INVALID", error instanceof Error ? error.message : String(error), { cause: error });
  }
}

/** An IssuerSource over one validated issuer (for tests, demos, or issuers held elsewhere). */
export function createStaticIssuerSource(options: { issuer: Issuer; now?: () => Date }): IssuerSource {
  const now = options.now ?? (() => new Date());
  return { current: () => issuerState(options.issuer, now()) };
}
