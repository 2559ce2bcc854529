import type { KeyObject } from "node:crypto";
import { summarize, type CertificateSummary } from "./certificate.ts";
import { OID } from "./oids.ts";
import type { PkiErrorCode } from "./errors.ts";
import { parseIp } from "./general-names.ts";
import { checkNameConstraints, isValidDnsName } from "./name-constraints.ts";
import { CHAIN_SIGNATURE_ALGORITHMS, ekuOid, parseCertificateDer, publicKeyObject, UNDERSTOOD_EXTENSIONS, verifySignature, type ParsedCertificate } from "./x509.ts";

/** The outcome of {@link verifyChain}: the path on success, a code and a sentence naming the certificate on failure. */
export type ChainResult =
  | { ok: true; chain: CertificateSummary[] }
  | { ok: false; code: PkiErrorCode; reason: string };

/** Default for `maxDepth`: at most 4 intermediates (self-issued ones not counted). */
export const DEFAULT_MAX_CHAIN_DEPTH = 4;
/** Most intermediates and anchors looked at in one call; more are ignored. */
export const MAX_CHAIN_INPUTS = 64;
/** Most signature checks one call performs while building paths. */
const SIGNATURE_BUDGET = 128;

export interface VerifyChainOptions {
  /** DER leaf (end-entity) certificate. */
  leaf: Uint8Array;
  /** Untrusted DER certificates that may complete a path (order does not matter). */
  intermediates?: readonly Uint8Array[];
  /** Trusted DER certificates; a path must end at one of them. */
  anchors: readonly Uint8Array[];
  /** Validation time; default the current time. Compared at one-second precision, bounds inclusive. */
  now?: Date;
  /** The leaf must present one of these (DNS: exact or left-most wildcard, case-insensitive; URI: exact; IP: equal address; email: exact mailbox, case-insensitive domain). */
  expectedName?: { dns?: string; uri?: string; ip?: string; email?: string };
  /** Required extended key usage of the leaf (and of intermediates that carry EKU). Default: not checked. */
  purpose?: "serverAuth" | "clientAuth";
  /** Most intermediates allowed between leaf and anchor, self-issued ones not counted. Default 4. */
  maxDepth?: number;
  /**
   * "mesh" (default) adds the mesh/X509-SVID leaf rules to RFC 5280: the leaf must not be a CA, must not carry
   * keyCertSign or cRLSign, and must allow digitalSignature when it has keyUsage. "rfc5280" omits them.
   */
  profile?: "mesh" | "rfc5280";
}

type Failure = { code: PkiErrorCode; reason: string };

