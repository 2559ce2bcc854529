// Shared by the *.test.ts files only; not exported from the package.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root, computed from this file's location (packages/pki/src). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** Path of an external test vector under ../shared/vectors. */
export function vectorPath(...parts: string[]): string {
  return path.resolve(repoRoot, "../shared/vectors", ...parts);
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs openssl with a time bound; never throws for a non-zero exit. */
export function openssl(args: string[], options: { input?: string; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile("openssl", args, { timeout: 20_000, cwd: options.cwd, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") {
        reject(err);
        return;
      }
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** A temporary directory with a writer and cleanup. */
export async function tempDir(): Promise<{ dir: string; write(name: string, data: string | Uint8Array): Promise<string>; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), "meshtls-pki-"));
  return {
    dir,
    async write(name, data) {
      const p = path.join(dir, name);
      await writeFile(p, data);
      return p;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
