import type { AddressInfo } from "node:net";
import type { HostPort } from "./address.js";
import { createAdminServer } from "./admin.js";
import { createTlsCredentials } from "./credentials.js";
import type { TlsCredentials } from "./credentials.js";
import { createInbound } from "./inbound.js";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import { createProxyMetrics } from "./metrics.js";
import type { ProxyMetrics } from "./metrics.js";
import type { Route } from "./outbound.js";
import { createOutbound } from "./outbound.js";
import type { CreateInboundPolicyOptions } from "./policy.js";
import { createInboundPolicy } from "./policy.js";
import type { CredentialSource, EndpointResolver, TrustBundleSource } from "./sources.js";

/** Options of {@link createProxy}. */
export interface CreateProxyOptions {
  /** The local identity name (DNS-like). */
  identity: string;
  /** The certifier's credential store. */
  credentials: CredentialSource;
  trustBundle: TrustBundleSource;
  /** The destination client. */
  resolver: EndpointResolver;
  inbound: {
    /** Default 0.0.0.0:4143. */
    listen?: HostPort;
    /** The workload's own address for connections without a transport header. */
    workload: HostPort;
    /** Host a transport header's port is reached on. Default `workload.host`. */
    workloadHost?: string;
    policy?: CreateInboundPolicyOptions;
    detectTimeoutMs?: number;
    handshakeTimeoutMs?: number;
  };
  outbound?: {
    /** The HTTP proxy listener. Default 127.0.0.1:4140. */
    listen?: HostPort;
    routes?: Route[];
    localAddress?: string;
    discoveryTimeoutMs?: number;
  };
  /** Default 127.0.0.1:4191. */
  admin?: { listen?: HostPort };
  /** Per endpoint and to the workload. Default 3000. */
  connectTimeoutMs?: number;
  /** Default 3600000. */
  idleTimeoutMs?: number;
  /** Called on `POST /shutdown` from loopback. Default: `stop({ drainMs: 10000 })`. */
  onShutdown?: () => void;
  metrics?: ProxyMetrics;
  logger?: Logger;
  /** The clock `/ready` compares the certificate's notAfter with. Default `() => new Date()`. */
  now?: () => Date;
}

/** The addresses the proxy listens on. */
export interface ProxyAddresses {
  inbound: AddressInfo;
  outbound: AddressInfo;
  routes: AddressInfo[];
  admin: AddressInfo;
}

/** A running proxy. */
export interface Proxy {
  start(): Promise<ProxyAddresses>;
  /** Stops accepting, waits up to `drainMs` (default 10000) for open connections, then closes the rest. */
  stop(options?: { drainMs?: number }): Promise<void>;
  /** Open connections on both sides (accepted legs). */
  connections(): number;
  readonly metrics: ProxyMetrics;
  readonly tls: TlsCredentials;
}

/** Composes credentials, inbound, outbound, metrics and admin into one proxy. */
export function createProxy(options: CreateProxyOptions): Proxy {
  const logger = options.logger ?? noopLogger;
  const metrics = options.metrics ?? createProxyMetrics();
  const tls = createTlsCredentials({ credentials: options.credentials, trustBundle: options.trustBundle, logger });
  const common = {
    metrics,
    logger,
    credentials: tls,
    ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
    ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
  };
  const inbound = createInbound({
    ...common,
    identity: options.identity,
    policy: createInboundPolicy(options.inbound.policy),
    workload: options.inbound.workload,
    ...(options.inbound.workloadHost === undefined ? {} : { workloadHost: options.inbound.workloadHost }),
    ...(options.inbound.detectTimeoutMs === undefined ? {} : { detectTimeoutMs: options.inbound.detectTimeoutMs }),
    ...(options.inbound.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: options.inbound.handshakeTimeoutMs }),
  });
  const outbound = createOutbound({
    ...common,
    resolver: options.resolver,
    ...(options.outbound?.localAddress === undefined ? {} : { localAddress: options.outbound.localAddress }),
    ...(options.outbound?.discoveryTimeoutMs === undefined ? {} : { discoveryTimeoutMs: options.outbound.discoveryTimeoutMs }),
  });

  const current = options.credentials.current();
  if (current !== undefined) metrics.recordCertificate(current.notAfter);
  const offCredentials = options.credentials.subscribe((credentials) => {
    metrics.recordCertificate(credentials.notAfter);
    metrics.recordRefresh("ok");
  });

  let stopping: Promise<void> | undefined;
  const stop = (stopOptions: { drainMs?: number } = {}): Promise<void> => {
    stopping ??= (async () => {
      const drainMs = stopOptions.drainMs ?? 10_000;
      logger.info({ drainMs, open: inbound.connections() + outbound.connections() }, "draining");
      await Promise.all([inbound.stopAccepting(), outbound.stopAccepting()]);
      const deadline = Date.now() + drainMs;
      while (inbound.connections() + outbound.connections() > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const left = inbound.connections() + outbound.connections();
      if (left > 0) logger.warn({ open: left }, "drain time is up: closing the remaining connections");
      inbound.destroyAll();
      outbound.destroyAll();
      outbound.close();
      offCredentials();
      tls.close();
      await admin.close();
    })();
    return stopping;
  };
  const admin = createAdminServer({
    registry: metrics.registry,
    // Ready only while a certificate is held and has not expired: an expired
    // one fails every peer's verification, so the workload must drop out of rotation.
    ready: () => {
      const held = tls.current();
      if (held === undefined) return "no certificate yet";
      const now = (options.now ?? (() => new Date()))();
      if (now.getTime() > held.notAfter.getTime()) return `the certificate expired at ${held.notAfter.toISOString()}`;
      return true;
    },
    onShutdown: options.onShutdown ?? (() => void stop()),
    logger,
  });

  return {
    metrics,
    tls,
    connections: () => inbound.connections() + outbound.connections(),
    async start() {
      const adminAddress = await admin.listen(options.admin?.listen ?? { host: "127.0.0.1", port: 4191 });
      const inboundAddress = await inbound.listen(options.inbound.listen ?? { host: "0.0.0.0", port: 4143 });
      const outboundAddress = await outbound.listenProxy(options.outbound?.listen ?? { host: "127.0.0.1", port: 4140 });
      const routes: AddressInfo[] = [];
      for (const route of options.outbound?.routes ?? []) routes.push(await outbound.listenRoute(route));
      return { inbound: inboundAddress, outbound: outboundAddress, routes, admin: adminAddress };
    },
    stop,
  };
}