function label(c: ParsedCertificate, role: string): string {
  const name = c.subject.text !== "" ? c.subject.text : `serial ${Buffer.from(c.serialNumber).toString("hex")}`;
  return `${role} "${name}"`;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function selfIssued(c: ParsedCertificate): boolean {
  return bytesEqual(c.subject.der, c.issuer.der);
}

function matchesDns(presented: string, reference: string): boolean {
  const ref = reference.toLowerCase();
  const p = presented.toLowerCase();
  if (!isValidDnsName(ref)) return false;
  if (!p.startsWith("*.")) return p === ref && isValidDnsName(p);
  const rest = p.slice(2);
  if (!isValidDnsName(rest) || !rest.includes(".")) return false;
  const dot = ref.indexOf(".");
  return dot > 0 && ref.slice(dot + 1) === rest;
}

function sameMailbox(a: string, b: string): boolean {
  const i = a.lastIndexOf("@");
  const j = b.lastIndexOf("@");
  return i > 0 && j > 0 && a.slice(0, i) === b.slice(0, j) && a.slice(i + 1).toLowerCase() === b.slice(j + 1).toLowerCase();
}

function checkValidity(c: ParsedCertificate, role: string, nowSec: number): Failure | undefined {
  if (nowSec < c.notBefore.getTime()) return { code: "ERR_CHAIN_NOT_YET_VALID", reason: `${label(c, role)} is not valid before ${c.notBefore.toISOString()}` };
  if (nowSec > c.notAfter.getTime()) return { code: "ERR_CHAIN_EXPIRED", reason: `${label(c, role)} expired at ${c.notAfter.toISOString()}` };
  return undefined;
}

function checkExtensions(c: ParsedCertificate, role: string): Failure | undefined {
  const ext = c.extensions;
  if (ext.malformed.length > 0) return { code: "ERR_CHAIN_INVALID", reason: `${label(c, role)} has a malformed extension ${ext.malformed.join(", ")}` };
  const unknown = ext.list.find((e) => e.critical && !UNDERSTOOD_EXTENSIONS.has(e.oid));
  if (unknown) return { code: "ERR_CHAIN_CRITICAL_EXTENSION", reason: `${label(c, role)} has an unsupported critical extension ${unknown.oid}` };
  if (c.innerSignatureAlgorithmOid !== c.signatureAlgorithmOid) {
    return { code: "ERR_CHAIN_INVALID", reason: `${label(c, role)} has different inner and outer signature algorithms` };
  }
  const mustNotBeCritical = ext.list.find((e) => e.critical && (e.oid === OID.subjectKeyIdentifier || e.oid === OID.authorityKeyIdentifier));
  if (mustNotBeCritical) return { code: "ERR_CHAIN_INVALID", reason: `${label(c, role)} marks ${mustNotBeCritical.oid === OID.subjectKeyIdentifier ? "subjectKeyIdentifier" : "authorityKeyIdentifier"} critical (RFC 5280 4.2.1.1-2)` };
  if (ext.extKeyUsage && ext.extKeyUsage.oids.length === 0) return { code: "ERR_CHAIN_EKU", reason: `${label(c, role)} has an empty extKeyUsage` };
  const bc = ext.basicConstraints;
  // RFC 5280 4.2.1.3: keyCertSign requires cA; a CA that states keyUsage must include keyCertSign.
  if (ext.keyUsage?.includes("keyCertSign") && !bc?.ca) return { code: "ERR_CHAIN_KEY_USAGE", reason: `${label(c, role)} has keyCertSign but is not a CA` };
  if (bc?.ca && ext.keyUsage && !ext.keyUsage.includes("keyCertSign")) {
    return { code: "ERR_CHAIN_KEY_USAGE", reason: `${label(c, role)} is a CA whose keyUsage lacks keyCertSign` };
  }
  if (ext.nameConstraints && !bc?.ca) return { code: "ERR_CHAIN_NAME_CONSTRAINTS", reason: `${label(c, role)} has nameConstraints but is not a CA` };
  return undefined;
}

function checkIssuer(c: ParsedCertificate, role: string, purposeOid: string | undefined, isAnchor: boolean): Failure | undefined {
  const bc = c.extensions.basicConstraints;
  if (!bc) return { code: "ERR_CHAIN_NOT_CA", reason: `${label(c, role)} has no basicConstraints, so it cannot be a CA` };
  if (!bc.ca) return { code: "ERR_CHAIN_NOT_CA", reason: `${label(c, role)} is not a CA (basicConstraints cA is false)` };
  if (!bc.critical) return { code: "ERR_CHAIN_NOT_CA", reason: `${label(c, role)} has a non-critical basicConstraints (RFC 5280 4.2.1.9)` };
  if (c.version !== 3) return { code: "ERR_CHAIN_NOT_CA", reason: `${label(c, role)} is not a version 3 certificate` };
  if (c.subject.text === "") return { code: "ERR_CHAIN_NOT_CA", reason: `${label(c, role)} is a CA with an empty subject (RFC 5280 4.1.2.6)` };
  const eku = c.extensions.extKeyUsage;
  if (!isAnchor && purposeOid && eku && !eku.oids.includes(purposeOid) && !eku.oids.includes(OID.anyExtendedKeyUsage)) {
    return { code: "ERR_CHAIN_EKU", reason: `${label(c, role)} restricts extKeyUsage and does not allow ${purposeName(purposeOid)}` };
  }
  return undefined;
}

function purposeName(oid: string): string {
  return oid === OID.serverAuth ? "serverAuth" : oid === OID.clientAuth ? "clientAuth" : oid;
}

function checkLeaf(leaf: ParsedCertificate, options: VerifyChainOptions, purposeOid: string | undefined): Failure | undefined {
  const ext = leaf.extensions;
  if ((options.profile ?? "mesh") === "mesh") {
    if (ext.basicConstraints?.ca) return { code: "ERR_CHAIN_NOT_CA", reason: `${label(leaf, "leaf")} is a CA certificate, which a mesh leaf must not be` };
    const ku = ext.keyUsage;
    if (ku && (ku.includes("keyCertSign") || ku.includes("cRLSign"))) {
      return { code: "ERR_CHAIN_KEY_USAGE", reason: `${label(leaf, "leaf")} may sign certificates or CRLs, which a mesh leaf must not` };
    }
    if (ku && !ku.includes("digitalSignature")) return { code: "ERR_CHAIN_KEY_USAGE", reason: `${label(leaf, "leaf")} keyUsage does not allow digitalSignature` };
  }
  if (purposeOid && ext.extKeyUsage && !ext.extKeyUsage.oids.includes(purposeOid) && !ext.extKeyUsage.oids.includes(OID.anyExtendedKeyUsage)) {
    return { code: "ERR_CHAIN_EKU", reason: `${label(leaf, "leaf")} extKeyUsage does not allow ${purposeName(purposeOid)}` };
  }
  const san = ext.san;
  if (san?.critical && leaf.subject.text !== "") {
    return { code: "ERR_CHAIN_INVALID", reason: `${label(leaf, "leaf")} marks subjectAltName critical although its subject is not empty` };
  }
  if (san && !san.critical && leaf.subject.text === "") {
    return { code: "ERR_CHAIN_INVALID", reason: `${label(leaf, "leaf")} has an empty subject, so its subjectAltName must be critical (RFC 5280 4.2.1.6)` };
  }
  const expected = options.expectedName;
  if (expected && (expected.dns !== undefined || expected.uri !== undefined || expected.ip !== undefined || expected.email !== undefined)) {
    if (!san) return { code: "ERR_CHAIN_NAME_MISMATCH", reason: `${label(leaf, "leaf")} has no subjectAltName (the common name is not used)` };
    const want = [expected.dns, expected.uri, expected.ip, expected.email].filter((x) => x !== undefined).join(" or ");
    const ip = expected.ip === undefined ? undefined : parseIp(expected.ip);
    const matched =
      (expected.dns !== undefined && san.dns.some((d) => matchesDns(d, expected.dns ?? ""))) ||
      (expected.uri !== undefined && san.uri.includes(expected.uri)) ||
      (ip !== undefined && san.ipBytes.some((b) => bytesEqual(b, ip))) ||
      (expected.email !== undefined && san.email.some((e) => sameMailbox(e, expected.email ?? "")));
    if (!matched) {
      const has = [...san.dns.map((d) => `DNS:${d}`), ...san.uri.map((u) => `URI:${u}`), ...san.ip.map((i) => `IP:${i}`), ...san.email.map((e) => `email:${e}`)].join(", ") || "no usable names";
      return { code: "ERR_CHAIN_NAME_MISMATCH", reason: `${label(leaf, "leaf")} is not valid for ${want} (it names ${has})` };
    }
  }
  return undefined;
}

/** Validates a complete path [leaf, ...intermediates, anchor] whose signatures already verified. */
function validatePath(path: ParsedCertificate[], nowSec: number, purposeOid: string | undefined): Failure | undefined {
  const last = path.length - 1;
  for (let i = 0; i <= last; i++) {
    const c = path[i] as ParsedCertificate;
    const role = i === 0 ? "leaf" : i === last ? "trust anchor" : "intermediate";
    const f = checkValidity(c, role, nowSec) ?? checkExtensions(c, role) ?? (i > 0 ? checkIssuer(c, role, purposeOid, i === last) : undefined);
    if (f) return f;
    if (i === 0) continue;
    // pathLenConstraint: non-self-issued intermediates below this CA (the leaf is not counted).
    const pathLength = c.extensions.basicConstraints?.pathLength;
    if (pathLength !== undefined) {
      let below = 0;
      for (let j = 1; j < i; j++) if (!selfIssued(path[j] as ParsedCertificate)) below++;
      if (below > pathLength) {
        return { code: "ERR_CHAIN_PATH_LENGTH", reason: `${label(c, role)} allows ${pathLength} intermediate(s) below it, but the path has ${below}` };
      }
    }
    const nc = c.extensions.nameConstraints;
    if (nc) {
      for (let j = 0; j < i; j++) {
        const sub = path[j] as ParsedCertificate;
        if (j > 0 && selfIssued(sub)) continue;
        const problem = checkNameConstraints(nc, { san: sub.extensions.san, subjectDer: sub.subject.der, subjectEmpty: sub.subject.text === "" });
        if (problem) {
          return { code: "ERR_CHAIN_NAME_CONSTRAINTS", reason: `${label(sub, j === 0 ? "leaf" : "intermediate")} violates the name constraints of ${label(c, role)}: ${problem}` };
        }
      }
    }
  }
  return undefined;
}

const SEVERITY: PkiErrorCode[] = ["ERR_CHAIN_UNKNOWN_ISSUER", "ERR_CHAIN_TOO_DEEP", "ERR_CHAIN_BAD_SIGNATURE"];

/**
 * Verifies that `leaf` chains to one of `anchors` through `intermediates` at `now`, for `expectedName` and
 * `purpose`. Paths are built by issuer/subject name and signature, trying every alternative until one
 * validates. Checks: validity of every certificate (anchors too), signatures (ECDSA P-256/P-384/P-521 and
 * RSA >= 2048 with SHA-256/384/512), basicConstraints cA (critical) and pathLen, keyUsage keyCertSign on CAs,
 * EKU on the leaf and on intermediates that carry one, name constraints (DNS, IP, email, URI, directoryName),
 * unknown critical extensions, and the leaf's SAN. Never throws: failures are `{ ok: false, code, reason }`.
 */
export async function verifyChain(options: VerifyChainOptions): Promise<ChainResult> {
  try {
    return verifyChainSync(options);
  } catch (err) {
    return { ok: false, code: "ERR_CHAIN_INVALID", reason: `chain could not be verified: ${err instanceof Error ? err.message : String(err)}` };
  }
}

function parseAll(list: unknown): ParsedCertificate[] {
  if (!Array.isArray(list)) return [];
  const out: ParsedCertificate[] = [];
  for (const der of list.slice(0, MAX_CHAIN_INPUTS)) {
    if (!(der instanceof Uint8Array)) continue;
    try {
      out.push(parseCertificateDer(der));
    } catch {
      // An unparsable untrusted or trusted certificate simply cannot be part of a path.
    }
  }
  return out;
}

function verifyChainSync(options: VerifyChainOptions): ChainResult {
  if (!options || !(options.leaf instanceof Uint8Array)) return { ok: false, code: "ERR_CHAIN_INVALID", reason: "leaf must be DER bytes" };
  let leaf: ParsedCertificate;
  try {
    leaf = parseCertificateDer(options.leaf);
  } catch (err) {
    return { ok: false, code: "ERR_CHAIN_INVALID", reason: `leaf certificate could not be parsed: ${err instanceof Error ? err.message : String(err)}` };
  }
  const now = options.now ?? new Date();
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) return { ok: false, code: "ERR_CHAIN_INVALID", reason: "now is not a valid Date" };
  const nowSec = Math.floor(now.getTime() / 1000) * 1000;
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_CHAIN_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 0) return { ok: false, code: "ERR_CHAIN_INVALID", reason: "maxDepth must be a non-negative integer" };
  const purposeOid = options.purpose === undefined ? undefined : ekuOid(options.purpose);
  const anchors = parseAll(options.anchors);
  const intermediates = parseAll(options.intermediates ?? []);
  if (anchors.length === 0) return { ok: false, code: "ERR_CHAIN_UNKNOWN_ISSUER", reason: "no usable trust anchors were given" };

  const leafFailure = checkValidity(leaf, "leaf", nowSec) ?? checkLeaf(leaf, options, purposeOid) ?? checkExtensions(leaf, "leaf");
  if (leafFailure) return { ok: false, ...leafFailure };

  const keys = new Map<ParsedCertificate, KeyObject | null>();
  const keyOf = (c: ParsedCertificate): KeyObject | undefined => {
    if (!keys.has(c)) keys.set(c, acceptableKey(c) ?? null);
    return keys.get(c) ?? undefined;
  };
  let budget = SIGNATURE_BUDGET;
  let best: Failure | undefined;
  const note = (f: Failure) => {
    // Prefer a failure of a complete path over "no path", and bad signatures over unknown issuers.
    if (!best) best = f;
    else if (SEVERITY.includes(best.code) && (!SEVERITY.includes(f.code) || SEVERITY.indexOf(f.code) > SEVERITY.indexOf(best.code))) best = f;
  };

  const signedBy = (child: ParsedCertificate, issuer: ParsedCertificate): boolean => {
    if (budget <= 0) return false;
    budget--;
    if (!CHAIN_SIGNATURE_ALGORITHMS.has(child.signatureAlgorithmOid)) {
      note({ code: "ERR_CHAIN_BAD_SIGNATURE", reason: `${label(child, "certificate")} uses an unsupported signature algorithm ${child.signatureAlgorithm}` });
      return false;
    }
    const key = keyOf(issuer);
    if (!key) {
      note({ code: "ERR_CHAIN_BAD_SIGNATURE", reason: `${label(issuer, "issuer")} has an unsupported or weak public key` });
      return false;
    }
    if (!verifySignature({ data: child.tbs, signature: child.signature, algorithmOid: child.signatureAlgorithmOid, key })) {
      note({ code: "ERR_CHAIN_BAD_SIGNATURE", reason: `the signature on ${label(child, "certificate")} does not verify with the key of ${label(issuer, "issuer")}` });
      return false;
    }
    return true;
  };

  const path: ParsedCertificate[] = [leaf];
  const search = (depth: number): ParsedCertificate[] | undefined => {
    const cur = path[path.length - 1] as ParsedCertificate;
    for (const anchor of anchors) {
      if (!bytesEqual(anchor.subject.der, cur.issuer.der) || path.includes(anchor)) continue;
      if (!signedBy(cur, anchor)) continue;
      const full = [...path, anchor];
      const f = validatePath(full, nowSec, purposeOid);
      if (!f) return full;
      note(f);
    }
    for (const mid of intermediates) {
      if (!bytesEqual(mid.subject.der, cur.issuer.der) || path.includes(mid)) continue;
      if (path.some((p) => p.fingerprintSha256 === mid.fingerprintSha256)) continue;
      const nextDepth = depth + (selfIssued(mid) ? 0 : 1);
      if (nextDepth > maxDepth) {
        note({ code: "ERR_CHAIN_TOO_DEEP", reason: `a path from ${label(leaf, "leaf")} needs more than ${maxDepth} intermediate(s)` });
        continue;
      }
      if (!signedBy(cur, mid)) continue;
      path.push(mid);
      const found = search(nextDepth);
      path.pop();
      if (found) return found;
      if (budget <= 0) return undefined;
    }
    return undefined;
  };

  const found = search(0);
  if (found) return { ok: true, chain: found.map(summarize) };
  if (budget <= 0 && !best) return { ok: false, code: "ERR_CHAIN_INVALID", reason: "path building gave up after too many signature checks" };
  return { ok: false, ...(best ?? { code: "ERR_CHAIN_UNKNOWN_ISSUER", reason: `no trust anchor or intermediate issued ${label(leaf, "leaf")} (issuer "${leaf.issuer.text}")` }) };
}

/** The node:crypto key of a certificate if its algorithm and size are acceptable for chain signatures. */
function acceptableKey(c: ParsedCertificate): KeyObject | undefined {
  const pk = c.publicKey;
  if (pk.algorithm === "ECDSA" && (!pk.namedCurve || !["P-256", "P-384", "P-521"].includes(pk.curve ?? ""))) return undefined;
  if (pk.algorithm === "RSA" && (pk.bits === undefined || pk.bits < 2048)) return undefined;
  if (pk.algorithm !== "ECDSA" && pk.algorithm !== "RSA") return undefined;
  return publicKeyObject(pk.spki);
}
