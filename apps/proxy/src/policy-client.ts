import type { ChannelCredentials } from "@grpc/grpc-js";
import { InboundServerPoliciesClient, PortSpec } from "@meshtls/api";
import { createRedialingChannel } from "@meshtls/destination";
import { createPolicyWatcher } from "@meshtls/proxy-core";
import type { Logger, PolicyWatcher, ServerPolicy } from "@meshtls/proxy-core";

/** Options of {@link createPolicyClient}. */
export interface CreatePolicyClientOptions {
  /** The policy controller, `host:port`. */
  address: string;
  credentials: ChannelCredentials;
  /** The identity the controller presents (SNI and verified name); absent with plaintext. */
  serverName?: string;
  /** Linkerd's workload string. */
  workload: string;
  /** Watched from the start. */
  ports: number[];
  /** Each port's policy until the controller answers. */
  defaults: (port: number) => ServerPolicy;
  logger: Logger;
}

/**
 * The inbound policy source of the proxy: `WatchPort` streams over one gRPC channel to the policy controller; a
 * retry after the channel failed dials a new one instead of waiting out grpc-js's reconnect backoff (to 120 s).
 */
export function createPolicyClient(options: CreatePolicyClientOptions): PolicyWatcher {
  const channel = createRedialingChannel(
    () =>
      new InboundServerPoliciesClient(options.address, options.credentials, {
        ...(options.serverName === undefined ? {} : { "grpc.ssl_target_name_override": options.serverName, "grpc.default_authority": options.serverName }),
        // A watch outlives any idle timer: keep the connection's liveness checked instead.
        "grpc.keepalive_time_ms": 30_000,
        "grpc.use_local_subchannel_pool": 1,
      }),
  );
  const watcher = createPolicyWatcher({
    workload: options.workload,
    ports: options.ports,
    defaults: options.defaults,
    logger: options.logger,
    watchPort: (spec) => channel.open().watchPort(PortSpec.fromPartial(spec)),
  });
  return {
    ...watcher,
    close() {
      watcher.close();
      channel.close();
    },
  };
}
