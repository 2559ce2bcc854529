// Runs the shell blocks of a Markdown runbook in order, as a reader would type
// them into one terminal: each ```sh block is one bash script, with the
// working folder and exported variables carried from one block to the next,
// `set -eo pipefail` so that any failing command fails the block, and
// processes started in the background left running until the session ends.
//
// A block is annotated by an HTML comment on the line just before its fence:
//
//   <!-- doctest: skip: the reason -->      not run (the reason is required)
//   <!-- doctest: fails -->                  must exit non-zero
//   <!-- doctest: expect "text" -->          the block's output must contain text (repeatable; \" for a quote)
//   <!-- doctest: timeout 90s -->            bound of the block (default 60 s)
//   <!-- doctest: last -->                   run after every other document's blocks (a clean-up)
//
// and a document declares the values its reader chooses, replaced by fresh
// temporary folders in every block:
//
//   <!-- doctest: folders /tmp/mesh /tmp/meshtls-bin -->
//
// Directives may be combined in one comment, separated by ";" (a skip's reason
// runs to the end of the comment).
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

/** Bound of a block without a `timeout` directive. */
export const DEFAULT_BLOCK_TIMEOUT_MS = 60_000;

/** One ```sh block of a document, with its directives. */
export interface RunbookBlock {
  /** `docs/getting-started.md:73`: where its fence opens. */
  where: string;
  script: string;
  skip?: string;
  fails: boolean;
  expect: string[];
  timeoutMs: number;
  last: boolean;
}

export interface Runbook {
  file: string;
  /** Folders a reader chooses (`folders` directive). */
  folders: string[];
  blocks: RunbookBlock[];
}

/** Reads a document's ```sh blocks and directives; throws on a directive it does not know. */
export function parseRunbook(file: string, label = file): Runbook {
  const lines = readFileSync(file, "utf8").split("\n");
  const folders: string[] = [];
  const blocks: RunbookBlock[] = [];
  let pending: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const comment = /^<!--\s*doctest:\s*(.*?)\s*-->\s*$/.exec(line);
    if (comment !== null) {
      // "skip: reason" takes the rest of the comment, semicolons included.
      const body = comment[1]!;
      const skipAt = body.search(/(^|;)\s*skip:/);
      const head = skipAt < 0 ? body : body.slice(0, skipAt);
      const directives = head.split(";").map((d) => d.trim()).filter(Boolean);
      if (skipAt >= 0) directives.push(body.slice(skipAt).replace(/^;/, "").trim());
      for (const d of directives) {
        if (d.startsWith("folders ")) folders.push(...d.slice("folders ".length).trim().split(/\s+/));
        else pending.push(d);
      }
      continue;
    }
    const fence = /^(`{3,})(\S*)\s*$/.exec(line);
    if (fence === null) {
      if (line.trim() !== "") pending = [];
      continue;
    }
    const end = lines.findIndex((l, j) => j > i && l.startsWith(fence[1]!) && l.trim() === fence[1]);
    if (end < 0) throw new Error(`${label}:${i + 1}: unterminated code block`);
    if (fence[2] === "sh") {
      blocks.push(toBlock(`${label}:${i + 1}`, lines.slice(i + 1, end).join("\n"), pending));
    } else if (pending.length > 0) {
      throw new Error(`${label}:${i + 1}: doctest directives before a \`\`\`${fence[2]} block, which is not run`);
    }
    pending = [];
    i = end;
  }
  return { file, folders, blocks };
}

function toBlock(where: string, script: string, directives: string[]): RunbookBlock {
  const block: RunbookBlock = { where, script, fails: false, expect: [], timeoutMs: DEFAULT_BLOCK_TIMEOUT_MS, last: false };
  for (const d of directives) {
    let m: RegExpExecArray | null;
    if ((m = /^skip:\s*(\S.*)$/.exec(d)) !== null) block.skip = m[1]!;
    else if (d === "fails") block.fails = true;
    else if (d === "last") block.last = true;
    else if ((m = /^expect\s+"(.+)"$/.exec(d)) !== null) block.expect.push(m[1]!.replaceAll('\\"', '"'));
    else if ((m = /^timeout\s+(\d+)s$/.exec(d)) !== null) block.timeoutMs = Number(m[1]) * 1000;
    else throw new Error(`${where}: unknown doctest directive "${d}"`);
  }
  return block;
}

/** What one block did. */
export interface BlockOutcome {
  where: string;
  skipped?: string;
  exitCode?: number | string;
  elapsedMs: number;
  output: string;
}

/**
 * A terminal session: blocks run one after the other in `cwd` (first: the
 * repository root, as for a reader in their clone), each in its own process
 * group so that `close()` can stop whatever they left running.
 */
export class RunbookSession {
  readonly outcomes: BlockOutcome[] = [];
  private readonly groups: number[] = [];
  private readonly replacements: [string, string][] = [];
  private count = 0;

  private constructor(
    /** Scratch folder: block scripts, outputs, the carried state, and the readers' chosen folders. */
    readonly scratch: string,
  ) {}

