import { execFileSync } from "node:child_process";
import path from "node:path";
import { defaultBinaries, type MeshBinaries } from "../src/demo/mesh.ts";
import { appRoot } from "./helpers.ts";

/** The app binaries as the CLI finds them, and the built workload app (tests import src/, so not beside it). */
export function testBinaries(): MeshBinaries {
  return { ...defaultBinaries(), workloadApp: path.join(appRoot, "dist", "workload-app.js") };
}

/** Whether a process with this pid exists (ps, not a signal, so zombies of others do not count as ours). */
export function alive(pid: number): boolean {
  try {
    const out = execFileSync("ps", ["-o", "pid=,stat=", "-p", String(pid)], { encoding: "utf8" }).trim();
    return out !== "" && !/\bZ/.test(out.split(/\s+/)[1] ?? "");
  } catch {
    return false; // ps exits 1 when there is no such process
  }
}

/** Command lines of every process that mentions `text`. */
export function processesMentioning(text: string): string[] {
  const out = execFileSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" });
  return out.split("\n").filter((line) => line.includes(text) && !line.includes("ps -eo"));
}

/** Polls `probe` every `intervalMs` until it returns a value that is not undefined, or throws after `timeoutMs`. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 500): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
