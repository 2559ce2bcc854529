import { stat } from "node:fs/promises";
import path from "node:path";
import { CliError } from "./errors.ts";

/**
 * The certificate/key pairs an issuer folder may hold, tried in this order:
 * the same layouts, order and rules as the identity service's issuer store
 * (`ISSUER_LAYOUTS` and `createIssuerStore` in @meshtls/identity), so that
 * `meshtls check --issuer-dir` reads what the identity service would load.
 */
export const ISSUER_LAYOUTS: readonly { certificate: string; key: string; source: string }[] = [
  { certificate: "issuer.crt", key: "issuer.key", source: "meshtls certs create / certs issuer" },
  { certificate: "crt.pem", key: "key.pem", source: "Linkerd" },
  { certificate: "tls.crt", key: "tls.key", source: "cert-manager / kubernetes.io/tls Secret" },
];

/** Where an issuer folder keeps its issuer. */
export interface IssuerFiles {
  /** The issuer certificate (the issuer first, then any intermediates). */
  certificateFile: string;
  keyFile: string;
  /** Who writes this layout, e.g. `Linkerd`. */
  source: string;
  /** `ca.crt` beside `tls.crt`/`tls.key` (cert-manager writes the anchor there); informational only, never trusted. */
  informationalCaFile?: string;
  /** Files of later layouts also present in the folder: ignored, since the first layout found wins (`tls.crt` beside `issuer.crt`). */
  shadowed?: string[];
}

/**
 * Finds the issuer in `dir` as the identity service does: the first layout of
 * which either file exists is used, and both of its files must exist.
 * Existence follows symbolic links, so a Kubernetes Secret volume
 * (`tls.crt -> ..data/tls.crt`, `..data -> ..2026_…`) is read through its
 * current `..data`; a dangling link counts as missing. Throws `CliError`
 * ERR_IO when `dir` cannot be read and ERR_INPUT when no layout is complete.
 */
export async function findIssuerFiles(dir: string): Promise<IssuerFiles> {
  let folder: Awaited<ReturnType<typeof stat>>;
  try {
    folder = await stat(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === "ENOENT" ? "no such file or directory" : code === "EACCES" ? "permission denied" : (error as Error).message;
    throw new CliError("ERR_IO", `cannot read issuer folder ${dir}: ${reason}`, { cause: error });
  }
  if (!folder.isDirectory()) throw new CliError("ERR_INPUT", `issuer folder ${dir} is not a directory`);
  for (const layout of ISSUER_LAYOUTS) {
    const certificateFile = path.join(dir, layout.certificate);
    const keyFile = path.join(dir, layout.key);
    const [certificate, key] = await Promise.all([statOrUndefined(certificateFile), statOrUndefined(keyFile)]);
    if (certificate === undefined && key === undefined) continue;
    if (certificate === undefined || key === undefined) {
      const [present, absent] = certificate === undefined ? [keyFile, certificateFile] : [certificateFile, keyFile];
      throw new CliError("ERR_INPUT", `${present} exists but ${absent} does not; the identity service would refuse this folder`);
    }
    const files: IssuerFiles = { certificateFile, keyFile, source: layout.source };
    if (layout.certificate === "tls.crt") {
      const caFile = path.join(dir, "ca.crt");
      if ((await statOrUndefined(caFile)) !== undefined) files.informationalCaFile = caFile;
    }
    const later = ISSUER_LAYOUTS.slice(ISSUER_LAYOUTS.indexOf(layout) + 1).flatMap((l) => [l.certificate, l.key]);
    const shadowed: string[] = [];
    for (const name of later) {
      if ((await statOrUndefined(path.join(dir, name))) !== undefined) shadowed.push(path.join(dir, name));
    }
    if (shadowed.length > 0) files.shadowed = shadowed;
    return files;
  }
  throw new CliError(
    "ERR_INPUT",
    `no issuer in ${dir}: expected ${ISSUER_LAYOUTS.map((l) => `${l.certificate} + ${l.key} (${l.source})`).join(", or ")}`,
  );
}

async function statOrUndefined(file: string): Promise<Awaited<ReturnType<typeof stat>> | undefined> {
  try {
    return await stat(file);
  } catch {
    return undefined;
  }
}
