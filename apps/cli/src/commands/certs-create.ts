import { createHash } from "node:crypto";
import {
  createIssuer,
  createTrustAnchor,
  exportPrivateKey,
  exportPublicKey,
  generateKeyPair,
  isDnsLabel,
  isDnsSubdomain,
  parseCertificate,
  pemEncode,
  type CryptoKey,
  type CryptoKeyPair,
} from "@meshtls/pki";
import { CliError } from "../errors.ts";
import { describeExpiry } from "../duration.ts";
import { KEY_FILE_MODE, PUBLIC_FILE_MODE, writeFilesAtomically } from "../files.ts";
import type { Output } from "../output.ts";

/** Defaults of `meshtls certs create` (ARCHITECTURE.md). */
export const DEFAULT_TRUST_DOMAIN = "cluster.local";
export const DEFAULT_CONTROL_NAMESPACE = "meshtls";
export const DEFAULT_ANCHOR_LIFETIME_MS = 87_600 * 3_600_000; // 10 years
export const DEFAULT_ISSUER_LIFETIME_MS = 8_760 * 3_600_000; // 1 year

export interface CreateCertsOptions {
  /** Folder for ca.crt, ca.key, issuer.crt, issuer.key (created if missing). */
  outDir: string;
  /** Trust domain, a DNS-1123 subdomain. Default `cluster.local`. */
  trustDomain?: string;
  /** Namespace of the control plane, a DNS-1123 label. Default `meshtls`. */
  controlNamespace?: string;
  /** Lifetime of the trust anchor. Default 87600 h (10 years). */
  anchorLifetimeMs?: number;
  /** Lifetime of the issuer, clamped to the anchor's. Default 8760 h (1 year). */
  issuerLifetimeMs?: number;
  /** Replace existing files. Default false: refuse. */
  force?: boolean;
  /** Clock. Default `() => new Date()`. */
  now?: () => Date;
}

/** Validates the trust domain and control namespace flags; throws ERR_USAGE. */
export function checkMeshNames(trustDomain: string, controlNamespace: string): void {
  if (!isDnsSubdomain(trustDomain)) {
    throw new CliError("ERR_USAGE", `--trust-domain "${trustDomain}" is not a DNS-1123 subdomain (e.g. cluster.local)`);
  }
  if (!isDnsLabel(controlNamespace)) {
    throw new CliError("ERR_USAGE", `--control-namespace "${controlNamespace}" is not a DNS-1123 label (e.g. meshtls)`);
  }
}

/** Validates a lifetime flag; throws ERR_USAGE. */
export function checkLifetime(flag: string, lifetimeMs: number): void {
  if (!Number.isFinite(lifetimeMs) || lifetimeMs < 60_000) {
    throw new CliError("ERR_USAGE", `${flag} must be at least 1m`);
  }
}

/**
 * `meshtls certs create`: a new trust anchor (self-signed root, CN
 * `root.<control-ns>.<trust-domain> <date> <key id>`) and an issuer under it (pathlen 0, CN
 * `identity.<control-ns>.<trust-domain>`), written as PEM; keys are PKCS#8 with
 * mode 0600. Nothing is written if any target exists and `force` is not set.
 */
export async function createCerts(options: CreateCertsOptions, output: Output): Promise<void> {
  const trustDomain = options.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const controlNamespace = options.controlNamespace ?? DEFAULT_CONTROL_NAMESPACE;
  const anchorLifetimeMs = options.anchorLifetimeMs ?? DEFAULT_ANCHOR_LIFETIME_MS;
  const issuerLifetimeMs = options.issuerLifetimeMs ?? DEFAULT_ISSUER_LIFETIME_MS;
  checkMeshNames(trustDomain, controlNamespace);
  checkLifetime("--anchor-lifetime", anchorLifetimeMs);
  checkLifetime("--issuer-lifetime", issuerLifetimeMs);
  const now = options.now ?? (() => new Date());

  const keyPair = await generateKeyPair();
  const anchor = await createTrustAnchor({
    commonName: await anchorCommonName(`root.${controlNamespace}.${trustDomain}`, keyPair, now()),
    keyPair,
    lifetimeMs: anchorLifetimeMs,
    now,
  });
  const issuer = await createIssuer({
    anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey },
    commonName: `identity.${controlNamespace}.${trustDomain}`,
    lifetimeMs: issuerLifetimeMs,
    now,
  });

  const written = await writeFilesAtomically({
    dir: options.outDir,
    force: options.force ?? false,
    files: [
      { name: "ca.crt", contents: pemEncode("CERTIFICATE", anchor.certificate), mode: PUBLIC_FILE_MODE },
      { name: "ca.key", contents: await pemKey(anchor.keyPair.privateKey), mode: KEY_FILE_MODE },
      { name: "issuer.crt", contents: pemEncode("CERTIFICATE", issuer.certificate), mode: PUBLIC_FILE_MODE },
      { name: "issuer.key", contents: await pemKey(issuer.keyPair.privateKey), mode: KEY_FILE_MODE },
    ],
  });
  for (const file of written) {
    output.out(`wrote ${file}`);
  }
  const anchorSummary = await parseCertificate(anchor.certificate);
  const issuerSummary = await parseCertificate(issuer.certificate);
  output.out(`trust anchor ${anchorSummary.subject.text}: ${describeExpiry(anchorSummary.notAfter, now())}`);
  output.out(`issuer ${issuerSummary.subject.text}: ${describeExpiry(issuerSummary.notAfter, now())}`);
  // Clamping is what ends an issuer with its anchor; comparing with now() instead misfires when issuance took over a second.
  if (issuerSummary.notAfter.getTime() >= anchorSummary.notAfter.getTime()) {
    output.err("note: the issuer's lifetime was clamped to the trust anchor's expiry");
  }
}

/** Longest common name (RFC 5280 ub-common-name). */
const MAX_COMMON_NAME = 64;

/**
 * The trust anchor's CN: `root.<control-ns>.<trust-domain>`, then its creation
 * date and the start of its public key's SHA-256, e.g.
 * `root.meshtls.cluster.local 2026-12-06 3f9a1c2e`, so that messages naming an
 * anchor tell the old one from the new one during a rotation (both have the
 * same base name). Parts that do not fit in 64 characters are left out.
 */
export async function anchorCommonName(base: string, keyPair: CryptoKeyPair, created: Date): Promise<string> {
  const spki = await exportPublicKey(keyPair.publicKey, { format: "der" });
  const keyId = createHash("sha256").update(spki).digest("hex").slice(0, 8);
  const date = created.toISOString().slice(0, 10);
  for (const name of [`${base} ${date} ${keyId}`, `${base} ${keyId}`, base]) {
    if (name.length <= MAX_COMMON_NAME) return name;
  }
  return base;
}

/** A private key as PKCS#8 PEM text. */
export async function pemKey(privateKey: CryptoKey): Promise<string> {
  return exportPrivateKey(privateKey, { format: "pem" });
}
