import { formatHostPort } from "../address.js";
import type { Balancer } from "../balancer.js";
import { endpointKey } from "../balancer.js";
import { connectEndpoint } from "../connect-endpoint.js";
import type { EndpointConnection } from "../connect-endpoint.js";
import type { TlsCredentials } from "../credentials.js";
import { ProxyError } from "../errors.js";
import type { DirectRead } from "../forward.js";
import type { Logger } from "../logger.js";
import type { ProxyMetrics } from "../metrics.js";
import type { OwnSockets } from "../own-sockets.js";
import type { Endpoint } from "../sources.js";
import type { Discover } from "./discover.js";
import type { RetryReason } from "./retry-reason.js";
import { connectRetryReason } from "./retry-reason.js";
import type { OutboundTarget } from "./target.js";

/** A connection to one endpoint of the target's authority. */
export type OutboundConnection = EndpointConnection & { endpoint: Endpoint };

/**
 * The outbound stack's one connect seam: discover → balance → mesh connect. `firstBytes`: the application's first
 * bytes, asked for once connected, sent first (with the transport header when there is one).
 */
export type ConnectOutbound = (target: OutboundTarget, options?: { firstBytes?: () => Buffer | undefined; onread?: DirectRead["onread"] }) => Promise<OutboundConnection>;

/** Options of {@link createConnectOutbound}. */
export interface CreateConnectOutboundOptions {
  discover: Discover;
  balancer: Balancer;
  credentials: TlsCredentials;
  metrics: ProxyMetrics;
  logger: Logger;
  own: OwnSockets;
  /** Endpoints tried per connection when connects fail. */
  maxAttempts: number;
  /** TCP connect + TLS handshake per endpoint. */
  connectTimeoutMs: number;
  localAddress?: string;
}

/**
 * Creates the connect layer: the authority's endpoints, balanced. A connect
 * that failed before anything was sent (refused, reset, timed out, a
 * handshake failure other than the peer's identity or chain) tries another
 * endpoint, up to `maxAttempts`, none started once `connectTimeoutMs` has
 * passed since the first; the failed endpoint is set aside
 * (`Balancer.setAside`). A security failure (`ERR_TLS_IDENTITY_MISMATCH`,
 * `ERR_TLS_UNAUTHORIZED`, an expired certificate) is never retried elsewhere.
 * The proxy's own outbound, route and admin listeners are never a
 * destination (a loop, or a local-only admin request made on someone else's
 * behalf).
 * The returned function throws ProxyError (the last endpoint's failure, or discovery's).
 */
export function createConnectOutbound(options: CreateConnectOutboundOptions): ConnectOutbound {
  const { metrics, logger, own, balancer } = options;
  return async ({ authority }, connectOptions) => {
    const endpoints = await options.discover.endpoints(authority);
    const tried = new Set<string>();
    const deadline = performance.now() + options.connectTimeoutMs;
    let retrying: RetryReason | undefined;
    let lastError: unknown;
    for (let attempt = 0; attempt < options.maxAttempts; attempt++) {
      if (retrying !== undefined && performance.now() >= deadline) break;
      const endpoint = balancer.pick(endpoints, tried);
      if (endpoint === undefined) break;
      tried.add(endpointKey(endpoint));
      const port = endpoint.identity === undefined ? endpoint.port : (endpoint.opaqueTransportPort ?? endpoint.port);
      // Formatted only when a failure names it.
      const dialled = (): string => formatHostPort(endpoint.address, port);
      const loop = own.listenerAt({ host: endpoint.address, port });
      if (loop !== undefined && loop !== "inbound") {
        lastError = new ProxyError("ERR_TARGET_FORBIDDEN", `${dialled()} is the proxy's own ${loop} listener: refusing a loop`);
        metrics.recordError("outbound", "target_forbidden", dialled());
        logger.warn({ authority, endpoint: dialled(), code: "ERR_TARGET_FORBIDDEN" }, "outbound connection refused: it would reach the proxy itself");
        continue;
      }
      if (retrying !== undefined) metrics.recordConnectRetry(retrying);
      const release = balancer.acquire(endpoint);
      try {
        const connection = await connectEndpoint({
          endpoint,
          credentials: options.credentials,
          authority,
          connectTimeoutMs: options.connectTimeoutMs,
          ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
          ...(connectOptions?.firstBytes === undefined ? {} : { firstBytes: connectOptions.firstBytes }),
          ...(connectOptions?.onread === undefined ? {} : { onread: connectOptions.onread }),
        });
        balancer.connected(endpoint);
        own.trackOpened(connection.socket, connection.dialled, options.localAddress);
        const closeLeg = metrics.openConnection(connection.socket, { direction: "outbound", peer: "dst", targetAddr: connection.remote, tls: connection.tls });
        connection.socket.on("close", () => {
          release();
          closeLeg();
        });
        return { ...connection, endpoint };
      } catch (error) {
        release();
        balancer.fail(endpoint);
        lastError = error;
        const code = error instanceof ProxyError ? error.code : "ERR_CONNECT_FAILED";
        metrics.recordError("outbound", code.replace(/^ERR_/, "").toLowerCase(), dialled());
        logger.warn({ authority, endpoint: endpointKey(endpoint), serverId: endpoint.identity, code, err: (error as Error).message }, "outbound connect failed");
        retrying = connectRetryReason(error);
        // A security failure answers with its code; no certificate yet fails every endpoint alike.
        if (retrying === undefined) break;
        balancer.setAside(endpoint);
        metrics.recordEndpointSetAside(retrying);
      }
    }
    throw lastError instanceof ProxyError ? lastError : new ProxyError("ERR_CONNECT_FAILED", `no endpoint of ${authority} accepted`, { cause: lastError });
  };
}
