import type { AddressInfo } from "node:net";
import type { AdminReadiness } from "@meshtls/runtime";
import { pemEncode } from "@meshtls/pki";
import type { HostPort } from "./address.js";
import { formatHostPort } from "./address.js";
import { createAdminServer } from "./admin.js";
import { createTlsCredentials } from "./credentials.js";
import type { TlsCredentials } from "./credentials.js";
import { ProxyError } from "./errors.js";
import { createInbound } from "./inbound.js";
import type { OriginalDestinationLookup } from "./inbound/accept.js";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import { createProxyMetrics } from "./metrics.js";
import type { ProxyMetrics } from "./metrics.js";
import type { Route } from "./outbound.js";
import { createOutbound } from "./outbound.js";
import type { TransparentIntercept } from "./outbound/transparent.js";
import { createOwnSockets } from "./own-sockets.js";
import type { CredentialSource, EndpointResolver, PolicySource, TrustBundleSource } from "./sources.js";
import { createStaticPolicySource } from "./static-policy.js";
import { createTapServer } from "./tap-server.js";

/** Options of {@link createProxy}. */
export interface CreateProxyOptions {
  /** The local identity name (DNS-like). */
  identity: string;
  /** The certifier's credential store. */
  credentials: CredentialSource;
  trustBundle: TrustBundleSource;
  /** The destination client. */
  resolver: EndpointResolver;
  /**
   * Each inbound port's current policy (the policy client, or
   * `createStaticPolicySource(flags)`). Default: `all-unauthenticated` on every port.
   */
  policy?: PolicySource;
  inbound: {
    /** Default 0.0.0.0:4143. */
    listen?: HostPort;
    /** The workload's own address for connections without a transport header. */
    workload: HostPort;
    /** Host a transport header's port is reached on. Default `workload.host`. */
    workloadHost?: string;
    /** Transparent mode: a redirected connection's original destination picks the workload port (`@meshtls/orig-dst`'s reader). */
    originalDestination?: OriginalDestinationLookup;
    /**
     * The workload's ports a transport header may name besides `workload.port`.
     * Default none: any port but the proxy's own listeners.
     */
    inboundPorts?: number[];
    /** Ports forwarded without detection or policy. Default none. */
    skipPorts?: number[];
    /** TLS detection bound when the port's policy names none. Default 10000. */
    detectTimeoutMs?: number;
    handshakeTimeoutMs?: number;
    /** Close open mesh connections when their identity ends (either leaf expires, or the client no longer chains to the bundle). Default false. */
    closeAtIdentityEnd?: boolean;
    /** Connections open at once; more are closed at once. Default 10000. */
    maxConnections?: number;
  };
  outbound?: {
    /** The HTTP proxy listener (the transparent one in transparent mode). Default 127.0.0.1:4140. */
    listen?: HostPort;
    routes?: Route[];
    localAddress?: string;
    discoveryTimeoutMs?: number;
    /** Connections open at once on the HTTP proxy and on each route; more are closed at once. Default 10000. */
    maxConnections?: number;
    /** Protocol detection on a route gives up (forwarding as bytes) after this long. Default 10000. */
    detectTimeoutMs?: number;
    /**
     * Transparent mode: `listen` serves the connections `meshtls init`
     * redirects there, each to its original destination, instead of the HTTP proxy.
     */
    transparent?: {
      originalDestination: OriginalDestinationLookup;
      /** Answers the connections the proxy handles itself (the redirect check's probe) before any is forwarded. */
      intercept?: TransparentIntercept;
    };
  };
  /** `listen` default 127.0.0.1:4191; `maxConnections` default 100. */
  admin?: { listen?: HostPort; maxConnections?: number };
  /**
   * The remote tap server (`createTapServer`: `GET /tap` over mutual TLS to
   * the `allow`ed identities). Default: none. Its port is one of the proxy's
   * own listeners, which a transport header may not name.
   */
  tap?: { listen: HostPort; allow?: readonly string[]; maxConnections?: number; handshakeTimeoutMs?: number };
  /** Per endpoint and to the workload. Default 3000. */
  connectTimeoutMs?: number;
  /** Default 3600000. */
  idleTimeoutMs?: number;
  /** Called on a local `POST /shutdown`. Default: `stop({ drainMs: 10000 })`. */
  onShutdown?: () => void;
  /**
   * Called on a local `POST /renew`: obtains a new certificate now (e.g. the
   * certifier's `renewNow()`). `/renew` answers once the proxy serves with it.
   * Without it `/renew` answers 404.
   */
  onRenew?: () => Promise<{ notAfter: Date }>;
  /** How long `/renew` waits for the renewed certificate to be in use, in ms. Default 5000. */
  renewInUseTimeoutMs?: number;
  metrics?: ProxyMetrics;
  /** Mesh TLS key exchange groups, most preferred first. Default `X25519MLKEM768`, `X25519`, `P-256` (`DEFAULT_TLS_GROUPS`). */
  tlsGroups?: readonly string[];
  logger?: Logger;
  /** The clock `/ready` compares the certificate's notAfter with. Default `() => new Date()`. */
  now?: () => Date;
  /** A further condition of `/ready` (e.g. the transparent redirect check), asked after the proxy's own. Default none. */
  ready?: () => AdminReadiness;
}

