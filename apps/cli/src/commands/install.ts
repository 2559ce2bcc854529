import { readFile } from "node:fs/promises";
import { buildInstallManifests, type InstallOptions, type PemPair } from "@meshtls/kubernetes";
import { findIssuerFiles } from "@meshtls/identity";
import { certificateMatchesKey, createTrustAnchor, generateKeyPair, issueLeaf, pemEncode, spiffeIdForIdentity } from "@meshtls/pki";
import { stringify } from "yaml";
import { CliError, describeError } from "../errors.ts";
import { readCertificates, readPrivateKey, summarizeCertificate } from "../inputs.ts";
import type { Output } from "../output.ts";
import { pemKey } from "./certs-create.ts";

/** The injector's self-signed serving certificate and its CA: 365 days, as Helm's genSelfSignedCert in Linkerd's chart. */
const INJECTOR_CERT_LIFETIME_MS = 365 * 24 * 3_600_000;
/** Longest life of the destination's serving leaf from the issuer (files mode); never past the issuer's own notAfter. */
const DESTINATION_LEAF_MAX_MS = 365 * 24 * 3_600_000;

export interface InstallCommandOptions extends Omit<InstallOptions, "trustAnchorsPem" | "issuer" | "injector"> {
  issuerFrom: "files" | "cert-manager";
  /** Folder of `meshtls certs create` (ca.crt, issuer.crt, issuer.key); needed with `files`. */
  certsDir?: string;
  /** Trust anchors PEM file. Default `<certsDir>/ca.crt`; required with cert-manager. */
  trustAnchorsFile?: string;
  format: "yaml" | "json";
  now?: () => Date;
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw new CliError("ERR_IO", `cannot read ${what} ${file}: ${describeError(error)}`, { cause: error });
  }
}

/**
 * `meshtls install`: prints the control plane's manifests for
 * `kubectl apply -f -`. With `--issuer-from files` the issuer Secret holds
 * `meshtls certs` output and the destination's serving certificate is issued
 * here from that issuer; with `cert-manager` the Issuers and Certificates
 * are emitted instead. The injector's serving certificate is made here (a
 * self-signed CA whose certificate is the webhook's caBundle) unless
 * cert-manager injects it.
 */
export async function installManifests(options: InstallCommandOptions, output: Output): Promise<void> {
  const ns = options.namespace ?? "meshtls";
  const trustDomain = options.trustDomain ?? "cluster.local";
  const now = options.now ?? (() => new Date());
  const anchorsFile = options.trustAnchorsFile ?? (options.certsDir === undefined ? undefined : `${options.certsDir}/ca.crt`);
  if (anchorsFile === undefined) throw new CliError("ERR_USAGE", "--trust-anchors (or --certs-dir) is required");
  const trustAnchorsPem = await readText(anchorsFile, "trust anchors");
  if (!trustAnchorsPem.includes("-----BEGIN CERTIFICATE-----")) throw new CliError("ERR_INPUT", `${anchorsFile} holds no PEM certificate`);

  let issuer: InstallOptions["issuer"];
  let injector: InstallOptions["injector"];
  if (options.issuerFrom === "files") {
    if (options.certsDir === undefined) throw new CliError("ERR_USAGE", "--issuer-from files needs --certs-dir (the folder meshtls certs create wrote)");
    let files;
    try {
      files = await findIssuerFiles(options.certsDir);
    } catch (error) {
      throw new CliError("ERR_INPUT", describeError(error), { cause: error });
    }
    const chain = await readCertificates(files.certificate, "issuer certificate");
    const key = await readPrivateKey(files.key, "issuer key");
    const summary = await summarizeCertificate(chain[0]!, files.certificate);
    if (!(await certificateMatchesKey(summary.der, key.privateKey))) throw new CliError("ERR_INPUT", `${files.key} is not the private key of ${files.certificate}`);
    const issuerPair: PemPair = { certificatePem: await readText(files.certificate, "issuer certificate"), privateKeyPem: await readText(files.key, "issuer key") };
    const identity = `destination.${ns}.serviceaccount.identity.${ns}.${trustDomain}`;
    const destinationKeys = await generateKeyPair();
    const lifetimeMs = Math.min(DESTINATION_LEAF_MAX_MS, summary.notAfter.getTime() - now().getTime() - 60_000);
    if (lifetimeMs < 3_600_000) throw new CliError("ERR_INPUT", `the issuer ${files.certificate} expires within the hour: rotate it first`);
    const leaf = await issueLeaf({
      issuer: { certificate: summary.der, privateKey: key.privateKey },
      publicKey: destinationKeys.publicKey,
      identity,
      spiffeId: spiffeIdForIdentity(identity, { controlNamespace: ns, trustDomain }),
      lifetimeMs,
      now,
    });
    issuer = {
      from: "files",
      issuer: issuerPair,
      destination: { certificatePem: [leaf, ...chain].map((der) => pemEncode("CERTIFICATE", der)).join(""), privateKeyPem: await pemKey(destinationKeys.privateKey) },
    };
    const ca = await createTrustAnchor({ commonName: `meshtls-injector-ca.${ns}.svc`, lifetimeMs: INJECTOR_CERT_LIFETIME_MS, now });
    const servingKeys = await generateKeyPair();
    const serving = await issueLeaf({
      issuer: { certificate: ca.certificate, privateKey: ca.keyPair.privateKey },
      publicKey: servingKeys.publicKey,
      identity: `meshtls-injector.${ns}.svc`,
      lifetimeMs: INJECTOR_CERT_LIFETIME_MS - 3_600_000,
      now,
    });
    injector = { certificatePem: pemEncode("CERTIFICATE", serving), privateKeyPem: await pemKey(servingKeys.privateKey), caBundlePem: pemEncode("CERTIFICATE", ca.certificate) };
  } else {
    issuer = { from: "cert-manager" };
  }
  const { issuerFrom: _from, certsDir: _dir, trustAnchorsFile: _anchors, format, now: _now, ...rest } = options;
  const objects = buildInstallManifests({ ...rest, trustAnchorsPem, issuer, ...(injector === undefined ? {} : { injector }) });
  if (format === "json") output.out(JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }, null, 2));
  else output.out(objects.map((o) => stringify(o, { lineWidth: 0 }).trimEnd()).join("\n---\n"));
}
