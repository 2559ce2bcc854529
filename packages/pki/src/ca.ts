import { hash, KeyObject, randomBytes, randomUUID, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import { OID } from "./oids.ts";
import { children, content, readTlv } from "./der-reader.ts";
import * as w from "./der-writer.ts";
import { PkiError } from "./errors.ts";
import { checkP256Spki, exportPublicKey, generateKeyPair } from "./keys.ts";
import { DEFAULT_CONTROL_NAMESPACE, DEFAULT_TRUST_DOMAIN, isDnsSubdomain, parseSpiffeId } from "./names.ts";
import { MAX_COMMON_NAME, sanValue } from "./csr.ts";
import { signDer, signerFor, type Signer } from "./signer.ts";
import { parseCertificateDer, publicKeyObject, type ParsedCertificate } from "./x509.ts";
import { isCryptoKey, type CryptoKey, type CryptoKeyPair } from "./webcrypto.ts";

/** A certificate (DER) with its key pair. */
export interface CertifiedKey {
  certificate: Uint8Array;
  keyPair: CryptoKeyPair;
}

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;
/** Default trust anchor lifetime: 10 years (3650 days). */
export const DEFAULT_ANCHOR_LIFETIME_MS = 3650 * DAY_MS;
/** Default issuer lifetime: 1 year (365 days). */
export const DEFAULT_ISSUER_LIFETIME_MS = 365 * DAY_MS;
/** Default leaf lifetime: 24 hours. */
export const DEFAULT_LEAF_LIFETIME_MS = DAY_MS;
/** Default clock-skew allowance: 20 seconds (notBefore backdated, notAfter extended). */
export const DEFAULT_SKEW_MS = 20_000;

function floorToSecond(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/**
 * A positive, non-zero 16-byte serial with 122 bits from the CSPRNG (CABF asks for at least 64).
 * randomUUID draws from node's cached CSPRNG output, which is several times cheaper per call than
 * filling a fresh buffer, and issuance is a hot path.
 */
function randomSerial(): Uint8Array {
  const serial = new Uint8Array(Buffer.from(randomUUID().replaceAll("-", ""), "hex"));
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x01;
  return serial;
}

function checkSerial(serial: Uint8Array): Uint8Array {
  if (!(serial instanceof Uint8Array) || serial.length === 0 || serial.length > 20) {
    throw new PkiError("ERR_ISSUE_INVALID", "serialNumber must be 1 to 20 bytes");
  }
  if ((serial[0] ?? 0) & 0x80) throw new PkiError("ERR_ISSUE_INVALID", "serialNumber must be positive (top bit clear)");
  if (serial.every((b) => b === 0)) throw new PkiError("ERR_ISSUE_INVALID", "serialNumber must not be zero");
  return serial;
}

/** basicConstraints value: cA (+ pathLen) for CAs, the empty SEQUENCE (cA FALSE) otherwise. */
function basicConstraints(ca: boolean, pathLength?: number): Uint8Array {
  const items: w.Der[] = [];
  if (ca) items.push(w.TRUE);
  if (ca && pathLength !== undefined) items.push(w.smallInteger(pathLength));
  return w.encode(w.extension(OID.basicConstraints, true, w.seq(...items)));
}

/** keyUsage with the named bits, DER-minimal (trailing zero bits dropped). */
function keyUsage(bits: number[]): Uint8Array {
  const last = Math.max(...bits);
  const bytes = new Uint8Array((last >> 3) + 1);
  for (const b of bits) bytes[b >> 3] = (bytes[b >> 3] ?? 0) | (0x80 >> (b & 7));
  return w.encode(w.extension(OID.keyUsage, true, w.bitString(bytes, 7 - (last & 7))));
}

const LEAF_KEY_USAGE = keyUsage([0, 2]);
const CA_KEY_USAGE = keyUsage([5, 6]);
const LEAF_EKU = w.encode(w.extension(OID.extKeyUsage, false, w.seq(w.oid(OID.serverAuth), w.oid(OID.clientAuth))));
const LEAF_BASIC_CONSTRAINTS = basicConstraints(false);

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
function keyIdentifier(spki: Uint8Array): Uint8Array {
  const outer = readTlv(spki, 0);
  const key = children(spki, outer)[1];
  if (!key) throw new PkiError("ERR_KEY_INVALID", "public key has no key bits");
  return new Uint8Array(hash("sha1", content(spki, key).subarray(1), "buffer"));
}

function subjectKeyIdentifier(id: Uint8Array): w.Der {
  return w.extension(SKI_OID, false, w.octetString(id));
}

const SKI_OID = w.oid(OID.subjectKeyIdentifier);
const SAN_OID = w.oid(OID.subjectAltName);

const AKI_OID = w.oid(OID.authorityKeyIdentifier);

function authorityKeyIdentifier(id: Uint8Array): w.Der {
  return w.extension(AKI_OID, false, w.seq(w.tlv(0x80, id)));
}

/** The [0] EXPLICIT version field of every certificate signed here: v3 (encoded 2). */
const VERSION_V3 = w.encode(w.tlv(0xa0, w.smallInteger(2)));

function signCertificate(options: {
  serial: Uint8Array;
  issuer: w.Der;
  subject: w.Der;
  notBefore: Date;
  notAfter: Date;
  spki: Uint8Array;
  extensions: w.Der[];
  signer: Signer;
}): Uint8Array {
  const tbs = w.encode(w.seq(
    VERSION_V3,
    w.unsignedInteger(options.serial),
    options.signer.algorithm,
    options.issuer,
    w.seq(w.x509Time(options.notBefore), w.x509Time(options.notAfter)),
    options.subject,
    options.spki,
    w.tlv(0xa3, w.seq(...options.extensions)),
  ));
  return signDer(tbs, options.signer);
}

function checkLifetime(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v <= 0) throw new PkiError("ERR_ISSUE_INVALID", `${what} must be a positive number of milliseconds`);
  return v;
}

async function publicSpki(keyPair: CryptoKeyPair): Promise<Uint8Array> {
  const spki = await exportPublicKey(keyPair.publicKey, { format: "der" });
  checkP256Spki(spki);
  return spki;
}

/**
 * Creates a self-signed trust anchor (root CA): cA with no path length limit, keyCertSign + cRLSign.
 * Defaults: `commonName` "root.<controlNamespace>.<trustDomain>" ("root.meshtls.cluster.local"),
 * `lifetimeMs` 10 years, a fresh P-256 `keyPair`, `now` the system clock. notBefore is backdated by 20 s.
 */
export async function createTrustAnchor(
  options: {
    commonName?: string;
    lifetimeMs?: number;
    keyPair?: CryptoKeyPair;
    now?: () => Date;
    trustDomain?: string;
    controlNamespace?: string;
  } = {},
): Promise<CertifiedKey> {
  const lifetimeMs = checkLifetime(options.lifetimeMs, DEFAULT_ANCHOR_LIFETIME_MS, "lifetimeMs");
  const cn = options.commonName ?? `root.${options.controlNamespace ?? DEFAULT_CONTROL_NAMESPACE}.${options.trustDomain ?? DEFAULT_TRUST_DOMAIN}`;
  checkCommonName(cn);
  const keyPair = options.keyPair ?? (await generateKeyPair());
  const spki = await publicSpki(keyPair);
  const now = (options.now ?? (() => new Date()))().getTime();
  const ski = keyIdentifier(spki);
  const name = w.commonNameName(cn);
  const certificate = signCertificate({
    serial: randomSerial(),
    issuer: name,
    subject: name,
    notBefore: floorToSecond(now - DEFAULT_SKEW_MS),
    notAfter: floorToSecond(now + lifetimeMs),
    spki,
    extensions: [basicConstraints(true), CA_KEY_USAGE, subjectKeyIdentifier(ski)],
    signer: signerFor(keyPair.privateKey),
  });
  return { certificate, keyPair };
}

function checkCommonName(cn: string): void {
  if (typeof cn !== "string" || cn.length === 0 || cn.length > MAX_COMMON_NAME) {
    throw new PkiError("ERR_NAME_INVALID", `common name must be 1 to ${MAX_COMMON_NAME} characters`);
  }
}

/** A CA certificate and key checked once, for issuing many certificates without re-parsing. */
export interface PreparedIssuer {
  readonly kind: "prepared-issuer";
  readonly certificate: Uint8Array;
  readonly privateKey: CryptoKey;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** @internal DER of the issuer's subject Name. */
  readonly subject: Uint8Array;
  /** @internal */
  readonly keyIdentifier: Uint8Array;
  /** @internal The authorityKeyIdentifier extension of every certificate it signs, encoded once. */
  readonly authorityKeyIdentifierExtension: Uint8Array;
  /** @internal */
  readonly signer: Signer;
}

function isPrepared(value: unknown): value is PreparedIssuer {
  return typeof value === "object" && value !== null && (value as PreparedIssuer).kind === "prepared-issuer";
}

function parseCa(certificate: Uint8Array): ParsedCertificate {
  let parsed: ParsedCertificate;
  try {
    parsed = parseCertificateDer(certificate);
  } catch (err) {
    throw new PkiError("ERR_ISSUE_INVALID", "issuing certificate could not be parsed", { cause: err });
  }
  const ext = parsed.extensions;
  if (!ext.basicConstraints?.ca) throw new PkiError("ERR_ISSUE_INVALID", `"${parsed.subject.text}" is not a CA certificate (basicConstraints cA is not set)`);
  if (ext.keyUsage && !ext.keyUsage.includes("keyCertSign")) {
    throw new PkiError("ERR_ISSUE_INVALID", `"${parsed.subject.text}" may not sign certificates (keyUsage lacks keyCertSign)`);
  }
  return parsed;
}

function preparedFrom(parsed: ParsedCertificate, privateKey: CryptoKey): PreparedIssuer {
  const id = parsed.extensions.subjectKeyIdentifier ?? keyIdentifier(parsed.publicKey.spki);
  return {
    kind: "prepared-issuer",
    certificate: parsed.der,
    privateKey,
    notBefore: parsed.notBefore,
    notAfter: parsed.notAfter,
    subject: parsed.subject.der,
    keyIdentifier: id,
    authorityKeyIdentifierExtension: w.encode(authorityKeyIdentifier(id)),
    signer: signerFor(privateKey),
  };
}

/**
 * Checks a CA certificate and its private key once (CA, keyCertSign, key matches: else ERR_ISSUE_INVALID /
 * ERR_KEY_MISMATCH) and returns an issuer that {@link issueLeaf} and {@link createIssuer} use without re-parsing.
 */
export async function prepareIssuer(options: { certificate: Uint8Array; privateKey: CryptoKey }): Promise<PreparedIssuer> {
  const parsed = parseCa(options.certificate);
  if (!(await certificateMatchesKey(options.certificate, options.privateKey))) {
    throw new PkiError("ERR_KEY_MISMATCH", `the private key does not match certificate "${parsed.subject.text}"`);
  }
  return preparedFrom(parsed, options.privateKey);
}

function asPrepared(issuer: { certificate: Uint8Array; privateKey: CryptoKey } | PreparedIssuer): PreparedIssuer {
  if (isPrepared(issuer)) return issuer;
  if (!issuer || !(issuer.certificate instanceof Uint8Array) || !isCryptoKey(issuer.privateKey)) {
    throw new PkiError("ERR_ISSUE_INVALID", "issuer must be { certificate: DER bytes, privateKey: CryptoKey } or a prepared issuer");
  }
  return preparedFrom(parseCa(issuer.certificate), issuer.privateKey);
}

/**
 * Creates an issuer (intermediate CA) under `anchor`: pathLen 0, keyCertSign + cRLSign.
 * Defaults: `commonName` "identity.<controlNamespace>.<trustDomain>" ("identity.meshtls.cluster.local"),
 * `lifetimeMs` 1 year, clamped to the anchor's notAfter; notBefore backdated by 20 s; fresh P-256 `keyPair`.
 */
export async function createIssuer(options: {
  anchor: { certificate: Uint8Array; privateKey: CryptoKey } | PreparedIssuer;
  commonName?: string;
  lifetimeMs?: number;
  keyPair?: CryptoKeyPair;
  now?: () => Date;
  trustDomain?: string;
  controlNamespace?: string;
}): Promise<CertifiedKey> {
  const anchor = asPrepared(options.anchor);
  const lifetimeMs = checkLifetime(options.lifetimeMs, DEFAULT_ISSUER_LIFETIME_MS, "lifetimeMs");
  const cn = options.commonName ?? `identity.${options.controlNamespace ?? DEFAULT_CONTROL_NAMESPACE}.${options.trustDomain ?? DEFAULT_TRUST_DOMAIN}`;
  checkCommonName(cn);
  const now = (options.now ?? (() => new Date()))().getTime();
  if (now > anchor.notAfter.getTime()) throw new PkiError("ERR_ISSUE_INVALID", "the trust anchor has expired");
  const keyPair = options.keyPair ?? (await generateKeyPair());
  const spki = await publicSpki(keyPair);
  const notAfter = Math.min(now + lifetimeMs, anchor.notAfter.getTime());
  const certificate = signCertificate({
    serial: randomSerial(),
    issuer: anchor.subject,
    subject: w.commonNameName(cn),
    notBefore: floorToSecond(Math.max(now - DEFAULT_SKEW_MS, anchor.notBefore.getTime())),
    notAfter: floorToSecond(notAfter),
    spki,
    extensions: [basicConstraints(true, 0), CA_KEY_USAGE, subjectKeyIdentifier(keyIdentifier(spki)), authorityKeyIdentifier(anchor.keyIdentifier)],
    signer: anchor.signer,
  });
  return { certificate, keyPair };
}

/**
 * Issues a mesh leaf certificate: subject CN = `identity` (empty subject, critical SAN, if over 64 characters),
 * SAN DNS = `identity` and URI = `spiffeId` when given, digitalSignature + keyEncipherment, serverAuth + clientAuth,
 * cA false, ecdsa-with-SHA256. notBefore = now − `skewMs`, notAfter = now + `lifetimeMs` + `skewMs`, clamped to
 * the issuer's notAfter. Defaults: `lifetimeMs` 24 h, `skewMs` 20 s, random 16-byte serial.
 * `publicKey` is a CryptoKey or DER SPKI (for example `parseCsr(...).publicKey.spki`); it must be P-256.
 * Pass a {@link prepareIssuer} result as `issuer` to avoid re-parsing the issuer on every call.
 */
export async function issueLeaf(options: {
  issuer: { certificate: Uint8Array; privateKey: CryptoKey } | PreparedIssuer;
  publicKey: CryptoKey | Uint8Array;
  identity: string;
  spiffeId?: string;
  lifetimeMs?: number;
  skewMs?: number;
  now?: () => Date;
  serialNumber?: Uint8Array;
}): Promise<Uint8Array> {
  const issuer = asPrepared(options.issuer);
  const { identity } = options;
  if (typeof identity !== "string" || !isDnsSubdomain(identity)) {
    throw new PkiError("ERR_NAME_INVALID", `identity ${JSON.stringify(identity)} is not a DNS name`);
  }
  if (options.spiffeId !== undefined) parseSpiffeId(options.spiffeId);
  const lifetimeMs = checkLifetime(options.lifetimeMs, DEFAULT_LEAF_LIFETIME_MS, "lifetimeMs");
  const skewMs = options.skewMs ?? DEFAULT_SKEW_MS;
  if (!Number.isFinite(skewMs) || skewMs < 0) throw new PkiError("ERR_ISSUE_INVALID", "skewMs must be a non-negative number of milliseconds");
  let spki: Uint8Array;
  if (options.publicKey instanceof Uint8Array) {
    spki = options.publicKey;
    checkP256Spki(spki);
  } else if (isCryptoKey(options.publicKey)) {
    spki = await exportPublicKey(options.publicKey, { format: "der" });
    checkP256Spki(spki);
  } else {
    throw new PkiError("ERR_KEY_INVALID", "publicKey must be a CryptoKey or DER SubjectPublicKeyInfo");
  }
  const now = (options.now ?? (() => new Date()))().getTime();
  if (now > issuer.notAfter.getTime()) throw new PkiError("ERR_ISSUE_INVALID", "the issuer certificate has expired");
  if (now < issuer.notBefore.getTime()) throw new PkiError("ERR_ISSUE_INVALID", "the issuer certificate is not yet valid");
  const cn = identity.length <= MAX_COMMON_NAME ? identity : "";
  return signCertificate({
    serial: options.serialNumber === undefined ? randomSerial() : checkSerial(options.serialNumber),
    issuer: issuer.subject,
    subject: w.commonNameName(cn),
    notBefore: floorToSecond(Math.max(now - skewMs, issuer.notBefore.getTime())),
    notAfter: floorToSecond(Math.min(now + lifetimeMs + skewMs, issuer.notAfter.getTime())),
    spki,
    extensions: [
      LEAF_BASIC_CONSTRAINTS,
      LEAF_KEY_USAGE,
      LEAF_EKU,
      w.extension(SAN_OID, cn === "", sanValue(identity, options.spiffeId)),
      // No subjectKeyIdentifier: CABF no longer recommends it for subscriber certificates, and Go (so Linkerd)
      // omits it on leaves; paths are built by name and signature.
      issuer.authorityKeyIdentifierExtension,
    ],
    signer: issuer.signer,
  });
}

/** True when `privateKey` is the private half of the certificate's public key (checked by signing a challenge). */
export async function certificateMatchesKey(certificate: Uint8Array, privateKey: CryptoKey): Promise<boolean> {
  let parsed: ParsedCertificate;
  try {
    parsed = parseCertificateDer(certificate);
  } catch {
    return false;
  }
  if (!isCryptoKey(privateKey) || privateKey.type !== "private" || privateKey.algorithm.name !== "ECDSA") return false;
  const key = publicKeyObject(parsed.publicKey.spki);
  if (!key || key.asymmetricKeyType !== "ec") return false;
  const challenge = new Uint8Array(randomBytes(32));
  try {
    // node:crypto's one-shot sign is synchronous; WebCrypto's sign would start libuv's thread pool in an idle proxy.
    const raw = nodeSign("sha256", challenge, { key: KeyObject.from(privateKey as never), dsaEncoding: "ieee-p1363" });
    return nodeVerify("sha256", challenge, { key, dsaEncoding: "ieee-p1363" }, raw);
  } catch {
    return false;
  }
}