/** The addresses the proxy listens on. */
export interface ProxyAddresses {
  inbound: AddressInfo;
  outbound: AddressInfo;
  routes: AddressInfo[];
  admin: AddressInfo;
  /** With the `tap` option. */
  tap?: AddressInfo;
}

/** A running proxy. */
export interface Proxy {
  /**
   * Binds every listener. A workload address that is one of the proxy's own
   * listeners is refused (a loop) and the listeners are closed again.
   * @throws ProxyError `ERR_LISTEN_FAILED` (the cause carries node's code, e.g. `EADDRINUSE`), `ERR_CONFIG_INVALID`
   */
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
  const tls = createTlsCredentials({
    credentials: options.credentials,
    trustBundle: options.trustBundle,
    logger,
    ...(options.tlsGroups === undefined ? {} : { groups: options.tlsGroups }),
    onHandshake: (direction, group) => metrics.recordTlsHandshake(direction, group),
  });
  // Shared by the parts: every listener, and every connection the proxy opens.
  const own = createOwnSockets();
  const common = {
    own,
    metrics,
    logger,
    credentials: tls,
    ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
    ...(options.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: options.idleTimeoutMs }),
  };
  const inbound = createInbound({
    ...common,
    identity: options.identity,
    trustBundle: options.trustBundle,
    policy: options.policy ?? createStaticPolicySource(),
    workload: options.inbound.workload,
    ...(options.inbound.workloadHost === undefined ? {} : { workloadHost: options.inbound.workloadHost }),
    ...(options.inbound.originalDestination === undefined ? {} : { originalDestination: options.inbound.originalDestination }),
    ...(options.inbound.detectTimeoutMs === undefined ? {} : { detectTimeoutMs: options.inbound.detectTimeoutMs }),
    ...(options.inbound.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: options.inbound.handshakeTimeoutMs }),
    ...(options.inbound.closeAtIdentityEnd === undefined ? {} : { closeAtIdentityEnd: options.inbound.closeAtIdentityEnd }),
    ...(options.inbound.inboundPorts === undefined ? {} : { inboundPorts: options.inbound.inboundPorts }),
    ...(options.inbound.skipPorts === undefined ? {} : { skipPorts: options.inbound.skipPorts }),
    ...(options.inbound.maxConnections === undefined ? {} : { maxConnections: options.inbound.maxConnections }),
  });
  const outbound = createOutbound({
    ...common,
    resolver: options.resolver,
    ...(options.outbound?.localAddress === undefined ? {} : { localAddress: options.outbound.localAddress }),
    ...(options.outbound?.discoveryTimeoutMs === undefined ? {} : { discoveryTimeoutMs: options.outbound.discoveryTimeoutMs }),
    ...(options.outbound?.maxConnections === undefined ? {} : { maxConnections: options.outbound.maxConnections }),
    ...(options.outbound?.detectTimeoutMs === undefined ? {} : { detectTimeoutMs: options.outbound.detectTimeoutMs }),
  });

  /** `onRenew`, then until the TLS layers serve with the certificate it returned. */
  function renew(onRenew: () => Promise<{ notAfter: Date }>): () => Promise<{ notAfter: Date }> {
    const inUse = (notAfter: Date): boolean => tls.current()?.notAfter.getTime() === notAfter.getTime();
    return async () => {
      const renewed = await onRenew();
      if (inUse(renewed.notAfter)) return { notAfter: renewed.notAfter };
      const timeoutMs = options.renewInUseTimeoutMs ?? 5000;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          off();
          reject(new ProxyError("ERR_NO_CREDENTIALS", `a certificate valid until ${renewed.notAfter.toISOString()} was obtained but is not in use after ${timeoutMs} ms`));
        }, timeoutMs);
        const off = tls.subscribe(() => {
          if (!inUse(renewed.notAfter)) return;
          clearTimeout(timer);
          off();
          resolve();
        });
      });
      return { notAfter: renewed.notAfter };
    };
  }

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
      inbound.close();
      outbound.destroyAll();
      outbound.close();
      tls.close();
      await Promise.all([admin.close(), tap?.close()]);
    })();
    return stopping;
  };
  const admin = createAdminServer({
    registry: metrics.registry,
    tap: metrics.tap,
    // Ready only while a certificate is held and has not expired: an expired
    // one fails every peer's verification, so the workload must drop out of rotation.
    ready: () => {
      const held = tls.current();
      if (held === undefined) return { ok: false, reason: "no certificate yet" };
      const now = (options.now ?? (() => new Date()))();
      if (now.getTime() > held.notAfter.getTime()) return { ok: false, reason: `the certificate expired at ${held.notAfter.toISOString()}` };
      // As Linkerd: not ready before the policy controller's first answer for each declared port.
      const waiting = options.policy?.unanswered?.() ?? [];
      if (waiting.length > 0) return { ok: false, reason: `no policy from the controller yet for port ${waiting.join(", ")}` };
      return options.ready?.() ?? { ok: true };
    },
    onShutdown: options.onShutdown ?? (() => void stop()),
    ...(options.onRenew === undefined ? {} : { onRenew: renew(options.onRenew) }),
    identity: () => {
      const held = tls.current();
      return {
        identity: options.identity,
        notAfter: held?.notAfter ?? null,
        certificateChainPem: held?.certificateChainPem ?? null,
        trustAnchorsPem: options.trustBundle.current().map((der) => pemEncode("CERTIFICATE", der)).join(""),
      };
    },
    openedByProxy: (address, port) => own.openedByProxy(address, port),
    ...(options.admin?.maxConnections === undefined ? {} : { maxConnections: options.admin.maxConnections }),
    logger,
  });
  const tapOptions = options.tap;
  const tap =
    tapOptions === undefined
      ? undefined
      : createTapServer({
          tap: metrics.tap,
          credentials: tls,
          trustBundle: options.trustBundle,
          ...(tapOptions.allow === undefined ? {} : { allow: tapOptions.allow }),
          ...(tapOptions.maxConnections === undefined ? {} : { maxConnections: tapOptions.maxConnections }),
          ...(tapOptions.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: tapOptions.handshakeTimeoutMs }),
          onRefused: () => metrics.recordRefused("tap", "max_connections"),
          logger,
        });

  return {
    metrics,
    tls,
    connections: () => inbound.connections() + outbound.connections(),
    async start() {
      try {
        const adminAddress = await admin.listen(options.admin?.listen ?? { host: "127.0.0.1", port: 4191 });
        own.addListener(adminAddress, "admin");
        const inboundAddress = await inbound.listen(options.inbound.listen ?? { host: "0.0.0.0", port: 4143 });
        const outboundListen = options.outbound?.listen ?? { host: "127.0.0.1", port: 4140 };
        const transparent = options.outbound?.transparent;
        const outboundAddress =
          transparent === undefined ? await outbound.listenProxy(outboundListen) : await outbound.listenTransparent(outboundListen, transparent.originalDestination, transparent.intercept);
        const routes: AddressInfo[] = [];
        for (const route of options.outbound?.routes ?? []) routes.push(await outbound.listenRoute(route));
        const tapAddress = tap === undefined || tapOptions === undefined ? undefined : await tap.listen(tapOptions.listen);
        if (tapAddress !== undefined) own.addListener(tapAddress, "tap");
        // Checked on the bound addresses, so that a port 0 anywhere is covered too.
        const { workload } = options.inbound;
        const loop = own.listenerAt(workload);
        if (loop !== undefined) {
          throw new ProxyError("ERR_CONFIG_INVALID", `the workload address ${formatHostPort(workload.host, workload.port)} is the proxy's own ${loop} listener: every inbound connection would loop`);
        }
        return { inbound: inboundAddress, outbound: outboundAddress, routes, admin: adminAddress, ...(tapAddress === undefined ? {} : { tap: tapAddress }) };
      } catch (error) {
        // Nothing was served yet: close what is bound, without a drain to log.
        stopping ??= (async () => {
          await Promise.all([inbound.stopAccepting(), outbound.stopAccepting()]);
          inbound.close();
          outbound.close();
          tls.close();
          await Promise.all([admin.close(), tap?.close()]);
        })();
        await stopping;
        throw error;
      }
    },
    stop,
  };
}
