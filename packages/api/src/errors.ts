/** Every reason an @meshtls/api helper refuses its input. */
export type ApiErrorCode =
  | "ERR_INVALID_IP"
  | "ERR_INVALID_PORT"
  | "ERR_INVALID_TCP_ADDRESS"
  | "ERR_TRANSPORT_HEADER_PREFACE"
  | "ERR_TRANSPORT_HEADER_TOO_LARGE"
  | "ERR_TRANSPORT_HEADER_TRUNCATED"
  | "ERR_TRANSPORT_HEADER_MALFORMED";

/** The one error class of @meshtls/api: switch on `code`. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  readonly code: ApiErrorCode;

  constructor(code: ApiErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}
