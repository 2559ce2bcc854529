import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { IdentityError } from "./errors.ts";
import type { Issuer } from "./issuer.ts";
import { Rejected, validateCandidate } from "./validate-issuer.ts";

/** A certificate/key pair of file names an issuer folder may hold, and who writes it. */
export interface IssuerLayout {
  certificate: string;
  key: string;
  /** Who writes this layout, e.g. `Linkerd`. */
  source: string;
}

/** Layouts tried in this order; the first of which either file exists is the one read. */
export const ISSUER_LAYOUTS: readonly IssuerLayout[] = [
  { certificate: "issuer.crt", key: "issuer.key", source: "meshtls certs create / certs issuer" },
  { certificate: "crt.pem", key: "key.pem", source: "Linkerd" },
  { certificate: "tls.crt", key: "tls.key", source: "cert-manager / kubernetes.io/tls Secret" },
];

/** Where an issuer folder keeps its issuer. */
export interface IssuerFolderFiles {
  /** The issuer certificate file (the issuer first, then any intermediates). */
  certificate: string;
  key: string;
  layout: IssuerLayout;
  /** `ca.crt` beside `tls.crt`/`tls.key` (cert-manager writes the anchor there): never trusted, anchors come from elsewhere. */
  informationalCa?: string;
  /** Files of later layouts also present: ignored, since the first layout found wins. */
  shadowed?: string[];
}

/**
 * Finds the issuer files in `dir` as the issuer store reads them: the first
 * layout of {@link ISSUER_LAYOUTS} of which either file exists, and both of
 * its files must exist. Existence follows symbolic links (a Kubernetes Secret
 * volume's `..data`); a dangling link counts as missing. Throws
 * `ERR_ISSUER_INVALID` saying what is missing.
 */
export async function findIssuerFiles(dir: string): Promise<IssuerFolderFiles> {
  try {
    return await locateIssuerFiles(dir);
  } catch (error) {
    throw asIdentityError(error);
  }
}

/**
 * Reads and validates the issuer of `dir` exactly as `createIssuerStore`
 * loads it ({@link findIssuerFiles}, then `validateIssuer`'s checks, probe
 * leaf included). Throws `ERR_ISSUER_INVALID` whose message names the file
 * and the reason; its `cause` carries the `rejection` kind.
 */
export async function loadIssuerFolder(options: {
  dir: string;
  trustAnchors: Uint8Array[];
  now?: Date;
  trustDomain?: string;
  controlNamespace?: string;
}): Promise<Issuer> {
  try {
    const candidate = await readIssuerFolder(options.dir);
    return await validateCandidate({
      ...candidate,
      trustAnchors: options.trustAnchors,
      now: options.now ?? new Date(),
      trustDomain: options.trustDomain,
      controlNamespace: options.controlNamespace,
    });
  } catch (error) {
    throw asIdentityError(error);
  }
}

/** The folder's issuer files' bytes and a hash of layout and content (the store reloads when it changes). Throws `Rejected`. */
export async function readIssuerFolder(dir: string): Promise<{ source: { certificate: string; key: string }; origin: string; cert: Buffer; key: Buffer; hash: string }> {
  const files = await locateIssuerFiles(dir);
  let cert: Buffer;
  let key: Buffer;
  try {
    [cert, key] = await Promise.all([readFile(files.certificate), readFile(files.key)]);
  } catch (error) {
    throw new Rejected("unreadable", `cannot read the issuer files: ${(error as Error).message}`);
  }
  const hash = createHash("sha256").update(files.layout.certificate).update("\0").update(cert).update("\0").update(key).digest("hex");
  return { source: { certificate: files.certificate, key: files.key }, origin: `${files.certificate} + ${files.key}`, cert, key, hash };
}

async function locateIssuerFiles(dir: string): Promise<IssuerFolderFiles> {
  let folder: Awaited<ReturnType<typeof stat>>;
  try {
    folder = await stat(dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new Rejected("not_found", `cannot read issuer folder ${dir}: no such file or directory`);
    throw new Rejected("unreadable", `cannot read issuer folder ${dir}: ${code === "EACCES" ? "permission denied" : (error as Error).message}`);
  }
  if (!folder.isDirectory()) throw new Rejected("not_found", `issuer folder ${dir} is not a directory`);
  for (const [index, layout] of ISSUER_LAYOUTS.entries()) {
    const certificate = path.join(dir, layout.certificate);
    const key = path.join(dir, layout.key);
    const [certExists, keyExists] = await Promise.all([exists(certificate), exists(key)]);
    if (!certExists && !keyExists) continue;
    if (!certExists || !keyExists) {
      const [present, absent] = certExists ? [certificate, key] : [key, certificate];
      throw new Rejected("not_found", `${present} exists but ${absent} does not: the ${layout.source} layout needs both`);
    }
    const files: IssuerFolderFiles = { certificate, key, layout };
    if (layout.certificate === "tls.crt" && (await exists(path.join(dir, "ca.crt")))) files.informationalCa = path.join(dir, "ca.crt");
    const later = ISSUER_LAYOUTS.slice(index + 1).flatMap((l) => [l.certificate, l.key].map((name) => path.join(dir, name)));
    const shadowed: string[] = [];
    for (const file of later) if (await exists(file)) shadowed.push(file);
    if (shadowed.length > 0) files.shadowed = shadowed;
    return files;
  }
  throw new Rejected("not_found", `no issuer in ${dir}: expected ${ISSUER_LAYOUTS.map((l) => `${l.certificate} + ${l.key} (${l.source})`).join(", or ")}`);
}

function asIdentityError(error: unknown): IdentityError {
  return new IdentityError("ERR_ISSUER_INVALID", error instanceof Error ? error.message : String(error), { cause: error });
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
