import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { TransparentError } from "./errors.ts";

/** `nft`: iptables-nft (Linkerd's default); `legacy`: iptables-legacy; `plain`: whatever `iptables` is. */
export type IptablesMode = "nft" | "legacy" | "plain";

/** The three binaries of one mode and family. */
export interface IptablesBinaries {
  mode: IptablesMode;
  family: 4 | 6;
  iptables: string;
  save: string;
  restore: string;
}

/** Runs a command with optional stdin; resolves with its exit code and output (never rejects for a non-zero exit). */
export type CommandRunner = (command: string, args: readonly string[], stdin?: string) => Promise<{ code: number; stdout: string; stderr: string }>;

/** A {@link CommandRunner} that spawns the command. */
export const spawnCommand: CommandRunner = (command, args, stdin) =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: [stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", (cause) => reject(new TransparentError("ERR_TRANSPARENT_IPTABLES", `${command}: ${cause.message}`, { cause })));
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
    // A command that exits before reading all of stdin reports it by its exit code, not by EPIPE.
    child.stdin?.on("error", () => undefined).end(stdin);
  });

/** Binary names of a mode and family, e.g. `ip6tables-nft`, `ip6tables-nft-save`, `ip6tables-nft-restore`. */
export function binaryNames(mode: IptablesMode, family: 4 | 6): IptablesBinaries {
  const base = `${family === 4 ? "iptables" : "ip6tables"}${mode === "plain" ? "" : `-${mode}`}`;
  return { mode, family, iptables: base, save: `${base}-save`, restore: `${base}-restore` };
}

/** Directories searched: PATH, then the sbin folders a non-root PATH often lacks. */
function searchPath(env: NodeJS.ProcessEnv): string[] {
  return [...(env.PATH ?? "").split(path.delimiter).filter((dir) => dir !== ""), "/usr/sbin", "/sbin", "/usr/local/sbin"];
}

const find = (name: string, dirs: readonly string[]): string | undefined => dirs.map((dir) => path.join(dir, name)).find((file) => existsSync(file));

/**
 * The installed binaries for `mode`, falling back as proxy-init does
 * (nft → plain → legacy) when a mode's binaries are missing; throws
 * `ERR_TRANSPARENT_NO_IPTABLES` when none is installed.
 */
export function findBinaries(mode: IptablesMode, family: 4 | 6, env: NodeJS.ProcessEnv = process.env): IptablesBinaries {
  const order: IptablesMode[] = mode === "nft" ? ["nft", "plain", "legacy"] : mode === "legacy" ? ["legacy"] : ["plain", "legacy"];
  const dirs = searchPath(env);
  for (const candidate of order) {
    const names = binaryNames(candidate, family);
    const found = [names.iptables, names.save, names.restore].map((name) => find(name, dirs));
    if (found.every((file) => file !== undefined)) {
      return { mode: candidate, family, iptables: found[0]!, save: found[1]!, restore: found[2]! };
    }
  }
  throw new TransparentError(
    "ERR_TRANSPARENT_NO_IPTABLES",
    `no ${binaryNames(mode, family).iptables} (nor a fallback: ${order.join(", ")}) with its -save and -restore in ${dirs.join(":")}; install iptables`,
  );
}
