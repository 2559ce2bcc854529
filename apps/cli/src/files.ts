import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, chmod, mkdir, open, rename, rm } from "node:fs/promises";
import path from "node:path";
import { CliError } from "./errors.ts";

/** Mode of key files: owner read/write only. */
export const KEY_FILE_MODE = 0o600;
/** Mode of certificate and public files. */
export const PUBLIC_FILE_MODE = 0o644;

/** The largest input file any command reads (1 MiB): a certificate bundle is far smaller. */
export const MAX_INPUT_BYTES = 1024 * 1024;

/** One file a command wants to write. */
export interface PlannedFile {
  name: string;
  contents: string;
  mode: number;
}

/**
 * Writes files into `dir` (created if missing) only after checking that none
 * exists, unless `force`. Each file is written to a temporary name in the same
 * folder, flushed, given its mode, then renamed over the target, so a reader
 * never sees a half-written key. Returns the absolute paths written.
 */
export async function writeFilesAtomically(options: {
  dir: string;
  files: PlannedFile[];
  force?: boolean;
}): Promise<string[]> {
  const dir = path.resolve(options.dir);
  if (options.force !== true) {
    const existing: string[] = [];
    for (const file of options.files) {
      if (await exists(path.join(dir, file.name))) {
        existing.push(path.join(dir, file.name));
      }
    }
    if (existing.length > 0) {
      throw new CliError(
        "ERR_EXISTS",
        `refusing to overwrite ${existing.join(", ")} (use --force to replace)`,
      );
    }
  }
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw new CliError("ERR_IO", `cannot create directory ${dir}: ${ioReason(error)}`, { cause: error });
  }
  const written: string[] = [];
  for (const file of options.files) {
    const target = path.join(dir, file.name);
    await writeFileAtomically(target, file.contents, file.mode);
    written.push(target);
  }
  return written;
}

async function writeFileAtomically(target: string, contents: string, mode: number): Promise<void> {
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    // "wx": never follow or reuse an existing file at the temporary name.
    const handle = await open(temp, "wx", mode);
    try {
      await handle.writeFile(contents);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await chmod(temp, mode); // the umask may have narrowed or the mode must be exact
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw new CliError("ERR_IO", `cannot write ${target}: ${ioReason(error)}`, { cause: error });
  }
}

/** Reads an input file, refusing anything larger than MAX_INPUT_BYTES. */
export async function readInputFile(file: string, what: string): Promise<Uint8Array> {
  let data: Buffer;
  try {
    const handle = await open(file, "r");
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) {
        throw new CliError("ERR_IO", `${what} ${file} is not a regular file`);
      }
      if (stat.size > MAX_INPUT_BYTES) {
        throw new CliError("ERR_INPUT", `${what} ${file} is larger than 1 MiB; not a certificate, CSR or key`);
      }
      data = await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof CliError) {
      throw error;
    }
    throw new CliError("ERR_IO", `cannot read ${what} ${file}: ${ioReason(error)}`, { cause: error });
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Reads a small text file (PEM, JSON); see readInputFile. */
export async function readInputText(file: string, what: string): Promise<string> {
  return new TextDecoder().decode(await readInputFile(file, what));
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

function ioReason(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "ENOENT") return "no such file or directory";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  if (code === "EISDIR") return "is a directory";
  if (code === "ENOTDIR") return "a parent is not a directory";
  return error instanceof Error ? error.message : String(error);
}
