import { spawn, type ChildProcess } from "node:child_process";
import { CliError } from "../errors.ts";

/** One line a child wrote: its JSON log object, or `{ msg: text }` for other text. */
export type LogLine = Record<string, unknown> & { msg?: unknown };

/** How many of a child's last output lines are kept for error messages. Default 20. */
export const DEFAULT_KEPT_LINES = 20;
/** A child's output line longer than this (64 KiB) is cut: logs are not an unbounded buffer. */
const MAX_LINE_CHARS = 64 * 1024;

/** A child process in its own process group, with its recent output kept. */
export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  /** The last lines of stdout and stderr, oldest first. */
  lastLines(): string[];
  /** Resolves with the first line (already seen or future) that matches; rejects on timeout or exit. */
  waitFor(match: (line: LogLine) => boolean, options: { timeoutMs: number; what: string }): Promise<LogLine>;
  /** Every future line, until the returned function is called. */
  onLine(listener: (line: LogLine) => void): () => void;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  /** Whether stop() was asked for (an exit after it is expected). */
  readonly stopping: boolean;
  /** SIGTERM to the whole group, SIGKILL after `graceMs`; resolves once it has exited. */
  stop(options?: { graceMs?: number }): Promise<void>;
}

export interface StartProcessOptions {
  name: string;
  /** Program to run (for node scripts: `process.execPath`). */
  file: string;
  args: string[];
  /** The child's whole environment. Default: PATH only, so nothing leaks from the caller. */
  env?: NodeJS.ProcessEnv;
  keptLines?: number;
}

/**
 * Starts a child in its own process group (so that it and anything it starts
 * can be signalled together and a terminal's Ctrl-C reaches the caller alone,
 * which then stops it in order).
 */
export function startProcess(options: StartProcessOptions): ManagedProcess {
  let child: ChildProcess;
  try {
    child = spawn(options.file, options.args, {
      detached: true,
      env: options.env ?? { PATH: process.env.PATH ?? "/usr/bin:/bin" },
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (error) {
    throw new CliError("ERR_IO", `cannot start ${options.name}: ${(error as Error).message}`, { cause: error });
  }
  const kept = options.keptLines ?? DEFAULT_KEPT_LINES;
  const recent: string[] = [];
  const seen: LogLine[] = [];
  const listeners = new Set<(line: LogLine) => void>();
  let stopping = false;
  let exitedWith: number | string | undefined;

  const exited = new Promise<number | string>((resolve) => {
    child.once("error", (error) => {
      recent.push(`cannot run ${options.file}: ${error.message}`);
      exitedWith = "spawn-error";
      resolve("spawn-error");
    });
    child.once("exit", (code, signal) => {
      exitedWith = code ?? signal ?? "unknown";
      resolve(exitedWith);
    });
  });

  const feed = (stream: NodeJS.ReadableStream | null): void => {
    if (stream === null) return;
    let buffer = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0 || buffer.length > MAX_LINE_CHARS) {
        const end = nl >= 0 ? nl : MAX_LINE_CHARS;
        const text = buffer.slice(0, end);
        buffer = buffer.slice(nl >= 0 ? nl + 1 : end);
        handle(text);
      }
    });
  };
  const handle = (text: string): void => {
    if (text.trim() === "") return;
    recent.push(text);
    if (recent.length > kept) recent.shift();
    let line: LogLine;
    try {
      const parsed: unknown = JSON.parse(text);
      line = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as LogLine) : { msg: text };
    } catch {
      line = { msg: text };
    }
    // Only the few lines waited for at start matter later; keep a bounded history.
    seen.push(line);
    if (seen.length > 200) seen.shift();
    for (const listener of [...listeners]) listener(line);
  };
  feed(child.stdout);
  feed(child.stderr);

  const managed: ManagedProcess = {
    name: options.name,
    pid: child.pid ?? -1,
    lastLines: () => [...recent],
    exited,
    get stopping() {
      return stopping;
    },
    onLine(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    waitFor(match, { timeoutMs, what }) {
      const found = seen.find(match);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const finish = (error: Error | undefined, line?: LogLine): void => {
          clearTimeout(timer);
          listeners.delete(listener);
          if (error === undefined) resolve(line!);
          else reject(error);
        };
        const listener = (line: LogLine): void => {
          if (match(line)) finish(undefined, line);
        };
        const timer = setTimeout(
          () => finish(new CliError("ERR_MESH", `${options.name} did not report ${what} within ${Math.round(timeoutMs / 1000)} s${tail(recent)}`)),
          timeoutMs,
        );
        listeners.add(listener);
        void exited.then((code) => {
          finish(new CliError("ERR_MESH", stopping ? `${options.name} was stopped before reporting ${what}` : `${options.name} exited (${code}) before reporting ${what}${tail(recent)}`));
        });
      });
    },
    async stop({ graceMs = 3_000 } = {}) {
      stopping = true;
      if (exitedWith !== undefined || child.pid === undefined) return;
      signalGroup(child.pid, "SIGTERM");
      const timer = setTimeout(() => signalGroup(child.pid!, "SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
      // Anything the child started and left behind in its group goes too.
      signalGroup(child.pid, "SIGKILL");
    },
  };
  return managed;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone already.
  }
}

function tail(lines: string[]): string {
  if (lines.length === 0) return "; it wrote nothing";
  return `; its last output:\n${lines.slice(-8).map((l) => `    ${l.length > 400 ? `${l.slice(0, 400)}…` : l}`).join("\n")}`;
}
