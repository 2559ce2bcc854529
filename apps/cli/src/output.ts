/** Where a command writes: stdout for results, stderr for notes. Tests pass their own. */
export interface Output {
  /** One line (or block) of result text; a newline is appended. */
  out(text: string): void;
  /** One line of diagnostic text; a newline is appended. */
  err(text: string): void;
}

/** An Output that writes to this process's stdout and stderr. */
export function createProcessOutput(): Output {
  return {
    out: (text) => process.stdout.write(`${text}\n`),
    err: (text) => process.stderr.write(`${text}\n`),
  };
}

/** An Output that collects lines in memory, for tests and in-process callers. */
export function createMemoryOutput(): Output & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (text) => stdout.push(text), err: (text) => stderr.push(text) };
}
