/**
 * The destination service's sources on Kubernetes: an `EndpointRegistry`
 * from EndpointSlices, Services and Pods, and a `PolicySource` from Pods,
 * Namespaces and Linkerd's policy resources, each resource followed by its
 * own list+watch loop. Linkerd's rules (`controller/api/destination/watcher`):
 * slices belong to the service of their `kubernetes.io/service-name` label;
 * an endpoint is dropped only when `conditions.ready` is explicitly false;
 * only Running pods; identity only for pods labelled with our control-plane
 * namespace. A watch event rebuilds only the services it touches, and the
 * registry says which (`RegistryChange`, with the IPs of changed pods). Pods
 * are also indexed by IP (not host-network ones) and by hostIP:hostPort, for
 * lookups of workloads outside any service.
 */

import {
  DEFAULT_POLICIES,
  EMPTY_POLICY_MODEL,
  type DefaultPolicy,
  type EndpointRegistry,
  type PolicyModel,
  type PolicySource,
  type PolicyWorkload,
  type RegistryChange,
  type RegistryEndpoint,
  type RegistryService,
  type RegistrySnapshot,
  type RegistryWorkload,
} from "@meshtls/destination";
import type { Registry } from "prom-client";
import type { KubeApi } from "./api-client.ts";
import { noopLogger, type Logger } from "./logger.ts";
import {
  CONTROL_PLANE_NS_LABEL,
  DEFAULT_INBOUND_POLICY_ANNOTATION,
  inboundPortOf,
  isRunning,
  isTerminated,
  opaquePortsOf,
  podAddressesOf,
  podMetricLabels,
  serviceAccountOf,
  skippedInboundPortsOf,
} from "./pod-facts.ts";
import { toAuthorizationPolicy, toMeshTLSAuthentication, toNetworkAuthentication, toServer, toServerAuthorization, type Converted } from "./policy-crds.ts";
import { startReflector, type Reflector, type ReflectorDelta } from "./reflector.ts";
import type { EndpointSlice, KubeObject, Namespace, Pod, Service } from "./types.ts";

export const SERVICE_NAME_LABEL = "kubernetes.io/service-name";

export interface KubernetesSourceOptions {
  api: KubeApi;
  /** Pods labelled `linkerd.io/control-plane-ns=<this>` are meshed: they get an identity. */
  controlNamespace: string;
  /** Follow Linkerd's policy resources (and Namespaces) for the policy source. Default true. */
  policy?: boolean;
  /** Passed to every list+watch loop (see `ReflectorOptions`). */
  minWatchTimeoutSeconds?: number;
  backoff?: { initialMs?: number; maxMs?: number };
  metrics?: Registry;
  logger?: Logger;
}

/** Endpoints and policy from the Kubernetes API. */
export interface KubernetesSource {
  registry: EndpointRegistry;
  policy: PolicySource;
  /** Resolves when every resource has been listed once. */
  synced(): Promise<void>;
  /** Stops every watch. */
  close(): void;
}

const key = (namespace: string | undefined, name: string): string => `${name}.${namespace ?? ""}`;

