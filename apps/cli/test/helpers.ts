import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** apps/cli */
export const appRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
/** The repository root (two levels above apps/cli). */
export const repoRoot = path.resolve(appRoot, "../..");
/** External vectors, beside the repository (same layout in CI). */
export const vectorsDir = path.resolve(repoRoot, "../shared/vectors");
/** The built binary; tests that spawn it need `pnpm --filter meshtls build` first. */
export const cliBin = path.join(appRoot, "dist", "main.js");

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node dist/main.js ...args`, killed after `timeoutMs` (default 20 s). */
export function runCli(args: string[], options: { timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  if (!existsSync(cliBin)) {
    throw new Error(`${cliBin} is missing: run "pnpm --filter meshtls build" first`);
  }
  return run(process.execPath, [cliBin, ...args], options);
}

/** Runs `openssl ...args`. */
export function runOpenssl(args: string[], options: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return run("openssl", args, options);
}

/** Runs a program without a shell, collecting its output, killed after `timeoutMs`. */
export function run(
  file: string,
  args: string[],
  options: { timeoutMs?: number; cwd?: string; input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd ?? appRoot,
      env: options.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on("error", () => undefined); // the child may exit before reading stdin
    child.stdin.end(options.input ?? "");
  });
}

/** A fresh temporary folder and a function that removes it. */
export async function makeTempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "meshtls-cli-"));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

