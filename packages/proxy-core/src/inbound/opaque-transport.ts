import type tls from "node:tls";
import type { OwnSockets } from "../own-sockets.js";
import type { PolicySource } from "../sources.js";
import { readTransportHeader, TRANSPORT_ALPN } from "../transport-header.js";
import type { InboundTarget, Refusal } from "./target.js";
import { refuse } from "./target.js";

/** Options of {@link opaqueTransportLayer}. */
export interface OpaqueTransportOptions {
  /** The header must arrive within this. */
  timeoutMs: number;
  /** The host a header's port is reached on. */
  workloadHost: string;
  /** Ports a header may name besides the workload's own; empty: any but the proxy's listeners. */
  declaredPorts: ReadonlySet<number>;
  /** Ports forwarded without the mesh: a header naming one is refused. */
  skipPorts: ReadonlySet<number>;
  own: OwnSockets;
  policy: PolicySource;
}

/**
 * On a connection that negotiated the transport ALPN (a direct connection),
 * reads the header and retargets the connection to the port it names, with
 * that port's policy. Only a client with an identity may use it, and only
 * for the workload's own ports: never one of the proxy's listeners (a meshed
 * client would reach the admin server from a loopback address, or leave
 * through the outbound proxy under our identity), and, when ports are
 * declared, only those.
 *
 * A header that names a target (`name`) is meant for a multicluster gateway
 * (linkerd2-proxy `inbound/src/direct.rs`: a named header goes to the gateway
 * stack); this proxy is not one, so it refuses it rather than hand the
 * connection to its own workload. A header's session protocol is kept on the
 * target (`sessionProtocol`): the client said what it speaks.
 */
export async function opaqueTransportLayer(target: InboundTarget, secure: tls.TLSSocket, options: OpaqueTransportOptions): Promise<InboundTarget | Refusal> {
  if (secure.alpnProtocol !== TRANSPORT_ALPN) return target;
  if (target.clientId === undefined) return refuse("ERR_DIRECT_NOT_AUTHENTICATED", "opaque transport needs a client identity", "direct_unauthenticated");
  let header: Awaited<ReturnType<typeof readTransportHeader>>;
  try {
    header = await readTransportHeader({ stream: secure, timeoutMs: options.timeoutMs });
  } catch (error) {
    return { refused: error as Refusal["refused"], errorLabel: "transport_header" };
  }
  const { port, name, sessionProtocol } = header;
  const client = `(client ${target.clientId})`;
  if (name !== undefined && name !== "") {
    return refuse("ERR_TARGET_FORBIDDEN", `the transport header names ${JSON.stringify(name.slice(0, 300))}:${port}, a gateway's target; this proxy is not a gateway ${client}`, "transport_header_gateway");
  }
  if (options.own.isListenerPort(port)) {
    return refuse("ERR_TARGET_FORBIDDEN", `the transport header names port ${port}, one of the proxy's own listeners ${client}`, "transport_header_proxy_port");
  }
  if (options.declaredPorts.size > 0 && port !== target.port && !options.declaredPorts.has(port)) {
    return refuse("ERR_TARGET_FORBIDDEN", `the transport header names port ${port}, not one of the workload's inbound ports ${client}`, "transport_header_port_forbidden");
  }
  if (options.skipPorts.has(port)) {
    return refuse("ERR_POLICY_DENIED", `port ${port} is skipped: not reachable through the mesh`, "port_skipped");
  }
  return { ...target, port, workload: { host: options.workloadHost, port }, policy: options.policy.current(port), ...(sessionProtocol === undefined ? {} : { sessionProtocol }) };
}
