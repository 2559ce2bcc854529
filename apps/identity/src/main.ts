import cluster from "node:cluster";
import type { Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { experimental, Server, ServerCredentials } from "@grpc/grpc-js";
import { createIdentityServer, createIssuerStore, createJwksFileStore, createJwksTokenValidator, createTrustAnchorsStore } from "@meshtls/identity";
import { checkAccess, createKubeApiFromConfig, createTokenReviewValidator, KubernetesError } from "@meshtls/kubernetes";
import { createAdminServer, limitGrpcConnections } from "@meshtls/runtime";
import { pino } from "pino";
import type { Logger } from "pino";
import { AggregatorRegistry, collectDefaultMetrics, Registry } from "prom-client";
import type { PrometheusContentType } from "prom-client";
import { READY_REPORT_INTERVAL_MS } from "./cluster-messages.ts";
import type { WorkerMessage } from "./cluster-messages.ts";
import { hostPort, runPrimary } from "./cluster-primary.ts";
import { ConfigError, parseConfig } from "./config.ts";
import type { Config } from "./config.ts";
import { ServingIdentity } from "./serving-identity.ts";

function createLogger(config: Config): Logger {
  const workerId = cluster.worker?.id;
  // Asynchronous stdout: lines are written in batches off the request path (one synchronous write per
  // issuance cost more than the JSON itself); pino flushes what is buffered on exit. Workers share the
  // primary's stdout: writes of whole lines up to PIPE_BUF (4096 bytes on Linux) are atomic on a pipe,
  // so lines of different processes never interleave.
  return pino(
    { level: config.logLevel, base: workerId === undefined ? { service: "meshtls-identity" } : { service: "meshtls-identity", worker: workerId } },
    pino.destination({ dest: 1, sync: false, ...(workerId === undefined ? {} : { maxWrite: 4096 }) }),
  );
}

/** The TokenReview validator of `--source kubernetes`, after checking (SelfSubjectAccessReview) that this process may create TokenReviews. */
async function kubernetesTokenValidator(config: Config, logger: Logger) {
  try {
    const api = createKubeApiFromConfig(config.kubeconfig === undefined ? {} : { kubeconfig: config.kubeconfig });
    await checkAccess(api, { group: "authentication.k8s.io", version: "v1", resource: "tokenreviews", verb: "create" });
    logger.info({ apiServer: api.server, allowLegacyTokens: config.allowLegacyTokens }, "tokens are reviewed by the Kubernetes API (TokenReview)");
    return createTokenReviewValidator({ api, audience: config.tokenAudience, allowLegacyTokens: config.allowLegacyTokens });
  } catch (error) {
    if (error instanceof KubernetesError) throw new ConfigError(`--source kubernetes: ${error.message} [${error.code}]`);
    throw error;
  }
}

/** Serves Certify in this process: alone (with the admin endpoints), or as one worker of `--workers N`. */
async function run(config: Config, logger: Logger): Promise<void> {
  const worker = cluster.isWorker;
  const tell = (message: WorkerMessage) => process.send?.(message);
  const registry = new Registry();
  if (worker) {
    // The primary's /metrics asks every worker for its registry and sums them.
    new AggregatorRegistry<PrometheusContentType>();
    AggregatorRegistry.setRegistries([registry]);
  }
  collectDefaultMetrics({ register: registry });
  // A JWKS URL is jose's remote set (fetched again on an unknown kid); a file is followed like the anchors,
  // so a signer key rotation needs no restart and a bad replacement never replaces the set in use.
  const jwksStore = config.source === "kubernetes" || /^https?:\/\//i.test(config.tokenJwks)
    ? undefined
    : createJwksFileStore({ file: config.tokenJwks, pollIntervalMs: config.tokenJwksPollIntervalMs, logger, metricsRegistry: registry });
  const firstJwks = await jwksStore?.start();
  if (jwksStore && firstJwks?.result === "rejected") {
    jwksStore.close();
    throw new ConfigError(`--token-jwks ${config.tokenJwks}: ${firstJwks.reason}`);
  }
  const tokenValidator = config.source === "kubernetes" ? await kubernetesTokenValidator(config, logger) : undefined;
  const jwks = jwksStore ? jwksStore.current : tokenValidator ? undefined : new URL(config.tokenJwks);
  // The anchors file is followed like the issuer folder: a bad or empty file never replaces the bundle in use.
  const anchorsStore = createTrustAnchorsStore({
    file: config.trustAnchorsFile,
    pollIntervalMs: config.trustAnchorsPollIntervalMs,
    logger,
    metricsRegistry: registry,
  });
  const firstAnchors = await anchorsStore.start();
  if (firstAnchors.result === "rejected") {
    anchorsStore.close();
    jwksStore?.close();
    throw new ConfigError(`--trust-anchors: ${firstAnchors.reason}`);
  }

  const issuerStore = createIssuerStore({
    dir: config.issuerDir,
    // Read at every check: the issuer (current or candidate) is validated against the anchors in use now.
    trustAnchors: () => anchorsStore.current(),
    pollIntervalMs: config.issuerPollIntervalMs,
    trustDomain: config.trustDomain,
    controlNamespace: config.controlNamespace,
    logger,
    metricsRegistry: registry,
  });
  const first = await issuerStore.start();
  if (first.result === "rejected") {
    issuerStore.close();
    anchorsStore.close();
    jwksStore?.close();
    throw new ConfigError(`--issuer-dir ${config.issuerDir}: ${first.reason}`);
  }
  // New anchors: revalidate the issuer now (kept, replaced by a candidate refused before, or dropped), not at the next poll.
  anchorsStore.subscribe(() => {
    issuerStore.reload().catch((error: unknown) => logger.error({ err: error }, "issuer revalidation failed"));
  });

  const identity = createIdentityServer({
    issuerStore,
    tokenValidator:
      tokenValidator ??
      createJwksTokenValidator({
        jwks: jwks!,
        issuer: config.tokenIssuer,
        audience: config.tokenAudience,
        allowInsecureLoopbackJwks: config.tokenJwksAllowInsecureLoopback,
      }),
    trustDomain: config.trustDomain,
    controlNamespace: config.controlNamespace,
    lifetimeMs: config.lifetimeMs,
    skewMs: config.skewMs,
    logger,
    metricsRegistry: registry,
    limits: config.limits,
  });

  let serving: ServingIdentity | undefined;
  let credentials: ServerCredentials;
  if (config.insecurePlaintext) {
    logger.warn({ listen: hostPort(config.listen) }, "serving plaintext gRPC on loopback (--insecure-plaintext)");
    credentials = ServerCredentials.createInsecure();
  } else {
    serving = new ServingIdentity({
      issuerStore,
      trustDomain: config.trustDomain,
      controlNamespace: config.controlNamespace,
      serviceAccount: config.serviceAccount,
      lifetimeMs: config.lifetimeMs,
      skewMs: config.skewMs,
      logger,
    });
    await serving.start();
    // grpc-js takes the identity provider as the first argument (the second, a CA provider, would request client certificates).
    credentials = experimental.createCertificateProviderServerCredentials(serving, null, false);
  }

  const server = new Server(identity.serverOptions);
  // Handshake bound, then a PING every 30 s answered within 10 s: a client trickling a HEADERS frame is cut within 40 s.
  limitGrpcConnections(server, { handshakeTimeoutMs: config.handshakeTimeoutMs, metricsRegistry: registry, listener: "identity" });
  server.addService(identity.service, identity.implementation);
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync(hostPort(config.listen), credentials, (error, port) => (error ? reject(error) : resolve(port))),
  );

  let shuttingDown = false;
  const ready = (): { ok: boolean; reason?: string } => {
    if (shuttingDown) return { ok: false, reason: "shutting down" };
    const state = issuerStore.current();
    if (!state.ok) return { ok: false, reason: state.reason };
    // The serving certificate follows the issuer; if renewing it failed until it expired, TLS clients are refused.
    if (serving && (serving.notAfter === undefined || Date.now() >= serving.notAfter.getTime())) {
      return { ok: false, reason: `the service's own certificate expired at ${serving.notAfter?.toISOString() ?? "(none)"}` };
    }
    return { ok: true };
  };
  let admin: HttpServer | undefined;
  let reportReady: NodeJS.Timeout | undefined;
  if (worker) {
    // The primary serves the admin endpoints: it hears from each worker here.
    tell({ type: "meshtls-identity:listening", grpcPort, tls: !config.insecurePlaintext, serverName: serving?.name ?? null, trustAnchors: anchorsStore.current().length });
    const report = () => tell({ type: "meshtls-identity:ready", ...ready() });
    report();
    reportReady = setInterval(report, READY_REPORT_INTERVAL_MS);
    reportReady.unref();
    logger.info({ grpc: hostPort({ host: config.listen.host, port: grpcPort }), pid: process.pid }, "worker listening");
  } else {
    const adminServer = createAdminServer({ registry, ready, limits: { maxConnections: config.admin.maxConnections } });
    admin = adminServer;
    await new Promise<void>((resolve, reject) => {
      adminServer.once("error", reject);
      adminServer.listen(config.admin.port, config.admin.host, () => resolve());
    });
    const adminPort = (adminServer.address() as AddressInfo).port;
    logger.info(
      {
        grpc: hostPort({ host: config.listen.host, port: grpcPort }),
        admin: hostPort({ host: config.admin.host, port: adminPort }),
        tls: !config.insecurePlaintext,
        serverName: serving?.name ?? null,
        trustAnchors: anchorsStore.current().length,
        trustDomain: config.trustDomain,
      },
      "listening",
    );
  }

  const shutdown = (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal }, "shutting down");
    const force = setTimeout(() => server.forceShutdown(), 5000);
    force.unref();
    if (worker) tell({ type: "meshtls-identity:ready", ...ready() });
    server.tryShutdown(() => {
      clearTimeout(force);
      clearInterval(reportReady);
      serving?.stop();
      issuerStore.close();
      anchorsStore.close();
      jwksStore?.close();
      admin?.close();
      admin?.closeAllConnections();
      logger.info({}, "stopped");
      logger.flush?.();
      process.exitCode = 0;
      // The IPC channel would keep a worker alive.
      if (worker) process.disconnect?.();
    });
  };
  // A worker hears a terminal's SIGINT twice (from the terminal and from the primary): it must not die of the second.
  const on = worker ? process.on.bind(process) : process.once.bind(process);
  on("SIGTERM", () => shutdown("SIGTERM"));
  on("SIGINT", () => shutdown("SIGINT"));
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = parseConfig(process.argv, process.env);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "commander.helpDisplayed" || code === "commander.version") return;
    if (code?.startsWith("commander.")) {
      process.exitCode = 2;
      return;
    }
    console.error(`meshtls-identity: ${(error as Error).message}`);
    process.exitCode = 2;
    return;
  }
  try {
    if (!cluster.isWorker && config.workers > 1) await runPrimary(config, createLogger(config));
    else await run(config, createLogger(config));
  } catch (error) {
    console.error(`meshtls-identity: ${error instanceof ConfigError ? error.message : (error as Error).stack ?? String(error)}`);
    process.exit(1);
  }
}

void main();
