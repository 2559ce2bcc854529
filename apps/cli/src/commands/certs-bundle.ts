import { pemEncode } from "@meshtls/pki";
import { CliError } from "../errors.ts";
import { describeExpiry } from "../duration.ts";
import { PUBLIC_FILE_MODE, writeFilesAtomically } from "../files.ts";
import { readCertificates, summarizeCertificate } from "../inputs.ts";
import { lookUpRunning, nameCa, verifyRunning } from "../mesh/running-certificates.ts";
import type { Output } from "../output.ts";
import path from "node:path";

export interface BundleAnchorsOptions {
  /** The trust bundle file to write (its folder is created if missing). */
  outFile: string;
  /** Certificate files (PEM bundles or DER) whose certificates become the bundle, in order. */
  inputFiles: string[];
  /** Replace an existing bundle. Default false: refuse. */
  force?: boolean;
  /**
   * Proxies' admin addresses: each one's certificate (`GET /identity`) must
   * verify under the new bundle, or nothing is written. Default: none.
   */
  proxyAdmins?: string[];
  /** A running identity service's gRPC address: its serving certificate must verify under the new bundle. Default: none. */
  identityAddress?: string;
  /** Write the bundle even when a running certificate would not verify under it (or could not be read). Default false. */
  allowDrop?: boolean;
  /** Clock for expiry notes. Default `() => new Date()`. */
  now?: () => Date;
}

/**
 * `meshtls certs bundle`: merges trust anchors (old + new during a rotation)
 * into one PEM trust bundle, dropping duplicates by SHA-256 fingerprint and
 * keeping first-seen order. Every certificate must be a CA; an expired one is
 * refused, since trusting it achieves nothing and hides a mistake. Told where
 * certificates run (`proxyAdmins`, `identityAddress`), it refuses — writes
 * nothing, ERR_CHECK — a bundle under which any of them would no longer
 * verify (the outage of dropping the anchor still in use), unless `allowDrop`.
 */
export async function bundleAnchors(options: BundleAnchorsOptions, output: Output): Promise<void> {
  if (options.inputFiles.length === 0) {
    throw new CliError("ERR_USAGE", "give at least one certificate file to bundle");
  }
  const now = (options.now ?? (() => new Date()))();
  const seen = new Set<string>();
  const pems: string[] = [];
  const ders: Uint8Array[] = [];
  for (const file of options.inputFiles) {
    const certificates = await readCertificates(file, "certificate file");
    for (const [index, der] of certificates.entries()) {
      const where = certificates.length > 1 ? `${file} (certificate ${index + 1})` : file;
      const summary = await summarizeCertificate(der, where);
      if (!summary.ca) {
        throw new CliError("ERR_INPUT", `${where}: ${summary.subject.text} is not a CA certificate and cannot be a trust anchor`);
      }
      if (summary.notAfter.getTime() <= now.getTime()) {
        throw new CliError("ERR_INPUT", `${where}: ${summary.subject.text} ${describeExpiry(summary.notAfter, now)}; leave it out of the bundle`);
      }
      if (seen.has(summary.fingerprintSha256)) {
        output.err(`note: skipped duplicate ${summary.subject.text} from ${where}`);
        continue;
      }
      seen.add(summary.fingerprintSha256);
      pems.push(pemEncode("CERTIFICATE", der));
      ders.push(der);
      output.out(`anchor ${summary.subject.text} sha256:${summary.fingerprintSha256} (${describeExpiry(summary.notAfter, now)})`);
    }
  }
  await guardRunning(options, ders, now, output);
  const target = path.resolve(options.outFile);
  const [written] = await writeFilesAtomically({
    dir: path.dirname(target),
    force: options.force ?? false,
    files: [{ name: path.basename(target), contents: pems.join(""), mode: PUBLIC_FILE_MODE }],
  });
  output.out(`wrote ${written} with ${pems.length} trust anchor${pems.length === 1 ? "" : "s"}`);
}

/** Every running certificate must verify under the new bundle; refuses (ERR_CHECK) otherwise, unless `allowDrop`. */
async function guardRunning(options: BundleAnchorsOptions, anchors: Uint8Array[], now: Date, output: Output): Promise<void> {
  const lookups = await lookUpRunning({
    proxyAdmins: options.proxyAdmins ?? [],
    ...(options.identityAddress === undefined ? {} : { identityAddress: options.identityAddress }),
  });
  const problems: string[] = [];
  for (const lookup of lookups) {
    if (!lookup.ok) {
      problems.push(`${lookup.source}: cannot read its certificate (${lookup.reason})`);
      continue;
    }
    const verified = await verifyRunning(lookup.certificate, anchors, now);
    if (verified.ok) {
      output.out(`running: ${lookup.certificate.source} (${verified.identity}) chains to ${nameCa(verified.anchor)}, kept by this bundle`);
    } else {
      problems.push(`${lookup.certificate.source} (${verified.identity}) would no longer verify: ${verified.reason} (${verified.code})`);
    }
  }
  if (problems.length === 0) return;
  const list = problems.map((p) => `\n  ${p}`).join("");
  if (options.allowDrop === true) {
    output.err(`warning: writing anyway (--allow-drop); rolling this bundle out breaks these running certificates:${list}`);
    return;
  }
  throw new CliError(
    "ERR_CHECK",
    `refusing to write ${options.outFile}: running certificates would not verify under it (did you leave out the anchor in use?):${list}\nrenew them under an anchor of this bundle first (meshtls renew), or give --allow-drop to write it anyway`,
  );
}
