import { pemEncode } from "@meshtls/pki";
import { CliError } from "../errors.ts";
import { describeExpiry } from "../duration.ts";
import { PUBLIC_FILE_MODE, writeFilesAtomically } from "../files.ts";
import { readCertificates, summarizeCertificate } from "../inputs.ts";
import type { Output } from "../output.ts";
import path from "node:path";

export interface BundleAnchorsOptions {
  /** The trust bundle file to write (its folder is created if missing). */
  outFile: string;
  /** Certificate files (PEM bundles or DER) whose certificates become the bundle, in order. */
  inputFiles: string[];
  /** Replace an existing bundle. Default false: refuse. */
  force?: boolean;
  /** Clock for expiry notes. Default `() => new Date()`. */
  now?: () => Date;
}

/**
 * `meshtls certs bundle`: merges trust anchors (old + new during a rotation)
 * into one PEM trust bundle, dropping duplicates by SHA-256 fingerprint and
 * keeping first-seen order. Every certificate must be a CA; an expired one is
 * refused, since trusting it achieves nothing and hides a mistake.
 */
export async function bundleAnchors(options: BundleAnchorsOptions, output: Output): Promise<void> {
  if (options.inputFiles.length === 0) {
    throw new CliError("ERR_USAGE", "give at least one certificate file to bundle");
  }
  const now = (options.now ?? (() => new Date()))();
  const seen = new Set<string>();
  const pems: string[] = [];
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
      output.out(`anchor ${summary.subject.text} sha256:${summary.fingerprintSha256} (${describeExpiry(summary.notAfter, now)})`);
    }
  }
  const target = path.resolve(options.outFile);
  const [written] = await writeFilesAtomically({
    dir: path.dirname(target),
    force: options.force ?? false,
    files: [{ name: path.basename(target), contents: pems.join(""), mode: PUBLIC_FILE_MODE }],
  });
  output.out(`wrote ${written} with ${pems.length} trust anchor${pems.length === 1 ? "" : "s"}`);
}
