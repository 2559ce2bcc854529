import { ProxyError } from "../errors.js";

/**
 * Why an attempt on an endpoint failed in a way that sent nothing the
 * endpoint's application could act on, so another endpoint may be tried
 * (`outbound_connect_retries_total`, `outbound_endpoints_set_aside_total`):
 * - `connect_refused`, `connect_reset`, `connect_error`: the TCP connect
 *   failed (ECONNREFUSED; ECONNRESET before or during the TLS handshake;
 *   anything else, EHOSTUNREACH…);
 * - `connect_timeout`: no connection and handshake within the connect timeout;
 * - `tls_handshake`: the handshake failed for a reason that is not the peer's
 *   identity or chain (the transport ALPN or `h2` not negotiated…);
 * - `stale_connection` (HTTP/1): a kept-alive connection closed before any
 *   response to a request without a body and with an idempotent method;
 * - `stream_refused` (HTTP/2): the peer refused the stream unprocessed
 *   (REFUSED_STREAM, or beyond its GOAWAY) for a request without a body.
 */
export const RETRY_REASONS = ["connect_refused", "connect_reset", "connect_error", "connect_timeout", "tls_handshake", "stale_connection", "stream_refused"] as const;

/** One of {@link RETRY_REASONS}. */
export type RetryReason = (typeof RETRY_REASONS)[number];

/**
 * The reason to try another endpoint after `error` failed a connect (TCP and
 * TLS), or undefined when it must not be retried elsewhere: the security
 * failures (`ERR_TLS_IDENTITY_MISMATCH`, `ERR_TLS_UNAUTHORIZED`, expired
 * certificates) answer the application with their code, and
 * `ERR_NO_CREDENTIALS` fails every endpoint alike.
 */
export function connectRetryReason(error: unknown): RetryReason | undefined {
  if (!(error instanceof ProxyError)) return undefined;
  switch (error.code) {
    case "ERR_CONNECT_TIMEOUT":
      return "connect_timeout";
    case "ERR_TLS_HANDSHAKE":
      return "tls_handshake";
    case "ERR_CONNECT_FAILED": {
      const code = (error.cause as { code?: unknown } | undefined)?.code;
      if (code === "ECONNREFUSED") return "connect_refused";
      if (code === "ECONNRESET") return "connect_reset";
      return "connect_error";
    }
    default:
      return undefined;
  }
}
