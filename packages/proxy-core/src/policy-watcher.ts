import type { InboundServer } from "@meshtls/api";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import type { ServerPolicy } from "./policy.js";
import { serverPolicyFromProto } from "./policy-proto.js";
import { createPolicyStore } from "./policy-store.js";
import type { PolicySource } from "./sources.js";

/** One `WatchPort` stream, as grpc-js's `ClientReadableStream` is. */
export interface PolicyWatchStream {
  on(event: "data", listener: (server: InboundServer) => void): unknown;
  on(event: "error", listener: (error: Error & { code?: number; details?: string }) => void): unknown;
  on(event: "end", listener: () => void): unknown;
  cancel(): void;
}

/** Options of {@link createPolicyWatcher}. */
export interface CreatePolicyWatcherOptions {
  /** Opens `WatchPort({ workload, port })` (`InboundServerPoliciesClient.watchPort`). */
  watchPort: (spec: { workload: string; port: number }) => PolicyWatchStream;
  /** Linkerd's workload string, `{"ns":"<ns>","pod":"<pod>"}`. */
  workload: string;
  /** Each port's policy until the controller answers (the proxy's configured default). */
  defaults: (port: number) => ServerPolicy;
  /** Watched from the start and for as long as the watcher runs. */
  ports: number[];
  /** Other ports are watched from their first connection and dropped this long after their last one closed (checked every quarter of it). Default 60000. */
  idleTimeoutMs?: number;
  /** First retry after a stream fails or ends. Default 100; doubles per failure to `maxBackoffMs`, with jitter. */
  minBackoffMs?: number;
  /** Default 10000. */
  maxBackoffMs?: number;
  logger?: Logger;
  /** Default Math.random: the jitter. */
  random?: () => number;
}

/** A watching {@link PolicySource}. */
export interface PolicyWatcher extends PolicySource {
  /** Ports watched now. */
  watched(): number[];
  close(): void;
}

// gRPC codes never retried (Linkerd: the request itself is wrong), and our own cancellation.
const INVALID_ARGUMENT = 3;
const FAILED_PRECONDITION = 9;
const CANCELLED = 1;

interface Watch {
  port: number;
  declared: boolean;
  stream: PolicyWatchStream | undefined;
  retry: NodeJS.Timeout | undefined;
  failures: number;
  lastUsed: number;
  /** Open connections on the port: it is not idle while any is. */
  retained: number;
  /** Whether the controller answered for the port once. */
  answered: boolean;
}

/**
 * Follows the policy controller for each inbound port: `WatchPort` for the
 * declared ports from the start, for others from their first connection
 * (dropped once idle), the default policy until the first answer, every
 * update applied at once (subscribers hear of it), a stream that fails or
 * ends reopened with exponential backoff, the last policy kept meanwhile. A
 * `Server` that does not convert becomes a policy that admits nobody, as in
 * linkerd2-proxy; InvalidArgument and FailedPrecondition are not retried.
 */
export function createPolicyWatcher(options: CreatePolicyWatcherOptions): PolicyWatcher {
  const logger = options.logger ?? noopLogger;
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const minBackoffMs = options.minBackoffMs ?? 100;
  const maxBackoffMs = options.maxBackoffMs ?? 10_000;
  const random = options.random ?? Math.random;
  const store = createPolicyStore({ defaults: options.defaults });
  const watches = new Map<number, Watch>();
  let closed = false;

  const invalid = (port: number): ServerPolicy => ({ protocol: store.current(port).protocol, authorizations: [], meta: { group: "", kind: "invalid", name: "invalid" } });

  const open = (watch: Watch): void => {
    if (closed) return;
    const stream = options.watchPort({ workload: options.workload, port: watch.port });
    watch.stream = stream;
    stream.on("data", (server) => {
      watch.failures = 0;
      watch.answered = true;
      let policy: ServerPolicy;
      try {
        policy = serverPolicyFromProto(server);
      } catch (error) {
        logger.error({ port: watch.port, err: (error as Error).message }, "the policy controller sent a server the proxy cannot use: the port admits nobody");
        policy = invalid(watch.port);
      }
      logger.info({ port: watch.port, server: policy.meta.name, kind: policy.meta.kind, authorizations: policy.authorizations.length }, "inbound policy updated");
      store.set(watch.port, policy);
    });
    let ended = false;
    const reopen = (error?: Error & { code?: number; details?: string }): void => {
      if (ended || watch.stream !== stream) return;
      ended = true;
      watch.stream = undefined;
      if (closed || watches.get(watch.port) !== watch) return;
      if (error?.code === CANCELLED) return;
      if (error?.code === INVALID_ARGUMENT || error?.code === FAILED_PRECONDITION) {
        logger.error({ port: watch.port, code: error.code, err: error.details ?? error.message }, "the policy controller refused the port: not retried");
        return;
      }
      const delayMs = Math.min(maxBackoffMs, minBackoffMs * 2 ** watch.failures) * (0.5 + random() / 2);
      watch.failures += 1;
      logger.warn({ port: watch.port, err: error?.details ?? error?.message ?? "stream ended", retryInMs: Math.round(delayMs) }, "policy watch lost: keeping the last policy, retrying");
      watch.retry = setTimeout(() => {
        watch.retry = undefined;
        open(watch);
      }, delayMs);
      watch.retry.unref();
    };
    stream.on("error", reopen);
    stream.on("end", () => reopen());
  };

  const stop = (watch: Watch): void => {
    watches.delete(watch.port);
    if (watch.retry !== undefined) clearTimeout(watch.retry);
    const stream = watch.stream;
    watch.stream = undefined;
    stream?.cancel();
  };

  const watch = (port: number, declared: boolean): Watch => {
    let w = watches.get(port);
    if (w === undefined) {
      w = { port, declared, stream: undefined, retry: undefined, failures: 0, lastUsed: Date.now(), retained: 0, answered: false };
      watches.set(port, w);
      open(w);
    }
    return w;
  };
  for (const port of options.ports) watch(port, true);

  // Undeclared ports: dropped once no connection is open on them and none asked for them for idleTimeoutMs.
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const w of watches.values()) {
      if (w.declared || w.retained > 0 || now - w.lastUsed < idleTimeoutMs) continue;
      logger.info({ port: w.port }, "policy watch of an idle port dropped");
      stop(w);
      store.forget(w.port);
    }
  }, Math.max(1000, Math.ceil(idleTimeoutMs / 4)));
  sweep.unref();

  return {
    current(port) {
      if (!closed) watch(port, false).lastUsed = Date.now();
      return store.current(port);
    },
    subscribe: (listener) => store.subscribe(listener),
    retain(port) {
      if (closed) return () => undefined;
      const w = watch(port, false);
      w.retained += 1;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        w.retained -= 1;
        w.lastUsed = Date.now();
      };
    },
    watched: () => [...watches.keys()],
    unanswered: () => [...watches.values()].filter((w) => w.declared && !w.answered).map((w) => w.port),
    close() {
      closed = true;
      clearInterval(sweep);
      for (const w of [...watches.values()]) stop(w);
    },
  };
}
