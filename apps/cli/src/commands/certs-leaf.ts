import { certificateMatchesKey, generateKeyPair, issueLeaf, isDnsSubdomain, parseIdentityName, pemEncode, spiffeIdForIdentity } from "@meshtls/pki";
import { describeExpiry } from "../duration.ts";
import { findIssuerFiles, type IssuerFolderFiles } from "@meshtls/identity";
import { CliError, describeError } from "../errors.ts";
import { KEY_FILE_MODE, PUBLIC_FILE_MODE, writeFilesAtomically } from "../files.ts";
import { readCertificates, readPrivateKey, summarizeCertificate } from "../inputs.ts";
import type { Output } from "../output.ts";
import { pemKey } from "./certs-create.ts";

/** Default lifetime of a test workload certificate: 1 hour. */
export const DEFAULT_TEST_LEAF_LIFETIME_MS = 3_600_000;
/** Longest lifetime of a test workload certificate: 24 hours, a workload's own leaf lifetime. */
export const MAX_TEST_LEAF_LIFETIME_MS = 24 * 3_600_000;
/** File names written by `meshtls certs leaf`. */
export const LEAF_CERT_FILE = "leaf.crt";
export const LEAF_KEY_FILE = "leaf.key";

export interface CreateTestLeafOptions {
  /** The identity, e.g. `web.default.serviceaccount.identity.meshtls.cluster.local`. */
  identity: string;
  /** Issuer folder, read as the identity service reads it (issuer.crt + issuer.key, crt.pem + key.pem, tls.crt + tls.key). */
  issuerDir: string;
  /** Folder for leaf.crt (leaf then issuer chain, 0644) and leaf.key (PKCS#8, 0600). */
  outDir: string;
  /** Lifetime, 1 minute to 24 hours. Default 1 hour. */
  lifetimeMs?: number;
  /** Replace existing files. Default false: refuse. */
  force?: boolean;
  /** Clock. Default `() => new Date()`. */
  now?: () => Date;
}

/**
 * `meshtls certs leaf`: a workload certificate FOR TESTING BY HAND, signed
 * directly with the issuer's key (the identity service is not involved): to
 * call a proxy under `all-authenticated` with curl or `openssl s_client`, or
 * to try `meshtls inspect --cert`. Short-lived by default (1 h, at most 24 h);
 * the same profile as the identity service's leaves (SAN DNS = identity,
 * SPIFFE URI when the name is a mesh identity, serverAuth + clientAuth).
 */
export async function createTestLeaf(options: CreateTestLeafOptions, output: Output): Promise<void> {
  const lifetimeMs = options.lifetimeMs ?? DEFAULT_TEST_LEAF_LIFETIME_MS;
  if (!Number.isFinite(lifetimeMs) || lifetimeMs < 60_000 || lifetimeMs > MAX_TEST_LEAF_LIFETIME_MS) {
    throw new CliError("ERR_USAGE", "--lifetime must be between 1m and 24h: a test certificate is short-lived");
  }
  if (!isDnsSubdomain(options.identity)) {
    throw new CliError("ERR_USAGE", `--identity "${options.identity}" is not a DNS name (e.g. web.default.serviceaccount.identity.meshtls.cluster.local)`);
  }
  let spiffeId: string | undefined;
  try {
    // The control namespace and trust domain are read from the name itself: <sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>.
    const m = /^[^.]+\.[^.]+\.serviceaccount\.identity\.([^.]+)\.(.+)$/.exec(options.identity);
    if (m === null) throw new Error("not a mesh identity");
    const names = { controlNamespace: m[1]!, trustDomain: m[2]! };
    parseIdentityName(options.identity, names);
    spiffeId = spiffeIdForIdentity(options.identity, names);
  } catch {
    output.err(`note: ${options.identity} is not a mesh identity name (<sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>); no SPIFFE ID is added`);
  }
  const now = options.now ?? (() => new Date());
  let files: IssuerFolderFiles;
  try {
    files = await findIssuerFiles(options.issuerDir);
  } catch (error) {
    throw new CliError("ERR_INPUT", (error as Error).message, { cause: error });
  }
  const issuerChain = await readCertificates(files.certificate, "issuer certificate");
  const issuerKey = await readPrivateKey(files.key, "issuer key");
  const issuer = await summarizeCertificate(issuerChain[0]!, files.certificate);
  if (!(await certificateMatchesKey(issuer.der, issuerKey.privateKey))) {
    throw new CliError("ERR_INPUT", `${files.key} is not the private key of ${files.certificate} (${issuer.subject.text})`);
  }
  const keyPair = await generateKeyPair();
  let leaf: Uint8Array;
  try {
    leaf = await issueLeaf({
      issuer: { certificate: issuer.der, privateKey: issuerKey.privateKey },
      publicKey: keyPair.publicKey,
      identity: options.identity,
      ...(spiffeId === undefined ? {} : { spiffeId }),
      lifetimeMs,
      now,
    });
  } catch (error) {
    throw new CliError("ERR_INPUT", `cannot issue under ${files.certificate}: ${describeError(error)}`, { cause: error });
  }
  const written = await writeFilesAtomically({
    dir: options.outDir,
    force: options.force ?? false,
    files: [
      { name: LEAF_CERT_FILE, contents: [leaf, ...issuerChain].map((der) => pemEncode("CERTIFICATE", der)).join(""), mode: PUBLIC_FILE_MODE },
      { name: LEAF_KEY_FILE, contents: await pemKey(keyPair.privateKey), mode: KEY_FILE_MODE },
    ],
  });
  for (const file of written) output.out(`wrote ${file}`);
  const summary = await summarizeCertificate(leaf, "new certificate");
  output.out(
    `TEST certificate for ${options.identity}${spiffeId === undefined ? "" : ` (${spiffeId})`}, issued by ${issuer.subject.text}, ${describeExpiry(summary.notAfter, now())}: for testing by hand, not for workloads (their proxies get theirs from the identity service)`,
  );
}
