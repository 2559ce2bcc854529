/**
 * The list+watch loop (a "reflector", as client-go calls it): lists a
 * resource, then watches from the list's resourceVersion with bookmarks and a
 * server-side timeout, keeps a cache and hands its consumer deltas only. It
 * relists on 410 Gone (HTTP status or in-stream ERROR), reconnects after any
 * other failure with jittered exponential backoff, and never stops until
 * told to: every failure is logged and counted.
 */

import { Counter, Gauge, type Registry } from "prom-client";
import type { KubeApi, WatchEvent } from "./api-client.ts";
import { KubernetesError } from "./errors.ts";
import { noopLogger, type Logger } from "./logger.ts";
import type { KubeObject } from "./types.ts";

/** A change of the cache, as the consumer sees it. */
export type ReflectorDelta<T extends KubeObject> =
  | { type: "upsert"; object: T; previous: T | undefined }
  | { type: "delete"; object: T };

export interface ReflectorOptions<T extends KubeObject> {
  api: KubeApi;
  /** The collection's path, e.g. `/apis/discovery.k8s.io/v1/endpointslices` (all namespaces). */
  path: string;
  /** Names the resource in metrics and logs, e.g. `endpointslices`. */
  resource: string;
  labelSelector?: string;
  /** Called with each batch of changes (one batch per relist, one delta per watch event). */
  onDeltas: (deltas: readonly ReflectorDelta<T>[]) => void;
  /** Called once, after the first list has been applied. */
  onSynced?: () => void;
  /** Server-side watch timeout: a random value in [min, 2×min) seconds, as client-go. Default 300. */
  minWatchTimeoutSeconds?: number;
  /** A watch silent for this long (no event, no bookmark) is given up and reopened, in ms. Default: 2× the watch timeout. */
  idleTimeoutMs?: number;
  /** Backoff after a failure: initial and most, in ms. Defaults 500 and 30000. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Registry for `kubernetes_*` metrics (shared by every reflector of a process: the metrics are created once per registry). */
  metrics?: Registry;
  logger?: Logger;
  /** Randomness in [0, 1), for jitter. Default Math.random. */
  random?: () => number;
}

export interface Reflector<T extends KubeObject> {
  /** Resolves after the first list has been applied; rejects only when stopped before. */
  synced(): Promise<void>;
  /** The cached objects (after the first list). */
  list(): T[];
  get(namespace: string | undefined, name: string): T | undefined;
  /** Stops the loop and closes the open watch. */
  stop(): void;
}

interface ReflectorMetrics {
  lists: Counter<"resource" | "result">;
  watchEnds: Counter<"resource" | "reason">;
  events: Counter<"resource" | "type">;
  connected: Gauge<"resource">;
  objects: Gauge<"resource">;
}

const metricsByRegistry = new WeakMap<Registry, ReflectorMetrics>();

function metricsFor(registry: Registry): ReflectorMetrics {
  let metrics = metricsByRegistry.get(registry);
  if (metrics === undefined) {
    metrics = {
      lists: new Counter({ name: "kubernetes_lists_total", help: "Lists of a resource by result (ok, error).", labelNames: ["resource", "result"], registers: [registry] }),
      watchEnds: new Counter({
        name: "kubernetes_watch_ends_total",
        help: "Watches that ended, by reason (timeout: the server closed it; gone: 410, relisted; dropped: the connection broke; error: any other failure).",
        labelNames: ["resource", "reason"],
        registers: [registry],
      }),
      events: new Counter({ name: "kubernetes_watch_events_total", help: "Watch events received, by type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).", labelNames: ["resource", "type"], registers: [registry] }),
      connected: new Gauge({ name: "kubernetes_watch_connected", help: "1 while a watch of the resource is open.", labelNames: ["resource"], registers: [registry] }),
      objects: new Gauge({ name: "kubernetes_objects", help: "Objects of the resource in the cache.", labelNames: ["resource"], registers: [registry] }),
    };
    metricsByRegistry.set(registry, metrics);
  }
  return metrics;
}

const keyOf = (object: KubeObject): string => `${object.metadata.namespace ?? ""}/${object.metadata.name}`;

function isGone(error: unknown): boolean {
  return error instanceof KubernetesError && error.httpStatus === 410;
}