  static async create(options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<RunbookSession> {
    const scratch = await mkdtemp(path.join(os.tmpdir(), "meshtls-doctest-"));
    const session = new RunbookSession(scratch);
    await writeFile(path.join(scratch, "cwd"), options.cwd);
    const exported = Object.entries(options.env)
      .filter(([name, value]) => value !== undefined && /^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
      .map(([name, value]) => `export ${name}=${shellQuote(value!)}`)
      .join("\n");
    await writeFile(path.join(scratch, "env"), `${exported}\n`);
    return session;
  }

  /** The temporary folder that stands for a reader's chosen `folder` (created on first use). */
  async folderFor(folder: string): Promise<string> {
    const known = this.replacements.find(([from]) => from === folder);
    if (known !== undefined) return known[1];
    const to = path.join(this.scratch, `folder-${this.replacements.length}-${path.basename(folder)}`);
    this.replacements.push([folder, to]);
    // Longest first, so that /tmp/mesh does not eat into /tmp/meshtls-bin.
    this.replacements.sort((a, b) => b[0].length - a[0].length);
    return to;
  }

  /** Runs the blocks in order; stops at the first that fails and throws an error naming it, with its output. */
  async run(runbook: Runbook, blocks: RunbookBlock[] = runbook.blocks.filter((b) => !b.last)): Promise<void> {
    for (const folder of runbook.folders) await this.folderFor(folder);
    for (const block of blocks) {
      if (block.skip !== undefined) {
        this.outcomes.push({ where: block.where, skipped: block.skip, elapsedMs: 0, output: "" });
        continue;
      }
      const outcome = await this.runBlock(block);
      this.outcomes.push(outcome);
      const failed = outcome.exitCode !== 0;
      const problems: string[] = [];
      if (failed !== block.fails) {
        problems.push(block.fails ? "exited 0 but the document says it fails" : `exited ${String(outcome.exitCode)}`);
      }
      for (const text of block.expect) {
        if (!outcome.output.includes(text)) problems.push(`its output lacks "${text}"`);
      }
      if (problems.length > 0) {
        throw new Error(`${block.where}: ${problems.join("; ")} (after ${Math.round(outcome.elapsedMs / 100) / 10} s)\n--- block ---\n${block.script}\n--- output (last 40 lines) ---\n${outcome.output.split("\n").slice(-40).join("\n")}`);
      }
    }
  }

  /** Replaces the readers' folders in one pass (a replacement is never replaced again), whole path names only. */
  private substitute(script: string): string {
    if (this.replacements.length === 0) return script;
    const pattern = new RegExp(`(${this.replacements.map(([from]) => from.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})(?![\\w.-])`, "g");
    return script.replace(pattern, (from) => this.replacements.find(([f]) => f === from)![1]);
  }

  private async runBlock(block: RunbookBlock): Promise<BlockOutcome> {
    const n = ++this.count;
    const script = this.substitute(block.script);
    const state = this.scratch;
    const file = path.join(state, `block-${n}.sh`);
    const outFile = path.join(state, `block-${n}.out`);
    await writeFile(
      file,
      [
        "set -eo pipefail",
        `source ${shellQuote(path.join(state, "env"))}`,
        `cd "$(cat ${shellQuote(path.join(state, "cwd"))})"`,
        `# ${block.where}`,
        script,
        "",
        `pwd > ${shellQuote(path.join(state, "cwd"))}`,
        `export -p > ${shellQuote(path.join(state, "env"))}`,
        "",
      ].join("\n"),
    );
    for (const [, to] of this.replacements) await mkdir(path.dirname(to), { recursive: true });
    // Output to a file, not a pipe: processes a block leaves in the background keep its descriptors open.
    const fd = openSync(outFile, "w");
    const started = Date.now();
    const child = spawn("bash", [file], { detached: true, stdio: ["ignore", fd, fd] });
    closeSync(fd);
    if (child.pid !== undefined) this.groups.push(child.pid);
    const exitCode = await new Promise<number | string>((resolve) => {
      const timer = setTimeout(() => {
        resolve(`timeout after ${block.timeoutMs / 1000} s`);
        signalGroup(child.pid, "SIGKILL");
      }, block.timeoutMs);
      child.once("error", (error) => {
        clearTimeout(timer);
        resolve(`spawn error: ${error.message}`);
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        resolve(code ?? signal ?? "unknown");
      });
    });
    const output = await readFile(outFile, "utf8");
    return { where: block.where, exitCode, elapsedMs: Date.now() - started, output };
  }

  /** Stops everything the blocks left running (SIGTERM, then SIGKILL after `graceMs`), and removes the scratch folder. */
  async close({ graceMs = 5_000, keep = false }: { graceMs?: number; keep?: boolean } = {}): Promise<void> {
    for (const group of this.groups) signalGroup(group, "SIGTERM");
    const until = Date.now() + graceMs;
    while (Date.now() < until && this.groups.some(groupAlive)) await new Promise((resolve) => setTimeout(resolve, 100));
    for (const group of this.groups) signalGroup(group, "SIGKILL");
    if (!keep) await rm(this.scratch, { recursive: true, force: true });
  }

  /** Whether any process started by a block is still running. */
  anyAlive(): boolean {
    return this.groups.some(groupAlive);
  }
}

/** PATH without `node_modules/.bin` folders, so that the document's own PATH setup is what finds the binaries. */
export function readerPath(pathValue: string | undefined): string {
  return (pathValue ?? "/usr/bin:/bin")
    .split(path.delimiter)
    .filter((dir) => dir !== "" && !dir.includes(`node_modules${path.sep}.bin`))
    .join(path.delimiter);
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group has gone.
  }
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}
