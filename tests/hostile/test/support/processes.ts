// The real binaries as child processes: JSON log lines kept, liveness and RSS read from /proc.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
export const bins = {
  cli: path.join(repoRoot, "apps/cli/dist/main.js"),
  identity: path.join(repoRoot, "apps/identity/dist/main.js"),
  destination: path.join(repoRoot, "apps/destination/dist/main.js"),
  proxy: path.join(repoRoot, "apps/proxy/dist/main.js"),
  injector: path.join(repoRoot, "apps/injector/dist/main.js"),
};

/** Temporary folders of this test file (keys and tokens in them): removed by {@link stopAll}. */
const dirs = new Set<string>();

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `meshtls-hostile-${prefix}-`));
  dirs.add(dir);
  return dir;
}

export { freePort } from "../../../../test-support/ports.ts";

export type LogLine = Record<string, unknown> & { msg?: string };

/** A started binary whose JSON log lines are kept and can be waited for. */
export class Proc {
  readonly lines: LogLine[] = [];
  private stderrText = "";
  private readonly waiters = new Set<() => void>();
  readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    let buffer = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const text = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(text) as LogLine);
        } catch {
          this.lines.push({ msg: text });
        }
        // Only the last few thousand lines matter; floods log a line per refusal.
        if (this.lines.length > 5000) this.lines.splice(0, this.lines.length - 5000);
        for (const wake of [...this.waiters]) wake();
      }
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      this.stderrText = (this.stderrText + chunk).slice(-20_000);
    });
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        this.exitCode = code ?? (signal === null ? null : -1);
        for (const wake of [...this.waiters]) wake();
        resolve(this.exitCode);
      }),
    );
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  stderr(): string {
    return this.stderrText;
  }

  /** The first log line matching, waiting up to `timeoutMs`; rejects if the process exits first. */
  waitFor(match: (line: LogLine) => boolean, timeoutMs = 30_000): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = this.lines.find(match);
        if (hit !== undefined) done(() => resolve(hit));
        else if (this.exitCode !== undefined) {
          done(() => reject(new Error(`${this.name} exited (${String(this.exitCode)}): ${this.stderrText}; last: ${JSON.stringify(this.lines.slice(-3))}`)));
        }
      };
      const timer = setTimeout(() => done(() => reject(new Error(`${this.name}: no matching log line in ${timeoutMs} ms; stderr: ${this.stderrText}; last: ${JSON.stringify(this.lines.slice(-5))}`))), timeoutMs);
      const done = (settle: () => void): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        settle();
      };
      this.waiters.add(check);
      check();
    });
  }

  waitForMsg(msg: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitFor((l) => l.msg === msg, timeoutMs);
  }

  /** Whether the process (and, with `--workers`, every child it forked) still runs. */
  alive(): boolean {
    return this.exitCode === undefined && pidAlive(this.pid);
  }

  /** Resident memory of the process and its children, in KiB (VmRSS from /proc). */
  rssKiB(): number {
    return [this.pid, ...childPids(this.pid)].reduce((sum, pid) => sum + rssOf(pid), 0);
  }

  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * Every binary this test file started, so that afterAll can stop them all:
 * one that started while a sibling failed to (Promise.all rejected before its
 * result was assigned) must not outlive the file.
 */
const started = new Set<Proc>();

/** Starts `node <bin> ...args` with only PATH in its environment (no MESHTLS_* leaks in). */
export function startNode(name: string, bin: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [bin, ...args], { env: { PATH: process.env["PATH"], ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const proc = new Proc(name, child);
  started.add(proc);
  void proc.exited.then(() => started.delete(proc));
  return proc;
}

/** Stops every binary this file started and has not stopped yet, then removes its temporary folders. */
export async function stopAll(): Promise<void> {
  await Promise.all([...started].map((proc) => proc.stop()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

function pidAlive(pid: number): boolean {
  try {
    const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return state !== undefined && state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

function rssOf(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim();
      if (text !== "") out.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    // the process is gone: no children to count
  }
  return out;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a value other than undefined, or `undefined` after `timeoutMs`. */
export async function poll<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number, intervalMs = 200): Promise<T | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() >= until) return undefined;
    await sleep(intervalMs);
  }
}
