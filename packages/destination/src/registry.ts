/**
 * The endpoint registry: what the destination server serves from. Platform
 * teams implement `EndpointRegistry` (a Kubernetes EndpointSlice registry, a
 * Consul one...); this package brings a file registry and a static one.
 */

import type { PolicyModel } from "./policy/model.js";

/** Default inbound proxy port of a meshed endpoint. */
export const DEFAULT_INBOUND_PORT = 4143;
/** Default endpoint weight (as upstream Linkerd). */
export const DEFAULT_WEIGHT = 10_000;

/** A service port and the workload port it forwards to. */
export interface RegistryServicePort {
  port: number;
  /** The workload's port; defaults to `port`. */
  targetPort: number;
  name?: string;
}

/** One workload instance (a pod) behind a service. */
export interface RegistryEndpoint {
  /** IP literal, canonical form (lowercase, RFC 5952 for IPv6). */
  address: string;
  /** True when a meshtls (or Linkerd) proxy runs in front of the workload. */
  meshed: boolean;
  /** ServiceAccount of the workload, which names its identity (in the service's namespace). */
  serviceAccount: string;
  /** Port of the workload's inbound proxy (meshed only). */
  inboundPort: number;
  /** Pod name, for metric labels. */
  pod?: string;
  weight: number;
  /**
   * The endpoint's ports by service port name, from its EndpointSlice (a
   * Kubernetes registry): a service port then resolves through its `name`
   * here, per endpoint, and an endpoint without that name is left out.
   * Absent: every endpoint uses the service port's `targetPort`.
   */
  targetPorts?: Readonly<Record<string, number>>;
  /** Topology zone, sent as the `zone` metric label. */
  zone?: string;
  /** More metric labels of the endpoint (owner kind, pod_template_hash, control_plane_ns...). */
  metricLabels?: Readonly<Record<string, string>>;
  /**
   * Linkerd's protocol hints, for endpoints whose pod carries a control plane
   * label: `opaque` hint and `opaque_transport` on opaque ports, `h2` on the
   * others, neither hint nor identity on skipped ports. Absent: a meshed
   * endpoint gets `opaque_transport` on every port and no hint (the file
   * registry's behaviour).
   */
  protocolHints?: { opaquePorts: readonly number[]; skippedPorts: readonly number[] };
  /** The endpoint's hostname in its service (a StatefulSet pod's), for `<hostname>.<svc>.<ns>.svc.<domain>` lookups. */
  hostname?: string;
  /** The node the workload runs on, for services whose traffic stays on the client's node. */
  nodeName?: string;
}

/** A service: a name in a namespace, its ports and its endpoints. */
export interface RegistryService {
  name: string;
  namespace: string;
  /** A virtual IP that resolves to the service, as a Kubernetes ClusterIP. */
  clusterIP?: string;
  /** Service ports. Empty: every port maps to itself. */
  ports: readonly RegistryServicePort[];
  endpoints: readonly RegistryEndpoint[];
  /**
   * `"Local"`: a client gets only the endpoints on its own node (the
   * `nodeName` of its context token), as Kubernetes' `internalTrafficPolicy:
   * Local`. Absent: every endpoint.
   */
  internalTrafficPolicy?: "Local";
}

/** A workload found by IP outside the services' endpoints (a Kubernetes pod). */
export interface RegistryWorkload {
  namespace: string;
  /** The workload as an endpoint at the address asked for. */
  endpoint: RegistryEndpoint;
}

/** An immutable view of every service at one moment. */
export interface RegistrySnapshot {
  services: readonly RegistryService[];
  /** The inbound policy model, when the source carries one (the registry file does). */
  policy?: PolicyModel;
}

/**
 * Which services a new snapshot changed (`"<name>.<namespace>"`), so that
 * the server recomputes only the streams watching them. Absent: anything may
 * have changed.
 */
export interface RegistryChange {
  services: ReadonlySet<string>;
  /** IP addresses whose `findWorkload` answer may have changed (a pod's IPs, its node's IPs). */
  addresses?: ReadonlySet<string>;
}

/**
 * What the destination server needs from a source of endpoints: the current
 * snapshot (`list`) and a notification for each new one (`watch`).
 * Snapshots are immutable; a registry that knows what changed says so with
 * a `RegistryChange` (unchanged services keep their objects).
 */
export interface EndpointRegistry {
  /** The current snapshot. */
  list(): RegistrySnapshot;
  /** Calls `listener` with every new snapshot; returns the unsubscribe function. */
  watch(listener: (snapshot: RegistrySnapshot, change?: RegistryChange) => void): () => void;
  /**
   * The workload at `ip:port` when no ClusterIP has the IP: a pod by its IP
   * (not a host-network pod), else a pod exposing `port` as a host port on
   * its node's IP (Linkerd's order). Undefined: nobody, or several workloads
   * claim it. Absent: IPs resolve through the services' endpoints only.
   */
  findWorkload?(ip: string, port: number): RegistryWorkload | undefined;
}

/** An in-memory registry for tests and for platforms that push snapshots themselves. */
export interface StaticRegistry extends EndpointRegistry {
  /** Replaces the snapshot and notifies watchers. */
  set(snapshot: RegistrySnapshot): void;
}

/** Creates an in-memory registry, empty unless `snapshot` is given. */
export function createStaticRegistry(snapshot: RegistrySnapshot = { services: [] }): StaticRegistry {
  let current = snapshot;
  const listeners = new Set<(snapshot: RegistrySnapshot) => void>();
  return {
    list: () => current,
    watch(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    set(next) {
      current = next;
      for (const listener of [...listeners]) listener(next);
    },
  };
}
