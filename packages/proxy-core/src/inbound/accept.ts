import net from "node:net";
import type { ProxyMetrics } from "../metrics.js";
import type { HostPort } from "../address.js";
import type { PolicySource } from "../sources.js";
import type { InboundTarget } from "./target.js";

/**
 * Where a connection was going before a firewall redirected it (SO_ORIGINAL_DST,
 * as `@meshtls/orig-dst` reads it): `undefined` or `redirected: false` when
 * nothing redirected it (a direct connection to the listener).
 */
export type OriginalDestinationLookup = (socket: net.Socket) => { address: string; port: number; redirected: boolean } | undefined;

/**
 * Builds the target of a connection the inbound listener accepted: for the
 * workload's own port until a transport header says otherwise, or, when the
 * connection was redirected to the listener (transparent mode), for the port
 * it was going to, on the workload's host.
 */
export function acceptTarget(raw: net.Socket, options: { listenerPort: number; workload: HostPort; workloadHost?: string; policy: PolicySource; originalDestination?: OriginalDestinationLookup }): InboundTarget {
  const dst = options.originalDestination?.(raw);
  const redirected = dst !== undefined && dst.redirected;
  const workload = redirected ? { host: options.workloadHost ?? options.workload.host, port: dst.port } : options.workload;
  return {
    // The listener's own port, known once: the socket's would be read back with a system call per connection.
    listenerPort: options.listenerPort,
    ...(redirected ? { origDst: { host: dst.address, port: dst.port } } : {}),
    client: { address: raw.remoteAddress ?? "", port: raw.remotePort ?? 0 },
    port: workload.port,
    workload,
    tls: { tls: "no_identity", reason: "no_tls_from_remote" },
    policy: options.policy.current(workload.port),
  };
}

/**
 * The inbound listener: paused connections (nothing is read before the
 * stack decides), at most `maxConnections` open, the rest closed by node
 * before any byte is read and counted.
 */
export function createInboundServer(options: { maxConnections: number; metrics: ProxyMetrics }, onConnection: (raw: net.Socket) => void): net.Server {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (raw) => {
    raw.on("error", () => undefined);
    onConnection(raw);
  });
  server.maxConnections = options.maxConnections;
  server.on("drop", () => options.metrics.recordRefused("inbound", "max_connections"));
  return server;
}
