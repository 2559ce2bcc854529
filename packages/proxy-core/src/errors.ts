/** Every reason a @meshtls/proxy-core operation refuses or fails. */
export type ProxyErrorCode =
  | "ERR_CONFIG_INVALID"
  | "ERR_ADDRESS_INVALID"
  | "ERR_DETECT_TIMEOUT"
  | "ERR_DETECT_TOO_LARGE"
  | "ERR_DETECT_CLOSED"
  | "ERR_NO_CREDENTIALS"
  | "ERR_TLS_HANDSHAKE"
  | "ERR_TLS_UNAUTHORIZED"
  | "ERR_TLS_IDENTITY_MISMATCH"
  | "ERR_TLS_PEER_CERT_EXPIRED"
  | "ERR_TLS_LOCAL_CERT_EXPIRED"
  | "ERR_TRANSPORT_HEADER_INVALID"
  | "ERR_TRANSPORT_HEADER_TIMEOUT"
  | "ERR_DIRECT_NOT_AUTHENTICATED"
  | "ERR_POLICY_DENIED"
  | "ERR_POLICY_INVALID"
  | "ERR_TARGET_FORBIDDEN"
  | "ERR_DISCOVERY_TIMEOUT"
  | "ERR_DISCOVERY_UNKNOWN"
  | "ERR_NO_ENDPOINTS"
  | "ERR_CONNECT_TIMEOUT"
  | "ERR_CONNECT_FAILED"
  | "ERR_UPSTREAM_FAILED"
  | "ERR_LISTEN_FAILED";

/** The one error class of @meshtls/proxy-core: switch on `code`. */
export class ProxyError extends Error {
  override readonly name = "ProxyError";
  readonly code: ProxyErrorCode;

  constructor(code: ProxyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}
