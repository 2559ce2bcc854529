import type { HostPort } from "../address.js";
import { ProxyError } from "../errors.js";
import type { ProxyErrorCode } from "../errors.js";
import type { ServerPolicy } from "../policy.js";
import type { TlsState } from "../tls-state.js";

/**
 * What the inbound stack knows of one connection. Built at accept and
 * enriched by each layer (TLS state and peer identity, the transport
 * header's port and that port's policy), never shared between connections.
 */
export interface InboundTarget {
  /** The proxy's port the connection arrived on. */
  listenerPort: number;
  /** The connection's original destination, when the listener knows it (a redirecting firewall); absent today. */
  origDst?: HostPort;
  /** The client's address and port as the socket reports them. */
  client: { address: string; port: number };
  /** The workload port the connection is for: the workload's own, or the one a transport header names. */
  port: number;
  /** Where the connection is forwarded. */
  workload: HostPort;
  tls: TlsState;
  /** The client's verified mesh identity. */
  clientId?: string;
  /** The current policy of `port`, read when the port became known. */
  policy: ServerPolicy;
  /** The session protocol a transport header announced: the client speaks it, no detection is needed. */
  sessionProtocol?: "http1" | "http2";
}

/** A layer's coded refusal: the connection is closed, counted as `inbound_tcp_errors_total{error}` and logged. */
export interface Refusal {
  refused: ProxyError;
  /** The `error` metric label, snake_case. */
  errorLabel: string;
}

/** Builds a refusal. */
export function refuse(code: ProxyErrorCode, message: string, errorLabel: string, cause?: unknown): Refusal {
  return { refused: new ProxyError(code, message, cause === undefined ? undefined : { cause }), errorLabel };
}

/** Whether a layer's answer is a refusal. */
export function isRefusal(value: object): value is Refusal {
  return "refused" in value;
}