/** Starts following the API server; serve after `synced()`. */
export function createKubernetesSource(options: KubernetesSourceOptions): KubernetesSource {
  const logger = options.logger ?? noopLogger;
  const followPolicy = options.policy ?? true;
  const common = {
    api: options.api,
    ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    ...(options.minWatchTimeoutSeconds === undefined ? {} : { minWatchTimeoutSeconds: options.minWatchTimeoutSeconds }),
    ...(options.backoff === undefined ? {} : { backoff: options.backoff }),
    logger,
  };

  /** Service key → keys of its slices. */
  const slicesOf = new Map<string, Set<string>>();
  /** Pod key → services whose slices name it. */
  const servicesOfPod = new Map<string, Set<string>>();
  const built = new Map<string, RegistryService>();
  const dirty = new Set<string>();
  /** Pod key → its IPs on the pod network (none for host-network pods), and its `<hostIP>:<hostPort>` addresses. */
  const podAddresses = new Map<string, { ips: string[]; hostPorts: string[] }>();
  /** IP → pods on the pod network with it (more than one: a conflict, answered as nobody). */
  const podsByIp = new Map<string, Set<string>>();
  /** `<hostIP> <hostPort>` → pods exposing that host port. */
  const podsByHostPort = new Map<string, Set<string>>();
  const dirtyAddresses = new Set<string>();
  let policyDirty = false;
  let scheduled = false;
  let synced = false;
  let snapshot: RegistrySnapshot = { services: [], policy: EMPTY_POLICY_MODEL };
  const listeners = new Set<(snapshot: RegistrySnapshot, change?: RegistryChange) => void>();
  const policyListeners = new Set<(model: PolicyModel) => void>();

  const serviceKeyOfSlice = (slice: EndpointSlice): string | undefined => {
    const name = slice.metadata.labels?.[SERVICE_NAME_LABEL] ?? slice.metadata.ownerReferences?.find((o) => o.kind === "Service")?.name;
    return name === undefined ? undefined : key(slice.metadata.namespace, name);
  };

  function schedule(): void {
    if (scheduled || !synced) return;
    scheduled = true;
    setImmediate(flush);
  }

  function onSlices(deltas: readonly ReflectorDelta<EndpointSlice>[]): void {
    for (const delta of deltas) {
      const sliceKey = key(delta.object.metadata.namespace, delta.object.metadata.name);
      for (const object of delta.type === "upsert" && delta.previous !== undefined ? [delta.previous, delta.object] : [delta.object]) {
        const service = serviceKeyOfSlice(object);
        if (service === undefined) continue;
        dirty.add(service);
        const set = slicesOf.get(service) ?? new Set<string>();
        if (object === delta.object && delta.type === "upsert") set.add(sliceKey);
        else set.delete(sliceKey);
        if (set.size === 0) slicesOf.delete(service);
        else slicesOf.set(service, set);
      }
    }
    schedule();
  }

  function onServices(deltas: readonly ReflectorDelta<Service>[]): void {
    for (const delta of deltas) dirty.add(key(delta.object.metadata.namespace, delta.object.metadata.name));
    schedule();
  }

  function onPods(deltas: readonly ReflectorDelta<Pod>[]): void {
    for (const delta of deltas) {
      const podKey = key(delta.object.metadata.namespace, delta.object.metadata.name);
      for (const service of servicesOfPod.get(podKey) ?? []) dirty.add(service);
      reindexPod(podKey, delta.type === "upsert" ? delta.object : undefined);
    }
    policyDirty = true;
    schedule();
  }

  /** Re-indexes one pod's addresses (`pod` undefined: deleted) and marks every IP it had or has as changed. */
  function reindexPod(podKey: string, pod: Pod | undefined): void {
    const before = podAddresses.get(podKey);
    const unlink = (map: Map<string, Set<string>>, address: string): void => {
      const set = map.get(address);
      set?.delete(podKey);
      if (set?.size === 0) map.delete(address);
    };
    for (const ip of before?.ips ?? []) unlink(podsByIp, ip);
    for (const hostPort of before?.hostPorts ?? []) unlink(podsByHostPort, hostPort);
    for (const address of [...(before?.ips ?? []), ...(before?.hostPorts ?? [])]) dirtyAddresses.add(address.split(" ")[0]!);
    if (pod === undefined) {
      podAddresses.delete(podKey);
      return;
    }
    const after = podAddressesOf(pod);
    podAddresses.set(podKey, after);
    const link = (map: Map<string, Set<string>>, address: string): void => {
      const set = map.get(address);
      if (set === undefined) map.set(address, new Set([podKey]));
      else set.add(podKey);
    };
    for (const ip of after.ips) link(podsByIp, ip);
    for (const hostPort of after.hostPorts) link(podsByHostPort, hostPort);
    for (const address of [...after.ips, ...after.hostPorts]) dirtyAddresses.add(address.split(" ")[0]!);
  }

  /** The pod at `ip:port`: by pod IP, else by host port (Linkerd's `getPodByPodIP`, `getPodByHostIP`); terminated pods never count. */
  function findWorkload(ip: string, port: number): RegistryWorkload | undefined {
    const live = (keys: Set<string> | undefined): Pod[] => [...(keys ?? [])].map((k) => podByKey(k)).filter((p): p is Pod => p !== undefined && !isTerminated(p));
    let found = live(podsByIp.get(ip));
    if (found.length === 0) found = live(podsByHostPort.get(`${ip} ${port}`));
    if (found.length > 1) {
      // Linkerd refuses such a lookup (FailedPrecondition); meshtls answers it as an unknown address, with no identity.
      logger.warn({ ip, port, pods: found.map((p) => `${p.metadata.namespace ?? ""}/${p.metadata.name}`) }, "several pods claim one address; answered as nobody's");
      return undefined;
    }
    const pod = found[0];
    // A pod that is not Running is found but not described (Linkerd: no pod metadata, so no identity).
    if (pod === undefined || !isRunning(pod)) return undefined;
    const namespace = pod.metadata.namespace ?? "default";
    return { namespace, endpoint: toEndpoint(ip, pod, undefined, undefined) };
  }

  function podByKey(podKey: string): Pod | undefined {
    const dot = podKey.lastIndexOf(".");
    return pods.get(podKey.slice(dot + 1), podKey.slice(0, dot));
  }

  function onPolicyObjects(): void {
    policyDirty = true;
    schedule();
  }

  const slices = startReflector<EndpointSlice>({ ...common, path: "/apis/discovery.k8s.io/v1/endpointslices", resource: "endpointslices", onDeltas: onSlices });
  const services = startReflector<Service>({ ...common, path: "/api/v1/services", resource: "services", onDeltas: onServices });
  const pods = startReflector<Pod>({ ...common, path: "/api/v1/pods", resource: "pods", onDeltas: onPods });
  const policyReflectors: Record<string, Reflector<KubeObject>> = {};
  if (followPolicy) {
    const follow = (path: string, resource: string) => {
      policyReflectors[resource] = startReflector<KubeObject>({ ...common, path, resource, onDeltas: onPolicyObjects });
    };
    follow("/api/v1/namespaces", "namespaces");
    follow("/apis/policy.linkerd.io/v1beta3/servers", "servers");
    follow("/apis/policy.linkerd.io/v1beta1/serverauthorizations", "serverauthorizations");
    follow("/apis/policy.linkerd.io/v1alpha1/authorizationpolicies", "authorizationpolicies");
    follow("/apis/policy.linkerd.io/v1alpha1/meshtlsauthentications", "meshtlsauthentications");
    follow("/apis/policy.linkerd.io/v1alpha1/networkauthentications", "networkauthentications");
  }
  const all: Reflector<KubeObject>[] = [slices, services, pods, ...Object.values(policyReflectors)];

  function buildService(serviceKey: string): RegistryService | undefined {
    const dot = serviceKey.lastIndexOf(".");
    const name = serviceKey.slice(0, dot);
    const namespace = serviceKey.slice(dot + 1);
    const service = services.get(namespace, name);
    // ExternalName services have no endpoints to discover (Linkerd answers InvalidArgument).
    if (service === undefined || service.spec?.type === "ExternalName") return undefined;
    const clusterIP = service.spec?.clusterIPs?.[0] ?? service.spec?.clusterIP;
    const endpoints: RegistryEndpoint[] = [];
    const seen = new Set<string>();
    const sliceKeys = [...(slicesOf.get(serviceKey) ?? [])].sort();
    for (const sliceKey of sliceKeys) {
      const sliceName = sliceKey.slice(0, sliceKey.lastIndexOf("."));
      const slice = slices.get(namespace, sliceName);
      if (slice === undefined || slice.addressType === "FQDN") continue;
      // No ports: no addresses (Linkerd's endpointSliceToAddresses).
      const targetPorts: Record<string, number> = {};
      for (const port of slice.ports ?? []) if (typeof port.port === "number") targetPorts[port.name ?? ""] = port.port;
      if (Object.keys(targetPorts).length === 0) continue;
      for (const endpoint of slice.endpoints ?? []) {
        if (endpoint.conditions?.ready === false) continue;
        const ref = endpoint.targetRef;
        let pod: Pod | undefined;
        if (ref?.kind === "Pod" && ref.name !== undefined) {
          const podKey = key(ref.namespace ?? namespace, ref.name);
          let set = servicesOfPod.get(podKey);
          if (set === undefined) servicesOfPod.set(podKey, (set = new Set()));
          set.add(serviceKey);
          pod = pods.get(ref.namespace ?? namespace, ref.name);
          // A pod not (yet) known, or not running, is left out until it is.
          if (pod === undefined || !isRunning(pod)) continue;
        } else if (ref !== undefined) {
          continue; // ExternalWorkload and others: not supported.
        }
        for (const address of endpoint.addresses ?? []) {
          if (seen.has(address)) continue;
          seen.add(address);
          const built = toEndpoint(address, pod, targetPorts, endpoint.zone);
          if (typeof endpoint.hostname === "string" && endpoint.hostname !== "") built.hostname = endpoint.hostname;
          endpoints.push(built);
        }
      }
    }
    const ports = (service.spec?.ports ?? []).map((p) => ({
      port: p.port,
      targetPort: typeof p.targetPort === "number" ? p.targetPort : p.port,
      name: p.name ?? "",
    }));
    return {
      name,
      namespace,
      ...(clusterIP === undefined || clusterIP === "" || clusterIP === "None" ? {} : { clusterIP }),
      ports,
      endpoints,
      ...(service.spec?.internalTrafficPolicy === "Local" ? { internalTrafficPolicy: "Local" as const } : {}),
    };
  }

  function toEndpoint(address: string, pod: Pod | undefined, targetPorts: Record<string, number> | undefined, zone: string | undefined): RegistryEndpoint {
    const controlPlane = pod?.metadata.labels?.[CONTROL_PLANE_NS_LABEL];
    const endpoint: RegistryEndpoint = {
      address,
      meshed: pod !== undefined && controlPlane === options.controlNamespace,
      serviceAccount: pod === undefined ? "" : serviceAccountOf(pod),
      inboundPort: pod === undefined ? 4143 : inboundPortOf(pod),
      weight: 10_000,
      ...(targetPorts === undefined ? {} : { targetPorts }),
    };
    if (pod !== undefined) {
      endpoint.pod = pod.metadata.name;
      if (pod.spec?.nodeName !== undefined && pod.spec.nodeName !== "") endpoint.nodeName = pod.spec.nodeName;
      endpoint.metricLabels = podMetricLabels(pod);
      if (controlPlane !== undefined && controlPlane !== "") endpoint.protocolHints = { opaquePorts: opaquePortsOf(pod), skippedPorts: skippedInboundPortsOf(pod) };
    }
    if (zone !== undefined) endpoint.zone = zone;
    return endpoint;
  }

  function buildPolicy(): PolicyModel {
    const namespaces = policyReflectors["namespaces"];
    const workloads: PolicyWorkload[] = [];
    for (const pod of pods.list()) {
      const namespace = pod.metadata.namespace ?? "default";
      const annotation =
        pod.metadata.annotations?.[DEFAULT_INBOUND_POLICY_ANNOTATION] ??
        (namespaces?.get(undefined, namespace) as Namespace | undefined)?.metadata.annotations?.[DEFAULT_INBOUND_POLICY_ANNOTATION];
      const ports: { name: string; port: number }[] = [];
      for (const container of pod.spec?.containers ?? []) for (const p of container.ports ?? []) if (p.name !== undefined) ports.push({ name: p.name, port: p.containerPort });
      const workload: PolicyWorkload = { name: pod.metadata.name, namespace, labels: pod.metadata.labels ?? {}, ports, opaquePorts: opaquePortsOf(pod) };
      if (annotation !== undefined && (DEFAULT_POLICIES as readonly string[]).includes(annotation)) workload.defaultPolicy = annotation as DefaultPolicy;
      else if (annotation !== undefined) logger.warn({ pod: pod.metadata.name, namespace, annotation }, `${DEFAULT_INBOUND_POLICY_ANNOTATION} is not a default policy; ignored`);
      workloads.push(workload);
    }
    const convert = <T>(resource: string, fn: (object: KubeObject) => Converted<T>): T[] => {
      const out: T[] = [];
      for (const object of policyReflectors[resource]?.list() ?? []) {
        const result = fn(object);
        if (result.ok) out.push(result.value);
        else logger.warn({ resource, name: object.metadata.name, namespace: object.metadata.namespace, reason: result.reason }, `${resource} left out of the policy: ${result.reason}`);
      }
      return out;
    };
    return {
      workloads,
      servers: convert("servers", toServer),
      authorizationPolicies: convert("authorizationpolicies", toAuthorizationPolicy),
      meshTLSAuthentications: convert("meshtlsauthentications", toMeshTLSAuthentication),
      networkAuthentications: convert("networkauthentications", toNetworkAuthentication),
      serverAuthorizations: convert("serverauthorizations", toServerAuthorization),
    };
  }

  function flush(): void {
    scheduled = false;
    const changed = new Set(dirty);
    dirty.clear();
    for (const serviceKey of changed) {
      const service = buildService(serviceKey);
      if (service === undefined) built.delete(serviceKey);
      else built.set(serviceKey, service);
    }
    const addresses = new Set(dirtyAddresses);
    dirtyAddresses.clear();
    let policy = snapshot.policy;
    const policyChanged = policyDirty && followPolicy;
    if (policyChanged) policy = buildPolicy();
    policyDirty = false;
    if (changed.size === 0 && addresses.size === 0 && !policyChanged) return;
    snapshot = { services: [...built.values()], ...(policy === undefined ? {} : { policy }) };
    const change: RegistryChange = { services: changed, addresses };
    for (const listener of [...listeners]) {
      try {
        listener(snapshot, change);
      } catch (error) {
        logger.error({ err: error }, "a registry listener failed");
      }
    }
    if (policyChanged) for (const listener of [...policyListeners]) listener(policy ?? EMPTY_POLICY_MODEL);
  }

  const ready = Promise.all(all.map((r) => r.synced())).then(() => {
    synced = true;
    // Everything listed so far: build it all once.
    for (const service of services.list()) dirty.add(key(service.metadata.namespace, service.metadata.name));
    policyDirty = true;
    flush();
    logger.info({ services: built.size, pods: pods.list().length }, "Kubernetes resources listed");
  });
  ready.catch(() => {});

  return {
    registry: {
      list: () => snapshot,
      watch(listener) {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
      findWorkload,
    },
    policy: {
      current: () => snapshot.policy ?? EMPTY_POLICY_MODEL,
      subscribe(listener) {
        policyListeners.add(listener);
        return () => policyListeners.delete(listener);
      },
    },
    synced: () => ready,
    close() {
      for (const reflector of all) reflector.stop();
      listeners.clear();
      policyListeners.clear();
    },
  };
}
