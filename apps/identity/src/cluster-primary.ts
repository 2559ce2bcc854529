import cluster from "node:cluster";
import type { Worker } from "node:cluster";
import type { AddressInfo } from "node:net";
import { createAdminServer } from "@meshtls/runtime";
import type { Logger } from "pino";
import { AggregatorRegistry } from "prom-client";
import type { PrometheusContentType } from "prom-client";
import { READY_REPORT_STALE_MS, isWorkerMessage } from "./cluster-messages.ts";
import type { WorkerListening } from "./cluster-messages.ts";
import type { Config } from "./config.ts";

/** The primary's /metrics: the sum over the workers' registries (prom-client's cluster aggregation). */
/** The workers' metrics summed, then the primary's own (the admin server's `tcp_connections_refused_total`). */
class WorkersRegistry extends AggregatorRegistry<PrometheusContentType> {
  override async metrics(): Promise<string> {
    const [workers, own] = await Promise.all([this.clusterMetrics(), super.metrics()]);
    return workers === "" || workers.endsWith("\n") ? workers + own : `${workers}\n${own}`;
  }
}

/** How long a worker that exited unexpectedly waits before it is replaced, in milliseconds. */
const RESTART_DELAY_MS = 1000;
/** After SIGTERM, workers still running after this many milliseconds are killed (each drains for 5 s at most). */
const STOP_TIMEOUT_MS = 10_000;

interface Slot {
  worker: Worker;
  listening?: WorkerListening;
  ready?: { ok: boolean; reason?: string; at: number };
}

/**
 * `--workers N` (N > 1): this process forks N workers that each load the issuer and anchors, follow them, and
 * serve Certify on the one gRPC port (node:cluster hands each connection to a worker). It serves the admin
 * endpoints itself: /metrics sums the workers' metrics, /ready is 200 only while every worker runs and says it is
 * ready. A worker that dies is replaced; SIGTERM drains every worker, then this process exits.
 */
export async function runPrimary(config: Config, logger: Logger): Promise<void> {
  // Connections are handed out round-robin by this process (the default everywhere but Windows), which spreads
  // long-lived gRPC connections evenly; the OS's choice can leave a worker without any.
  cluster.schedulingPolicy = cluster.SCHED_RR;
  const slots = new Map<number, Slot>();
  let shuttingDown = false;
  let started = false;

  const fork = (): Slot => {
    const slot: Slot = { worker: cluster.fork() };
    slots.set(slot.worker.id, slot);
    return slot;
  };

  // Whatever a worker sends, nothing thrown here may reach the primary's event loop (it would stop every worker).
  cluster.on("message", (worker, message: unknown) => {
    try {
      const slot = slots.get(worker.id);
      if (!slot || !isWorkerMessage(message)) return;
      if (message.type === "meshtls-identity:listening") slot.listening = message;
      else slot.ready = message.reason === undefined ? { ok: message.ok === true, at: Date.now() } : { ok: message.ok === true, reason: String(message.reason), at: Date.now() };
    } catch (error) {
      logger.warn({ worker: worker.id, err: error }, "worker message ignored");
    }
  });

  // Start: every worker must bind the same port, else none serves.
  const listening = await new Promise<WorkerListening>((resolve, reject) => {
    const onMessage = () => {
      const all = [...slots.values()];
      if (!all.every((s) => s.listening)) return;
      cluster.off("message", onMessage);
      cluster.off("exit", onExit);
      const ports = new Set(all.map((s) => s.listening?.grpcPort));
      if (ports.size !== 1) reject(new Error(`workers listen on different ports (${[...ports].join(", ")})`));
      else resolve(all[0]!.listening!);
    };
    const onExit = (worker: Worker, code: number | null, signal: string | null) => {
      cluster.off("message", onMessage);
      cluster.off("exit", onExit);
      reject(new Error(`worker ${worker.id} exited (${signal ?? `code ${code}`}) before listening`));
    };
    cluster.on("message", onMessage);
    cluster.on("exit", onExit);
    for (let i = 0; i < config.workers; i++) fork();
  }).catch((error: unknown) => {
    for (const { worker } of slots.values()) worker.process.kill("SIGKILL");
    throw error;
  });
  started = true;

  cluster.on("exit", (worker, code, signal) => {
    slots.delete(worker.id);
    if (shuttingDown || !started) return;
    logger.error({ worker: worker.id, code, signal }, "worker exited; starting another");
    setTimeout(() => {
      if (!shuttingDown) fork();
    }, RESTART_DELAY_MS).unref();
  });

  const registry = new WorkersRegistry();
  const admin = createAdminServer({
    registry,
    limits: { maxConnections: config.admin.maxConnections },
    ready: () => {
      if (shuttingDown) return { ok: false, reason: "shutting down" };
      const running = [...slots.values()];
      if (running.length < config.workers) return { ok: false, reason: `${running.length} of ${config.workers} workers running` };
      for (const { worker, ready } of running) {
        if (!ready) return { ok: false, reason: `worker ${worker.id} has not reported yet` };
        if (Date.now() - ready.at > READY_REPORT_STALE_MS) return { ok: false, reason: `worker ${worker.id} has not reported for ${Math.round((Date.now() - ready.at) / 1000)} s` };
        if (!ready.ok) return { ok: false, reason: `worker ${worker.id}: ${ready.reason ?? "not ready"}` };
      }
      return { ok: true };
    },
  });
  await new Promise<void>((resolve, reject) => {
    admin.once("error", reject);
    admin.listen(config.admin.port, config.admin.host, () => resolve());
  });
  const adminPort = (admin.address() as AddressInfo).port;
  logger.info(
    {
      grpc: hostPort({ host: config.listen.host, port: listening.grpcPort }),
      admin: hostPort({ host: config.admin.host, port: adminPort }),
      tls: listening.tls,
      serverName: listening.serverName,
      trustAnchors: listening.trustAnchors,
      trustDomain: config.trustDomain,
      workers: config.workers,
      workerPids: [...slots.values()].map((s) => s.worker.process.pid),
    },
    "listening",
  );

  const shutdown = (signal: NodeJS.Signals) => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal }, "shutting down");
    const running = [...slots.values()].map((s) => s.worker);
    const force = setTimeout(() => {
      for (const worker of running) if (!worker.isDead()) worker.process.kill("SIGKILL");
    }, STOP_TIMEOUT_MS);
    force.unref();
    let failed = false;
    void Promise.all(
      running.map(
        (worker) =>
          new Promise<void>((resolve) => {
            if (worker.isDead()) return resolve();
            worker.once("exit", (code, sig) => {
              if (code !== 0) {
                failed = true;
                logger.error({ worker: worker.id, code, signal: sig }, "worker did not stop cleanly");
              }
              resolve();
            });
            // Each worker drains its calls (grpc-js tryShutdown) and exits.
            worker.process.kill(signal);
          }),
      ),
    ).then(() => {
      clearTimeout(force);
      admin.close();
      admin.closeAllConnections();
      logger.info({}, "stopped");
      logger.flush();
      process.exitCode = failed ? 1 : 0;
    });
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

export function hostPort(address: { host: string; port: number }): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}
