/** Stable codes for every way a `meshtls` command can fail. */
export type CliErrorCode =
  /** A flag or argument is missing or malformed (exit 2). */
  | "ERR_USAGE"
  /** A file to write exists and `--force` was not given. */
  | "ERR_EXISTS"
  /** A file could not be read or written. */
  | "ERR_IO"
  /** An input file is not what the command needs (bad PEM, not a CA, key mismatch …). */
  | "ERR_INPUT"
  /** `meshtls check` found problems. */
  | "ERR_CHECK"
  /** A running service or proxy could not be reached, or answered with something unusable. */
  | "ERR_CONNECT"
  /** `meshtls demo`: a component of the mesh failed to start or stopped working. */
  | "ERR_MESH"
  /** `meshtls init`: iptables is missing or one of its commands failed. */
  | "ERR_IPTABLES";

/** The one error class of the CLI. `exitCode` is 2 for usage errors, 1 otherwise. */
export class CliError extends Error {
  readonly code: CliErrorCode;

  constructor(code: CliErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CliError";
    this.code = code;
  }

  get exitCode(): number {
    return this.code === "ERR_USAGE" ? 2 : 1;
  }
}

/** The message of any thrown value, without a stack trace, for one line on stderr. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" && !(error instanceof CliError) ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}
