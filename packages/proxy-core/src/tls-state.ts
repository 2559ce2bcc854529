/** Why a connection is not mTLS'd; surfaced as the `no_tls_reason` metric label. */
export type NoTlsReason =
  /** The remote peer did not start TLS (inbound plaintext). */
  | "no_tls_from_remote"
  /** Service discovery gave no identity for the endpoint (outbound plaintext). */
  | "not_provided_by_service_discovery"
  /** The leg between the proxy and its own workload. */
  | "loopback"
  /** The port is configured to skip the proxy's TLS handling. */
  | "port_skipped";

/** The TLS state of one connection leg, never a bare boolean. */
export type TlsState =
  /** Mesh TLS; `peerId` is the client (inbound) or server (outbound) identity when known. */
  | { tls: "true"; peerId?: string }
  /** TLS that is not ours, forwarded untouched; `sni` as the client sent it. */
  | { tls: "opaque"; sni: string }
  | { tls: "no_identity"; reason: NoTlsReason }
  | { tls: "disabled" };
