import { InboundServer } from "@meshtls/api";
import { DestinationError } from "../errors.js";
import { noopLogger, type Logger } from "../logger.js";
import { DEFAULT_CLUSTER_NETWORKS } from "./cidr.js";
import { EMPTY_POLICY_MODEL as EMPTY, type Cidr, type DefaultPolicy, type PolicyModel, type PolicySource } from "./model.js";
import { resolveInboundServer, type ResolveOptions } from "./resolve.js";
import { checkPort, parseWorkload, type WorkloadRef } from "./workload.js";

export interface InboundPolicyControllerOptions {
  /** Where the policy model comes from (`policySourceOf(registry)` for a registry). */
  source: PolicySource;
  /** Trust domain of identity names. Default "cluster.local". */
  trustDomain?: string;
  /** Control-plane namespace of identity names. Default "meshtls". */
  controlNamespace?: string;
  /** Networks of `cluster-*` policies and of authorizations without a NetworkAuthentication. Default: Linkerd's `clusterNetworks`. */
  clusterNetworks?: readonly Cidr[];
  /** Policy of ports no Server selects, for workloads without their own. Default `all-unauthenticated` (Linkerd's). */
  defaultPolicy?: DefaultPolicy;
  /** Protocol detection timeout sent for ports with protocol `unknown`, in ms. Default 10000 (Linkerd's). */
  detectTimeoutMs?: number;
  /** Default: no-op. */
  logger?: Logger;
}

/** A parsed `PortSpec`. */
export interface PortQuery {
  workload: WorkloadRef;
  port: number;
}

/** The protocol-free inbound policy controller: `GetPort` and `WatchPort` without gRPC. */
export interface InboundPolicyController {
  /**
   * Reads a `PortSpec` (workload JSON and port).
   * @throws DestinationError `ERR_POLICY_WORKLOAD_INVALID` / `ERR_POLICY_PORT_INVALID`
   */
  parsePortSpec(spec: { workload: string; port: number }): PortQuery;
  /**
   * The port's policy now.
   * @throws DestinationError `ERR_POLICY_UNKNOWN_SERVER` when the workload is not in the model
   */
  getPort(query: PortQuery): InboundServer;
  /**
   * Calls `listener` with the port's policy now, then with every different
   * one; `onGone` when the workload leaves the model (then no more calls).
   * Returns the unsubscribe function.
   * @throws DestinationError `ERR_POLICY_UNKNOWN_SERVER` when the workload is not in the model
   */
  watchPort(query: PortQuery, listener: (server: InboundServer) => void, onGone?: () => void): () => void;
  /** Number of open watches. */
  watches(): number;
  /** Stops following the source; open watches get no more calls. */
  close(): void;
}

interface Watch {
  query: PortQuery;
  last: string;
  listener: (server: InboundServer) => void;
  onGone: (() => void) | undefined;
}

function unknown(workload: WorkloadRef): DestinationError {
  return new DestinationError("ERR_POLICY_UNKNOWN_SERVER", `unknown server: no workload ${workload.namespace}/${workload.name}`);
}

const fingerprint = (server: InboundServer): string => Buffer.from(InboundServer.encode(server).finish()).toString("base64");

/**
 * Creates the inbound policy controller over a policy source. Each model
 * change recomputes every watched port and calls the listeners of those whose
 * `Server` message changed (compared by encoding).
 */
export function createInboundPolicyController(options: InboundPolicyControllerOptions): InboundPolicyController {
  const logger = options.logger ?? noopLogger;
  const resolveOptions: ResolveOptions = {
    trustDomain: options.trustDomain ?? "cluster.local",
    controlNamespace: options.controlNamespace ?? "meshtls",
    clusterNetworks: options.clusterNetworks ?? DEFAULT_CLUSTER_NETWORKS,
    defaultPolicy: options.defaultPolicy ?? "all-unauthenticated",
    detectTimeoutMs: options.detectTimeoutMs ?? 10_000,
  };
  if (!Number.isSafeInteger(resolveOptions.detectTimeoutMs) || resolveOptions.detectTimeoutMs < 0) {
    throw new DestinationError("ERR_CONFIG_INVALID", `detectTimeoutMs must be a whole number of ms ≥ 0 (got ${String(options.detectTimeoutMs)})`);
  }
  let model = options.source.current();
  const watches = new Set<Watch>();
  let closed = false;

  function resolve(query: PortQuery): InboundServer | undefined {
    if (query.workload.kind !== "pod") return undefined;
    return resolveInboundServer(model, query.workload, query.port, resolveOptions);
  }

  const unsubscribe = options.source.subscribe((next) => {
    model = next;
    for (const watch of [...watches]) {
      if (!watches.has(watch)) continue;
      try {
        const server = resolve(watch.query);
        if (server === undefined) {
          watches.delete(watch);
          watch.onGone?.();
          continue;
        }
        const bytes = fingerprint(server);
        if (bytes === watch.last) continue;
        watch.last = bytes;
        watch.listener(server);
      } catch (error) {
        // One watcher's failure must not stop the others or the source.
        logger.error({ err: error, workload: watch.query.workload, port: watch.query.port }, "policy change not sent to a watcher");
      }
    }
  });

  return {
    parsePortSpec: (spec) => ({ workload: parseWorkload(spec.workload), port: checkPort(spec.port) }),
    getPort(query) {
      const server = resolve(query);
      if (server === undefined) throw unknown(query.workload);
      return server;
    },
    watchPort(query, listener, onGone) {
      const server = resolve(query);
      if (server === undefined) throw unknown(query.workload);
      const watch: Watch = { query, last: fingerprint(server), listener, onGone };
      if (!closed) watches.add(watch);
      listener(server);
      return () => void watches.delete(watch);
    },
    watches: () => watches.size,
    close() {
      closed = true;
      unsubscribe();
      watches.clear();
    },
  };
}

/** The policy model of a source that carries one beside its endpoints (the registry file). */
export function policySourceOf(registry: {
  list(): { policy?: PolicyModel };
  watch(listener: (snapshot: { policy?: PolicyModel }) => void): () => void;
}): PolicySource {
  return {
    current: () => registry.list().policy ?? EMPTY,
    subscribe: (listener) => registry.watch((snapshot) => listener(snapshot.policy ?? EMPTY)),
  };
}


