/** Every code a {@link PkiError} can carry. Chain codes are also the `code` of a failed {@link ChainResult}. */
export type PkiErrorCode =
  | "ERR_PEM_INVALID"
  | "ERR_DER_INVALID"
  | "ERR_KEY_UNSUPPORTED"
  | "ERR_KEY_INVALID"
  | "ERR_KEY_MISMATCH"
  | "ERR_NAME_INVALID"
  | "ERR_SPIFFE_ID_INVALID"
  | "ERR_CSR_INVALID"
  | "ERR_CERT_INVALID"
  | "ERR_ISSUE_INVALID"
  | "ERR_CHAIN_EXPIRED"
  | "ERR_CHAIN_NOT_YET_VALID"
  | "ERR_CHAIN_UNKNOWN_ISSUER"
  | "ERR_CHAIN_BAD_SIGNATURE"
  | "ERR_CHAIN_PATH_LENGTH"
  | "ERR_CHAIN_NOT_CA"
  | "ERR_CHAIN_NAME_MISMATCH"
  | "ERR_CHAIN_EKU"
  | "ERR_CHAIN_KEY_USAGE"
  | "ERR_CHAIN_NAME_CONSTRAINTS"
  | "ERR_CHAIN_CRITICAL_EXTENSION"
  | "ERR_CHAIN_TOO_DEEP"
  | "ERR_CHAIN_INVALID";

/** The one error class of @meshtls/pki: switch on `code`, read `message` for the human reason. */
export class PkiError extends Error {
  readonly code: PkiErrorCode;

  constructor(code: PkiErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PkiError";
    this.code = code;
  }

  /** Returns `err` if it is already a PkiError, otherwise wraps it with `code` and `message`. */
  static from(err: unknown, code: PkiErrorCode, message: string): PkiError {
    if (err instanceof PkiError) return err;
    return new PkiError(code, message, { cause: err });
  }
}
