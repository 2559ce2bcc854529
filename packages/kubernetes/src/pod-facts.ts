/**
 * What Linkerd reads from a pod for discovery and policy
 * (`pkg/k8s/labels.go`, `endpoint_translator.go`): mesh membership,
 * ServiceAccount, the proxy's inbound port, opaque and skipped ports, owner
 * and metric labels.
 */

import type { Container, Pod } from "./types.ts";

export const CONTROL_PLANE_NS_LABEL = "linkerd.io/control-plane-ns";
export const OPAQUE_PORTS_ANNOTATION = "config.linkerd.io/opaque-ports";
export const SKIP_INBOUND_PORTS_ANNOTATION = "config.linkerd.io/skip-inbound-ports";
export const DEFAULT_INBOUND_POLICY_ANNOTATION = "config.linkerd.io/default-inbound-policy";
export const PROXY_CONTAINER = "linkerd-proxy";
export const INBOUND_LISTEN_ENV = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR";
/** Linkerd's default opaque ports (`values.yaml` `proxy.opaquePorts`). */
export const DEFAULT_OPAQUE_PORTS: readonly number[] = [25, 587, 3306, 4444, 5432, 6379, 9300, 11211];
const DEFAULT_INBOUND_PORT = 4143;

/** Parses Linkerd's port list annotation ("25,587,3306-3307"); malformed parts are ignored, ranges capped at 65535 ports in all. */
export function parsePortList(text: string | undefined): number[] {
  if (text === undefined) return [];
  const ports = new Set<number>();
  for (const part of text.split(",").map((p) => p.trim())) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part);
    if (m === null) continue;
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (from < 1 || to > 65535 || to < from) continue;
    for (let p = from; p <= to; p++) ports.add(p);
  }
  return [...ports].sort((a, b) => a - b);
}

function proxyContainer(pod: Pod): Container | undefined {
  return [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find((c) => c.name === PROXY_CONTAINER);
}

/** The port of the proxy container's `LINKERD2_PROXY_INBOUND_LISTEN_ADDR` (`0.0.0.0:4143`, `[::]:4143`), else 4143. */
export function inboundPortOf(pod: Pod): number {
  const value = proxyContainer(pod)?.env?.find((e) => e.name === INBOUND_LISTEN_ENV)?.value;
  const m = value === undefined ? null : /:(\d{1,5})$/.exec(value);
  const port = m === null ? NaN : Number(m[1]);
  return port >= 1 && port <= 65535 ? port : DEFAULT_INBOUND_PORT;
}

export function serviceAccountOf(pod: Pod): string {
  const name = pod.spec?.serviceAccountName;
  return name === undefined || name === "" ? "default" : name;
}

/** The pod's opaque ports: its annotation, else Linkerd's default list. */
export function opaquePortsOf(pod: Pod): readonly number[] {
  const annotation = pod.metadata.annotations?.[OPAQUE_PORTS_ANNOTATION];
  return annotation === undefined ? DEFAULT_OPAQUE_PORTS : parsePortList(annotation);
}

export function skippedInboundPortsOf(pod: Pod): readonly number[] {
  return parsePortList(pod.metadata.annotations?.[SKIP_INBOUND_PORTS_ANNOTATION]);
}

/**
 * Linkerd's endpoint metric labels (`GetPodLabels`): the owner (a
 * ReplicaSet with a pod-template-hash counts as its Deployment; a Job is
 * `k8s_job`), `control_plane_ns` and `pod_template_hash`.
 */
export function podMetricLabels(pod: Pod): Record<string, string> {
  const labels: Record<string, string> = {};
  const owner = pod.metadata.ownerReferences?.find((o) => o.controller === true) ?? pod.metadata.ownerReferences?.[0];
  const hash = pod.metadata.labels?.["pod-template-hash"];
  if (owner !== undefined) {
    if (owner.kind === "ReplicaSet" && hash !== undefined && owner.name.endsWith(`-${hash}`)) labels.deployment = owner.name.slice(0, -hash.length - 1);
    else if (owner.kind === "Job") labels.k8s_job = owner.name;
    else labels[owner.kind.toLowerCase()] = owner.name;
  }
  const controlPlane = pod.metadata.labels?.[CONTROL_PLANE_NS_LABEL];
  if (controlPlane !== undefined) labels.control_plane_ns = controlPlane;
  if (hash !== undefined) labels.pod_template_hash = hash;
  return labels;
}

export function isRunning(pod: Pod): boolean {
  return pod.status?.phase === "Running";
}

/** Succeeded, Failed, or being deleted: its addresses belong to nobody (Linkerd's `podNotTerminating`). */
export function isTerminated(pod: Pod): boolean {
  const phase = pod.status?.phase;
  return phase === "Succeeded" || phase === "Failed" || pod.metadata.deletionTimestamp !== undefined;
}

/**
 * Where a pod can be reached by IP, as Linkerd's indexers (`watcher/k8s.go`):
 * its pod IPs (`status.podIPs`, else `podIP`) unless it runs in the host
 * network, and `<hostIP> <hostPort>` for every container port (init ones
 * too) with a `hostPort`, on each of `status.hostIPs` (else `hostIP`).
 */
export function podAddressesOf(pod: Pod): { ips: string[]; hostPorts: string[] } {
  const podIps = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip) => typeof ip === "string" && ip !== "");
  if (podIps.length === 0 && pod.status?.podIP) podIps.push(pod.status.podIP);
  const hostIps = (pod.status?.hostIPs ?? []).map((p) => p.ip).filter((ip) => typeof ip === "string" && ip !== "");
  if (hostIps.length === 0 && pod.status?.hostIP) hostIps.push(pod.status.hostIP);
  const hostPorts: string[] = [];
  for (const container of [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])]) {
    for (const port of container.ports ?? []) {
      if (typeof port.hostPort !== "number" || port.hostPort === 0) continue;
      for (const ip of hostIps) hostPorts.push(`${ip} ${port.hostPort}`);
    }
  }
  return { ips: pod.spec?.hostNetwork === true ? [] : podIps, hostPorts };
}
