import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import {
  createDestinationServer,
  createFileRegistry,
  createInboundPolicyController,
  createInboundPolicyServer,
  DestinationError,
  policySourceOf,
  type EndpointRegistry,
  type PolicySource,
} from "@meshtls/destination";
import { createKubeApiFromConfig, createKubernetesSource, KubernetesError } from "@meshtls/kubernetes";
import { createAdminServer, limitGrpcConnections, parseConfigOrExit } from "@meshtls/runtime";
import { pino } from "pino";
import { collectDefaultMetrics, Counter, Gauge, Registry } from "prom-client";
import { parseConfig, type Config } from "./config.js";

const SHUTDOWN_GRACE_MS = 5_000;

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function serverCredentials(config: Config): ServerCredentials {
  if (!config.tls) return ServerCredentials.createInsecure();
  const { certFile, keyFile, clientCaFile } = config.tls;
  return ServerCredentials.createSsl(
    clientCaFile === undefined ? null : readFileSync(clientCaFile),
    [{ cert_chain: readFileSync(certFile), private_key: readFileSync(keyFile) }],
    clientCaFile !== undefined,
  );
}

async function main(): Promise<void> {
  const config = parseConfigOrExit("meshtls-destination", () => parseConfig(process.argv, process.env));

  const logger = pino({ level: config.logLevel, base: { service: "meshtls-destination" } }, pino.destination({ dest: 1, sync: true }));
  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics });
  const reloads = new Counter({ name: "destination_registry_reloads_total", help: "Registry file reloads by result.", labelNames: ["result"], registers: [metrics] });
  const registryValid = new Gauge({ name: "destination_registry_file_valid", help: "1 when the registry file on disk is the one being served, 0 when an edit was refused.", registers: [metrics] });

  let registry: { list: EndpointRegistry["list"]; watch: EndpointRegistry["watch"]; close(): void };
  let policySource: PolicySource;
  if (config.source === "kubernetes") {
    let api;
    try {
      api = createKubeApiFromConfig(config.kubeconfig === undefined ? {} : { kubeconfig: config.kubeconfig });
    } catch (error) {
      if (!(error instanceof KubernetesError)) throw error;
      logger.error({ code: error.code }, `cannot use the Kubernetes API: ${error.message}`);
      process.exit(1);
    }
    // Failed lists are retried with backoff (logged, kubernetes_lists_total{result="error"}): nothing listens until every resource is listed.
    const kubernetes = createKubernetesSource({ api, controlNamespace: config.controlNamespace, metrics, logger });
    logger.info({ apiServer: api.server }, "listing Kubernetes resources");
    await kubernetes.synced();
    registry = { ...kubernetes.registry, close: () => kubernetes.close() };
    policySource = kubernetes.policy;
  } else {
    try {
      registry = await createFileRegistry({
        file: config.registryFile,
        logger,
        onReload: (result) => {
          reloads.inc({ result: result.ok ? "ok" : "error" });
          registryValid.set(result.ok ? 1 : 0);
        },
      });
    } catch (error) {
      if (!(error instanceof DestinationError)) throw error;
      logger.error({ code: error.code, file: error.file, line: error.line, column: error.column, reason: error.reason }, `cannot load the registry: ${error.message}`);
      process.exit(1);
    }
    registryValid.set(1);
    policySource = policySourceOf(registry);
  }

  const destination = createDestinationServer({
    registry,
    trustDomain: config.trustDomain,
    controlNamespace: config.controlNamespace,
    clusterDomain: config.clusterDomain,
    metrics,
    logger,
    maxStreams: config.limits.maxStreams,
    maxStreamsPerPeer: config.limits.maxStreamsPerPeer,
  });
  const policyController = createInboundPolicyController({
    source: policySource,
    trustDomain: config.trustDomain,
    controlNamespace: config.controlNamespace,
    clusterNetworks: config.clusterNetworks,
    defaultPolicy: config.defaultInboundPolicy,
    logger,
  });
  const policy = createInboundPolicyServer({
    controller: policyController,
    metrics,
    logger,
    maxStreams: config.limits.maxStreams,
    maxStreamsPerPeer: config.limits.maxStreamsPerPeer,
  });
  // Both APIs get the same connection limits: each is its own grpc-js server (own port, as Linkerd's 8086 and 8090).
  // Keepalive PINGs (30 s, answered within 10 s) come from limitGrpcConnections below, which counts what they close.
  const grpcOptions = {
    // Get requests are a few hundred bytes: refuse anything much larger before decoding it.
    "grpc.max_receive_message_length": 64 * 1024,
    "grpc.max_concurrent_streams": config.limits.maxConcurrentStreams,
    // Idle means no open stream: a proxy watching anything is never idle.
    "grpc.max_connection_idle_ms": config.limits.maxConnectionIdleMs,
    // At its age a connection is sent GOAWAY: new Gets go to a new connection (perhaps another replica) at
    // once, open streams keep the grace period, then end and the destination client resumes them.
    "grpc.max_connection_age_ms": config.limits.maxConnectionAgeMs,
    "grpc.max_connection_age_grace_ms": config.limits.maxConnectionAgeGraceMs,
  };
  const grpcServer = new Server(grpcOptions);
  grpcServer.addService(destination.definition, destination.implementation);
  const policyServer = new Server(grpcOptions);
  policyServer.addService(policy.definition, policy.implementation);
  limitGrpcConnections(grpcServer, { handshakeTimeoutMs: config.limits.handshakeTimeoutMs, metricsRegistry: metrics, listener: "destination" });
  limitGrpcConnections(policyServer, { handshakeTimeoutMs: config.limits.handshakeTimeoutMs, metricsRegistry: metrics, listener: "policy" });
  const bind = (server: Server, address: { host: string; port: number }): Promise<number> =>
    new Promise<number>((resolve, reject) =>
      server.bindAsync(hostPort(address.host, address.port), serverCredentials(config), (error, port) => (error ? reject(error) : resolve(port))),
    );
  let grpcPort: number;
  let policyPort: number;
  try {
    grpcPort = await bind(grpcServer, config.listen);
  } catch (error) {
    logger.error({ err: error, listen: config.listen }, "cannot listen for gRPC");
    process.exit(1);
  }
  try {
    policyPort = await bind(policyServer, config.policyListen);
  } catch (error) {
    logger.error({ err: error, policyAddr: config.policyListen }, "cannot listen for the policy API");
    process.exit(1);
  }

  let shuttingDown = false;
  const admin = createAdminServer({
    registry: metrics,
    ready: () => (shuttingDown ? { ok: false, reason: "shutting down" } : { ok: true }),
    limits: { maxConnections: config.admin.maxConnections },
  });
  try {
    await new Promise<void>((resolve, reject) => {
      admin.once("error", reject);
      admin.listen(config.admin.port, config.admin.host, () => resolve());
    });
  } catch (error) {
    logger.error({ err: error, admin: config.admin }, "cannot listen for admin");
    process.exit(1);
  }
  const adminPort = (admin.address() as AddressInfo).port;
  logger.info(
    {
      grpcAddress: hostPort(config.listen.host, grpcPort),
      policyAddress: hostPort(config.policyListen.host, policyPort),
      defaultInboundPolicy: config.defaultInboundPolicy,
      adminAddress: hostPort(config.admin.host, adminPort),
      tls: config.tls !== undefined,
      trustDomain: config.trustDomain,
      controlNamespace: config.controlNamespace,
      clusterDomain: config.clusterDomain,
    },
    "listening",
  );

  const shutdown = (signal: string): void => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal, openStreams: destination.openStreams(), openPolicyStreams: policy.openStreams() }, "shutting down");
    // Ending the streams lets clients reconnect elsewhere; then wait for calls to drain.
    destination.close();
    policy.close();
    policyController.close();
    registry.close();
    const force = setTimeout(() => {
      grpcServer.forceShutdown();
      policyServer.forceShutdown();
    }, SHUTDOWN_GRACE_MS);
    force.unref();
    const drained = Promise.all([grpcServer, policyServer].map((s) => new Promise<void>((resolve) => s.tryShutdown(() => resolve()))));
    void drained.then(() => {
      clearTimeout(force);
      admin.close(() => {
        logger.info({}, "stopped");
        process.exit(0);
      });
      admin.closeAllConnections();
    });
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

main().catch((error: unknown) => {
  console.error("meshtls-destination: fatal:", error);
  process.exit(1);
});
