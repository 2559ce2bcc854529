/**
 * `ERR_TRANSPARENT_OPTIONS`: a port, range, CIDR or UID that iptables would
 * refuse or misread. `ERR_TRANSPARENT_NO_IPTABLES`: none of the binaries of the
 * chosen mode (or its fallbacks) is installed. `ERR_TRANSPARENT_IPTABLES`: an
 * iptables command failed; the message has its stderr.
 * `ERR_REDIRECT_MISSING`: the redirect check's probe did not reach the outbound
 * listener (a nat rule is missing).
 */
export type TransparentErrorCode =
  | "ERR_TRANSPARENT_OPTIONS"
  | "ERR_TRANSPARENT_NO_IPTABLES"
  | "ERR_TRANSPARENT_IPTABLES"
  | "ERR_REDIRECT_MISSING";

/** The one error class of `@meshtls/transparent`. */
export class TransparentError extends Error {
  override readonly name = "TransparentError";
  readonly code: TransparentErrorCode;

  constructor(code: TransparentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
