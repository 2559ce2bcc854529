/**
 * Every failure this package reports, as a stable string a caller can switch
 * on. gRPC status codes are derived from these only at the RPC boundary
 * (`statusForCode` in `grpc-status.ts`).
 */
export type IdentityErrorCode =
  // Certify request checks, in the order the server applies them.
  | "ERR_REQUEST_TOO_LARGE"
  | "ERR_IDENTITY_MISSING"
  | "ERR_TOKEN_MISSING"
  | "ERR_CSR_MISSING"
  | "ERR_IDENTITY_INVALID"
  | "ERR_ISSUER_UNAVAILABLE"
  | "ERR_TOKEN_MALFORMED"
  | "ERR_TOKEN_ALGORITHM"
  | "ERR_TOKEN_UNKNOWN_KEY"
  | "ERR_TOKEN_SIGNATURE"
  | "ERR_TOKEN_EXPIRED"
  | "ERR_TOKEN_NOT_YET_VALID"
  | "ERR_TOKEN_AUDIENCE"
  | "ERR_TOKEN_ISSUER"
  | "ERR_TOKEN_CLAIMS"
  | "ERR_TOKEN_REJECTED"
  | "ERR_TOKEN_UNAVAILABLE"
  | "ERR_IDENTITY_MISMATCH"
  | "ERR_CSR_INVALID"
  | "ERR_CSR_REJECTED"
  | "ERR_ISSUE_FAILED"
  // Issuer store.
  | "ERR_ISSUER_INVALID"
  // Configuration given to a constructor.
  | "ERR_CONFIG_INVALID"
  // Certifier (client side).
  | "ERR_TOKEN_FILE"
  | "ERR_CERTIFY_FAILED"
  | "ERR_RESPONSE_INVALID"
  | "ERR_ABORTED";

/** The one error class of `@meshtls/identity`. */
export class IdentityError extends Error {
  readonly code: IdentityErrorCode;

  constructor(code: IdentityErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "IdentityError";
    this.code = code;
  }

  /** Returns `error` if it is an IdentityError, else wraps it with `code`. */
  static from(error: unknown, code: IdentityErrorCode, message?: string): IdentityError {
    if (error instanceof IdentityError) return error;
    const text = message ?? (error instanceof Error ? error.message : String(error));
    return new IdentityError(code, text, { cause: error });
  }
}
