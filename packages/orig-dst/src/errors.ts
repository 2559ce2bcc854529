/**
 * `ERR_ORIG_DST_UNAVAILABLE`: the addon was not built (not Linux, no compiler
 * or headers at install) or does not load; the message says why.
 * `ERR_ORIG_DST_SOCKET`: the socket has no file descriptor (closed, or not a
 * TCP socket) or the kernel refused the read for a reason other than "no
 * original destination".
 */
export type OrigDstErrorCode = "ERR_ORIG_DST_UNAVAILABLE" | "ERR_ORIG_DST_SOCKET";

/** The one error class of `@meshtls/orig-dst`. */
export class OrigDstError extends Error {
  override readonly name = "OrigDstError";
  readonly code: OrigDstErrorCode;

  constructor(code: OrigDstErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
