/** Every reason @meshtls/destination refuses or fails. */
export type DestinationErrorCode =
  /** The registry file is not valid YAML/JSON or does not describe services; see `file`, `line`, `reason`. */
  | "ERR_REGISTRY_INVALID"
  /** The registry file could not be read. */
  | "ERR_REGISTRY_READ"
  /** The authority is not `<host>:<port>` or not a name or IP the service understands. */
  | "ERR_AUTHORITY_INVALID"
  /** The server refused the lookup for good (INVALID_ARGUMENT and the like); retrying will not help. */
  | "ERR_RESOLUTION_REJECTED"
  /** No endpoint set arrived within `timeoutMs`. */
  | "ERR_RESOLUTION_TIMEOUT"
  /** The resolution was closed or its signal aborted. */
  | "ERR_RESOLUTION_CLOSED"
  /** An option given to `createDestinationServer` is out of range (a stream cap below 1). */
  | "ERR_CONFIG_INVALID"
  /** A policy value is malformed (a CIDR, a default policy name); in a registry file this is `ERR_REGISTRY_INVALID`. */
  | "ERR_POLICY_INVALID"
  /** A `PortSpec.workload` is not `{"ns":"<namespace>","pod":"<name>"}` (or `<namespace>:<name>`); gRPC INVALID_ARGUMENT. */
  | "ERR_POLICY_WORKLOAD_INVALID"
  /** A `PortSpec.port` is not in 1..65535; gRPC INVALID_ARGUMENT. */
  | "ERR_POLICY_PORT_INVALID"
  /** The workload is not in the policy model; gRPC NOT_FOUND "unknown server". */
  | "ERR_POLICY_UNKNOWN_SERVER";

/** The one error class of @meshtls/destination: switch on `code`. */
export class DestinationError extends Error {
  override readonly name = "DestinationError";
  readonly code: DestinationErrorCode;
  /** For `ERR_REGISTRY_INVALID`/`ERR_REGISTRY_READ`: where the problem is. */
  readonly file: string | undefined;
  /** 1-based line of the problem, when known. */
  readonly line: number | undefined;
  /** 1-based column of the problem, when known. */
  readonly column: number | undefined;
  /** The reason alone, without the location. */
  readonly reason: string;

  constructor(
    code: DestinationErrorCode,
    reason: string,
    options: { cause?: unknown; file?: string; line?: number; column?: number } = {},
  ) {
    const where =
      options.file === undefined
        ? ""
        : `${options.file}${options.line === undefined ? "" : `:${options.line}${options.column === undefined ? "" : `:${options.column}`}`}: `;
    super(`${where}${reason}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.reason = reason;
    this.file = options.file;
    this.line = options.line;
    this.column = options.column;
  }
}
