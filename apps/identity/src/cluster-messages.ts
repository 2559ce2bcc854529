/** What a worker (node:cluster) tells the primary of meshtls-identity over the IPC channel. */

/** Sent once its gRPC server is bound: the fields of the "listening" log line that only a worker knows. */
export interface WorkerListening {
  type: "meshtls-identity:listening";
  grpcPort: number;
  tls: boolean;
  serverName: string | null;
  trustAnchors: number;
}

/** Sent every {@link READY_REPORT_INTERVAL_MS} and when it stops: what its own /ready would answer. */
export interface WorkerReady {
  type: "meshtls-identity:ready";
  ok: boolean;
  reason?: string;
}

export type WorkerMessage = WorkerListening | WorkerReady;

/** How often a worker reports its readiness, in milliseconds. */
export const READY_REPORT_INTERVAL_MS = 1000;
/** A worker silent for longer than this, in milliseconds, makes the primary not ready (fail closed). */
export const READY_REPORT_STALE_MS = 5 * READY_REPORT_INTERVAL_MS;

export function isWorkerMessage(message: unknown): message is WorkerMessage {
  if (typeof message !== "object" || message === null) return false;
  const type = (message as { type?: unknown }).type;
  return type === "meshtls-identity:listening" || type === "meshtls-identity:ready";
}
