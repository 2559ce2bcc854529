import { credentials as grpcCredentials } from "@grpc/grpc-js";
import { createDestinationClient } from "@meshtls/destination";
import { createCertifier, createControlPlaneCredentials, createCredentialStore, createTrustAnchorsStore } from "@meshtls/identity";
import { createProxy, createProxyMetrics, createStaticPolicySource, flagPolicies, formatHostPort, ProxyError } from "@meshtls/proxy-core";
import type { OriginalDestinationLookup } from "@meshtls/proxy-core";
import { parseConfigOrExit } from "@meshtls/runtime";
import { pino } from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import v8 from "node:v8";
import vm from "node:vm";
import { parseConfig } from "./config.js";
import { createPolicyClient } from "./policy-client.js";
import { setDataPathHeapGrowth } from "./heap-growth.js";
import { resumeOptimizingTiers } from "./startup-tiers.js";
import type { ProxyRedirectCheck } from "./redirect-check.js";

async function main(): Promise<void> {
  const config = parseConfigOrExit("meshtls-proxy", () => parseConfig(process.argv, process.env));

  // The identity comes from mixin, not base: pino merges a line's own `identity`
  // (the certifier's, the TLS layer's) into it, so the key appears once.
  const logger = pino({ level: config.logLevel, base: { service: "meshtls-proxy" }, mixin: () => ({ identity: config.identity }) });
  for (const message of config.deprecations) logger.warn(message);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  // Identity's trust-anchors store: size bound, expiry check, identity_trust_anchors* metrics; a bad edit keeps the bundle in use.
  const trustBundle = createTrustAnchorsStore({ file: config.trustAnchorsFile, pollIntervalMs: config.trustAnchorsPollIntervalMs, logger, metricsRegistry: registry });
  const firstBundle = await trustBundle.start();
  if (firstBundle.result !== "loaded") {
    logger.error({ file: config.trustAnchorsFile, ...firstBundle }, "cannot load the trust anchors");
    process.exit(1);
  }

  // The key is generated and kept in memory by the certifier; nothing is written.
  const store = createCredentialStore();
  const certifier = createCertifier({
    identity: config.identity,
    tokenFile: config.tokenFile,
    trustAnchors: () => trustBundle.current(),
    address: config.identityAddress,
    ...(config.identityServerName === undefined ? {} : { serverName: config.identityServerName }),
    insecurePlaintext: config.identityInsecurePlaintext,
    store,
    logger,
    metricsRegistry: registry,
  });
  // TLS to the destination service follows the anchors file and presents our mesh certificate.
  const destinationTls = config.destinationInsecurePlaintext
    ? undefined
    : createControlPlaneCredentials({ serverName: config.destinationServerName ?? "", trustBundle, credentials: store });
  const destination = createDestinationClient({
    address: config.destinationAddress,
    credentials: destinationTls?.credentials ?? grpcCredentials.createInsecure(),
    // SNI is the identity we expect, as on every mesh TLS connection.
    ...(config.destinationServerName === undefined ? {} : { serverName: config.destinationServerName }),
    contextToken: config.contextToken,
    logger,
  });

  // Inbound policy: the controller's, each port starting from the flags' policy; or the flags' alone.
  const policyTls =
    config.policyAddress === undefined || config.destinationInsecurePlaintext
      ? undefined
      : createControlPlaneCredentials({ serverName: config.policyServerName ?? "", trustBundle, credentials: store });
  const policy =
    config.policyAddress === undefined || config.workloadName === undefined
      ? createStaticPolicySource(config.policy)
      : createPolicyClient({
          address: config.policyAddress,
          credentials: policyTls?.credentials ?? grpcCredentials.createInsecure(),
          ...(config.policyServerName === undefined ? {} : { serverName: config.policyServerName }),
          workload: config.workloadName,
          ports: [...new Set([config.workload.port, ...config.inboundPorts])],
          defaults: flagPolicies(config.policy),
          logger,
        });

  let shuttingDown = false;
  const shutdown = (signal: string): void => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal, drainMs: config.drainTimeoutMs }, "shutting down");
    void (async () => {
      redirectCheck?.stop();
      await proxy.stop({ drainMs: config.drainTimeoutMs });
      await certifier.stop();
      destination.close();
      destinationTls?.close();
      policy.close?.();
      policyTls?.close();
      trustBundle.close();
      logger.info({}, "stopped");
      process.exit(0);
    })();
  };

  // Transparent mode needs the SO_ORIGINAL_DST addon: say so at start, before listening, when it is missing.
  let originalDestination: OriginalDestinationLookup | undefined;
  let redirectCheck: ProxyRedirectCheck | undefined;
  if (config.transparent) {
    try {
      // Loaded only here: every other mode would carry the addon's loader for nothing.
      const { createOriginalDestinationReader } = await import("@meshtls/orig-dst");
      const reader = createOriginalDestinationReader();
      originalDestination = (socket) => {
        try {
          return reader.read(socket);
        } catch {
          // ERR_ORIG_DST_SOCKET: the connection is already gone.
          return undefined;
        }
      };
    } catch (error) {
      logger.error({ code: (error as { code?: string }).code, err: (error as Error).message }, "--transparent: cannot read original destinations");
      process.exit(2);
    }
    // Even with the check off: connections to the probe address are answered, never forwarded (a loop behind meshtls init's probe rule).
    redirectCheck = (await import("./redirect-check.js")).createProxyRedirectCheck({ config, registry, logger });
  }

  const proxy = createProxy({
    identity: config.identity,
    credentials: store,
    trustBundle,
    tlsGroups: config.tlsGroups,
    resolver: destination,
    policy,
    inbound: {
      listen: config.inbound,
      workload: config.workload,
      workloadHost: config.workloadHost,
      inboundPorts: config.inboundPorts,
      skipPorts: config.skipPorts,
      detectTimeoutMs: config.detectTimeoutMs,
      handshakeTimeoutMs: config.detectTimeoutMs,
      closeAtIdentityEnd: config.inboundCloseAtIdentityEnd,
      maxConnections: config.maxInboundConnections,
      ...(originalDestination === undefined ? {} : { originalDestination }),
    },
    outbound: {
      listen: config.outbound,
      routes: config.routes,
      maxConnections: config.maxOutboundConnections,
      // Protocol detection on routes: Linkerd's one detect timeout.
      detectTimeoutMs: config.detectTimeoutMs,
      ...(originalDestination === undefined ? {} : { transparent: { originalDestination, ...(redirectCheck === undefined ? {} : { intercept: redirectCheck.intercept }) } }),
      ...(config.outboundBind === undefined ? {} : { localAddress: config.outboundBind }),
    },
    admin: { listen: config.admin, maxConnections: config.maxAdminConnections },
    // Remote tap: off unless --tap-addr; mutual TLS with this proxy's credentials, --tap-allow's identities only.
    ...(config.tapAddress === undefined ? {} : { tap: { listen: config.tapAddress, allow: config.tapAllow } }),
    connectTimeoutMs: config.connectTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    metrics: createProxyMetrics({ registry }),
    ...(redirectCheck === undefined ? {} : { ready: redirectCheck.ready }),
    onShutdown: () => shutdown("admin /shutdown"),
    // POST /renew: a new key and certificate now, published like a scheduled refresh.
    onRenew: () => certifier.renewNow(),
    logger,
  });

  let addresses;
  try {
    addresses = await proxy.start();
  } catch (error) {
    const code = error instanceof ProxyError ? error.code : "ERR_LISTEN_FAILED";
    const cause = (error as { cause?: NodeJS.ErrnoException & { address?: string; port?: number } }).cause;
    if (cause?.code === "EADDRINUSE") {
      // Typically the previous proxy of this workload, still draining its connections: exiting lets the supervisor retry.
      const address = cause.port === undefined ? undefined : formatHostPort(cause.address ?? "0.0.0.0", cause.port);
      logger.error({ code, address, port: cause.port, err: (error as Error).message }, `port ${cause.port ?? "?"} is held by another process (perhaps a proxy still draining): exiting`);
    } else {
      logger.error({ code, err: (error as Error).message }, code === "ERR_CONFIG_INVALID" ? "invalid configuration" : "cannot listen");
    }
    process.exit(code === "ERR_CONFIG_INVALID" ? 2 : 1);
  }
  const fmt = (a: { address: string; port: number }): string => formatHostPort(a.address, a.port);
  const tapAddress = addresses.tap === undefined ? undefined : fmt(addresses.tap);
  logger.info(
    { inbound: fmt(addresses.inbound), outbound: fmt(addresses.outbound), admin: fmt(addresses.admin), routes: addresses.routes.map(fmt), ...(tapAddress === undefined ? {} : { tap: tapAddress, tapAllow: config.tapAllow }) },
    "listening",
  );
  certifier.start();
  redirectCheck?.start();
  certifier.ready().then(
    (credentials) => {
      logger.info({ notAfter: credentials.notAfter.toISOString() }, "first certificate obtained: ready");
      releaseStartupMemory();
      resumeOptimizingTiers();
      setDataPathHeapGrowth();
    },
    (error: unknown) => logger.error({ err: (error as Error).message }, "no certificate"),
  );

  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

/**
 * One memory-reducing collection once the proxy is ready. Starting (loading
 * modules, the first certificate and discovery) grows V8's young generation to
 * ~10 MiB of resident pages that an idle sidecar would keep; V8 shrinks it
 * (and compacts the old generation) only in a "last resort" collection, about
 * 12 MiB less RSS per pod (apps/proxy/bench: idle RSS beside bare node). V8
 * offers that collection only through `gc`, taken from a fresh context while
 * --expose-gc is set; the flag is cleared at once.
 */
function releaseStartupMemory(): void {
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;
  v8.setFlagsFromString("--no-expose-gc");
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
}

void main();
