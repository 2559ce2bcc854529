import { certificateMatchesKey, createIssuer, pemEncode } from "@meshtls/pki";
import { CliError } from "../errors.ts";
import { describeExpiry } from "../duration.ts";
import { KEY_FILE_MODE, PUBLIC_FILE_MODE, writeFilesAtomically } from "../files.ts";
import { readCertificate, readPrivateKey, summarizeCertificate } from "../inputs.ts";
import type { Output } from "../output.ts";
import {
  checkLifetime,
  checkMeshNames,
  DEFAULT_CONTROL_NAMESPACE,
  DEFAULT_ISSUER_LIFETIME_MS,
  DEFAULT_TRUST_DOMAIN,
  pemKey,
} from "./certs-create.ts";

export interface CreateIssuerFilesOptions {
  /** PEM (or DER) trust anchor certificate; the first certificate is used. */
  caCertFile: string;
  /** The anchor's private key: PKCS#8 or SEC1 ("EC PRIVATE KEY") PEM, or PKCS#8 DER. */
  caKeyFile: string;
  /** Folder for issuer.crt and issuer.key (created if missing). */
  outDir: string;
  /** Lifetime, clamped to the anchor's expiry. Default 8760 h (1 year). */
  issuerLifetimeMs?: number;
  /** For the issuer's CN `identity.<control-ns>.<trust-domain>`. Default `cluster.local`. */
  trustDomain?: string;
  /** Default `meshtls`. */
  controlNamespace?: string;
  /** Replace existing files. Default false: refuse. */
  force?: boolean;
  /** Clock. Default `() => new Date()`. */
  now?: () => Date;
}

/**
 * `meshtls certs issuer`: a new issuer under an existing trust anchor, for
 * rotating the issuer without touching workloads' trust. Fails before writing
 * anything if the key does not match the certificate, the certificate is not a
 * CA allowed to sign certificates, or it has expired.
 */
export async function createIssuerFiles(options: CreateIssuerFilesOptions, output: Output): Promise<void> {
  const trustDomain = options.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const controlNamespace = options.controlNamespace ?? DEFAULT_CONTROL_NAMESPACE;
  const issuerLifetimeMs = options.issuerLifetimeMs ?? DEFAULT_ISSUER_LIFETIME_MS;
  checkMeshNames(trustDomain, controlNamespace);
  checkLifetime("--issuer-lifetime", issuerLifetimeMs);
  const now = options.now ?? (() => new Date());

  const anchorCert = await readCertificate(options.caCertFile, "CA certificate");
  const anchor = await summarizeCertificate(anchorCert, options.caCertFile);
  if (!anchor.ca) {
    throw new CliError("ERR_INPUT", `${options.caCertFile}: ${anchor.subject.text} is not a CA certificate (basicConstraints CA is not set)`);
  }
  if (!anchor.keyUsage.includes("keyCertSign")) {
    throw new CliError("ERR_INPUT", `${options.caCertFile}: ${anchor.subject.text} is not allowed to sign certificates (no keyCertSign key usage)`);
  }
  if (anchor.pathLength === 0) {
    throw new CliError("ERR_INPUT", `${options.caCertFile}: ${anchor.subject.text} has path length 0, so an issuer under it could not sign leaves`);
  }
  if (anchor.notAfter.getTime() <= now().getTime()) {
    throw new CliError("ERR_INPUT", `${options.caCertFile}: ${anchor.subject.text} ${describeExpiry(anchor.notAfter, now())}`);
  }
  const keyPair = await readPrivateKey(options.caKeyFile, "CA key");
  if (!(await certificateMatchesKey(anchorCert, keyPair.privateKey))) {
    throw new CliError("ERR_INPUT", `${options.caKeyFile} is not the private key of ${options.caCertFile} (${anchor.subject.text})`);
  }

  const issuer = await createIssuer({
    anchor: { certificate: anchorCert, privateKey: keyPair.privateKey },
    commonName: `identity.${controlNamespace}.${trustDomain}`,
    lifetimeMs: issuerLifetimeMs,
    now,
  });
  const written = await writeFilesAtomically({
    dir: options.outDir,
    force: options.force ?? false,
    files: [
      { name: "issuer.crt", contents: pemEncode("CERTIFICATE", issuer.certificate), mode: PUBLIC_FILE_MODE },
      { name: "issuer.key", contents: await pemKey(issuer.keyPair.privateKey), mode: KEY_FILE_MODE },
    ],
  });
  for (const file of written) {
    output.out(`wrote ${file}`);
  }
  const summary = await summarizeCertificate(issuer.certificate, "new issuer");
  output.out(`issuer ${summary.subject.text} under ${anchor.subject.text}: ${describeExpiry(summary.notAfter, now())}`);
  // Clamping is what ends an issuer with its anchor; comparing with now() instead misfires when issuance took over a second.
  if (summary.notAfter.getTime() >= anchor.notAfter.getTime()) {
    output.err("note: the issuer's lifetime was clamped to the trust anchor's expiry");
  }
}