/** Starts a list+watch loop; it runs until `stop()`. */
export function startReflector<T extends KubeObject>(options: ReflectorOptions<T>): Reflector<T> {
  const logger = options.logger ?? noopLogger;
  const random = options.random ?? Math.random;
  const minTimeout = options.minWatchTimeoutSeconds ?? 300;
  const initialBackoffMs = options.backoff?.initialMs ?? 500;
  const maxBackoffMs = options.backoff?.maxMs ?? 30_000;
  const metrics = options.metrics === undefined ? undefined : metricsFor(options.metrics);
  const resource = options.resource;
  const cache = new Map<string, T>();
  const controller = new AbortController();
  let resourceVersion: string | undefined;
  let syncedOnce = false;
  let resolveSynced!: () => void;
  let rejectSynced!: (error: Error) => void;
  const synced = new Promise<void>((resolve, reject) => {
    resolveSynced = resolve;
    rejectSynced = reject;
  });
  synced.catch(() => {});

  const selectorQuery = options.labelSelector === undefined ? {} : { labelSelector: options.labelSelector };

  async function relist(): Promise<void> {
    let list: { metadata?: { resourceVersion?: string }; items?: T[] };
    try {
      list = await options.api.request({ method: "GET", path: options.path, query: selectorQuery, signal: controller.signal });
    } catch (error) {
      metrics?.lists.inc({ resource, result: "error" });
      throw error;
    }
    if (!Array.isArray(list.items) || typeof list.metadata?.resourceVersion !== "string") {
      metrics?.lists.inc({ resource, result: "error" });
      throw new KubernetesError("ERR_KUBE_API_RESPONSE", `list ${options.path}: no items or no metadata.resourceVersion`);
    }
    metrics?.lists.inc({ resource, result: "ok" });
    const deltas: ReflectorDelta<T>[] = [];
    const seen = new Set<string>();
    for (const object of list.items) {
      const key = keyOf(object);
      seen.add(key);
      const previous = cache.get(key);
      if (previous?.metadata.resourceVersion === object.metadata.resourceVersion && previous !== undefined) continue;
      cache.set(key, object);
      deltas.push({ type: "upsert", object, previous });
    }
    for (const [key, object] of cache) {
      if (seen.has(key)) continue;
      cache.delete(key);
      deltas.push({ type: "delete", object });
    }
    resourceVersion = list.metadata.resourceVersion;
    metrics?.objects.set({ resource }, cache.size);
    if (deltas.length > 0) options.onDeltas(deltas);
    logger.debug({ resource, objects: cache.size, changes: deltas.length, resourceVersion }, "listed");
    if (!syncedOnce) {
      syncedOnce = true;
      options.onSynced?.();
      resolveSynced();
    }
  }

  function apply(event: WatchEvent): void {
    metrics?.events.inc({ resource, type: event.type });
    const object = event.object as unknown as T;
    const version = (event.object.metadata as { resourceVersion?: unknown } | undefined)?.resourceVersion;
    if (event.type === "ERROR") {
      const status = event.object as { code?: unknown; reason?: unknown; message?: unknown };
      const code = typeof status.code === "number" ? status.code : 500;
      throw new KubernetesError("ERR_KUBE_API_STATUS", `watch ${options.path}: ERROR event: ${String(status.message ?? "")}`, {
        httpStatus: code,
        ...(typeof status.reason === "string" ? { reason: status.reason } : {}),
      });
    }
    if (typeof version !== "string") throw new KubernetesError("ERR_KUBE_API_RESPONSE", `watch ${options.path}: a ${event.type} event without metadata.resourceVersion`);
    if (event.type === "BOOKMARK") {
      resourceVersion = version;
      return;
    }
    if (typeof object.metadata?.name !== "string") throw new KubernetesError("ERR_KUBE_API_RESPONSE", `watch ${options.path}: a ${event.type} event without metadata.name`);
    const key = keyOf(object);
    resourceVersion = version;
    if (event.type === "DELETED") {
      const previous = cache.get(key);
      cache.delete(key);
      if (previous !== undefined) options.onDeltas([{ type: "delete", object: previous }]);
    } else {
      const previous = cache.get(key);
      cache.set(key, object);
      options.onDeltas([{ type: "upsert", object, previous }]);
    }
    metrics?.objects.set({ resource }, cache.size);
  }

  async function run(): Promise<void> {
    let backoffMs = initialBackoffMs;
    while (!controller.signal.aborted) {
      try {
        if (resourceVersion === undefined) await relist();
        const timeoutSeconds = Math.floor(minTimeout * (1 + random()));
        const opened = Date.now();
        let received = 0;
        try {
          await options.api.watch({
            path: options.path,
            query: { ...selectorQuery, resourceVersion: resourceVersion!, allowWatchBookmarks: "true", timeoutSeconds: String(timeoutSeconds) },
            signal: controller.signal,
            idleTimeoutMs: options.idleTimeoutMs ?? timeoutSeconds * 2000,
            onOpen: () => {
              metrics?.connected.set({ resource }, 1);
              backoffMs = initialBackoffMs;
            },
            onEvent: (event) => {
              received++;
              apply(event);
            },
          });
        } finally {
          metrics?.connected.set({ resource }, 0);
        }
        metrics?.watchEnds.inc({ resource, reason: "timeout" });
        logger.debug({ resource, events: received, resourceVersion }, "watch ended by the server; reopening");
        // A server that ends watches at once would make this a busy loop: wait as after a failure.
        if (received === 0 && Date.now() - opened < 1000) {
          await sleep(jittered(backoffMs));
          backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
        }
      } catch (error) {
        if (controller.signal.aborted) break;
        if (isGone(error)) {
          metrics?.watchEnds.inc({ resource, reason: "gone" });
          logger.info({ resource, resourceVersion, reason: (error as Error).message }, "resourceVersion expired (410): relisting");
          resourceVersion = undefined;
          continue;
        }
        const dropped = error instanceof KubernetesError && error.code === "ERR_KUBE_API_UNREACHABLE";
        metrics?.watchEnds.inc({ resource, reason: dropped ? "dropped" : "error" });
        const code = error instanceof KubernetesError ? error.code : "ERR_UNEXPECTED";
        logger.warn({ resource, code, err: error, retryInMs: backoffMs }, `list+watch of ${resource} failed; retrying: ${(error as Error).message}`);
        await sleep(jittered(backoffMs));
        backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
      }
    }
  }

  function jittered(ms: number): number {
    return Math.round(ms * (0.8 + 0.4 * random()));
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        controller.signal.removeEventListener("abort", done);
        resolve();
      }
      controller.signal.addEventListener("abort", done, { once: true });
    });
  }

  void run().catch((error: unknown) => {
    // Only a bug in a consumer's onDeltas can get here; say so loudly rather than stop silently.
    logger.error({ resource, err: error }, "list+watch loop stopped by an unexpected error");
  });

  return {
    synced: () => synced,
    list: () => [...cache.values()],
    get: (namespace, name) => cache.get(`${namespace ?? ""}/${name}`),
    stop() {
      controller.abort();
      if (!syncedOnce) rejectSynced(new KubernetesError("ERR_KUBE_ABORTED", `stopped before ${resource} was listed`));
    },
  };
}
