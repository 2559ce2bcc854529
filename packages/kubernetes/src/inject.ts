/**
 * Meshing a pod: Linkerd's proxy injector (`charts/patch/templates/patch.json`,
 * `pkg/inject/inject.go`) written for meshtls-proxy. One function builds the
 * JSON Patch for a pod template; `meshtls inject` applies it to workloads and
 * the injector webhook returns it in an AdmissionReview, so both mesh a pod
 * the same way.
 *
 * The proxy is configured only through `MESHTLS_PROXY_*` variables that
 * meshtls-proxy's own parser reads (a test parses them with it), plus the
 * downward-API `_pod_*` variables that Kubernetes expands in them.
 */

import { createHash } from "node:crypto";
import { KubernetesError } from "./errors.ts";
import { escapePointer, type AddOperation, type JsonPatch } from "./json-patch.ts";
import { CONTROL_PLANE_NS_LABEL, DEFAULT_INBOUND_POLICY_ANNOTATION, DEFAULT_OPAQUE_PORTS, OPAQUE_PORTS_ANNOTATION, parsePortList, PROXY_CONTAINER, SKIP_INBOUND_PORTS_ANNOTATION } from "./pod-facts.ts";

export const INJECT_ANNOTATION = "linkerd.io/inject";
export const TRUST_ROOT_SHA256_ANNOTATION = "linkerd.io/trust-root-sha256";
export const PROXY_VERSION_ANNOTATION = "linkerd.io/proxy-version";
export const CREATED_BY_ANNOTATION = "linkerd.io/created-by";
export const WORKLOAD_NS_LABEL = "linkerd.io/workload-ns";
export const REQUIRE_IDENTITY_PORTS_ANNOTATION = "config.linkerd.io/proxy-require-identity-inbound-ports";
export const PROXY_LOG_LEVEL_ANNOTATION = "config.linkerd.io/proxy-log-level";
export const NATIVE_SIDECAR_ANNOTATION = "config.linkerd.io/proxy-enable-native-sidecar";
export const INIT_CONTAINER = "linkerd-init";
export const TOKEN_VOLUME = "linkerd-identity-token";
export const END_ENTITY_VOLUME = "linkerd-identity-end-entity";
export const TRUST_ROOTS_VOLUME = "linkerd-trust-roots";
export const XTABLES_VOLUME = "linkerd-proxy-init-xtables-lock";
/** The ConfigMap `meshtls install` writes and the proxy mounts: key `ca-bundle.crt`, the trust anchors PEM. */
export const TRUST_ROOTS_CONFIGMAP = "meshtls-identity-trust-roots";
export const TRUST_ROOTS_KEY = "ca-bundle.crt";
export const TOKEN_DIR = "/var/run/secrets/tokens";
export const TOKEN_FILE = `${TOKEN_DIR}/${TOKEN_VOLUME}`;
export const TRUST_ROOTS_DIR = "/var/run/linkerd/identity/trust-roots";
export const END_ENTITY_DIR = "/var/run/linkerd/identity/end-entity";
/** Audience and lifetime of the projected ServiceAccount token (Linkerd's `identity.l5d.io`, 24 h). */
export const TOKEN_AUDIENCE = "identity.l5d.io";
export const TOKEN_EXPIRATION_SECONDS = 86_400;
/** Linkerd's numbers (`values.yaml`). */
export const PROXY_UID = 2102;
export const INBOUND_PORT = 4143;
export const OUTBOUND_PORT = 4140;
export const ADMIN_PORT = 4191;
/** How often an injected proxy checks its redirect: the pod gets meshtls init's rules, probe rule included. */
export const REDIRECT_CHECK_INTERVAL = "10s";
export const DEFAULT_CLUSTER_NETWORKS = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";
const INJECT_VALUES = ["enabled", "ingress", "disabled"] as const;
const DEFAULT_POLICIES = ["all-unauthenticated", "all-authenticated", "cluster-unauthenticated", "cluster-authenticated", "deny", "audit"];
const PINO_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export interface InjectOptions {
  /** PEM of the trust anchors; its SHA-256 is the pod's `linkerd.io/trust-root-sha256`. */
  trustAnchorsPem: string;
  /** Control-plane namespace. Default `meshtls`. */
  controlPlaneNamespace?: string;
  /** Trust domain of identity names. Default `cluster.local`. */
  trustDomain?: string;
  /** DNS domain of service names. Default `cluster.local`. */
  clusterDomain?: string;
  /** Image of meshtls-proxy. Default `ghcr.io/meshtls/proxy:<version>`. */
  proxyImage?: string;
  /** Image with `meshtls init` (the redirect). Default `ghcr.io/meshtls/cli:<version>`. */
  initImage?: string;
  /** Written in `linkerd.io/proxy-version`. Default `0.1.0`. */
  version?: string;
  /** The proxy as a native sidecar (an init container with `restartPolicy: Always`). Default true; a pod's `config.linkerd.io/proxy-enable-native-sidecar: "false"` overrides. */
  nativeSidecar?: boolean;
  /** Default inbound policy of ports the controller does not know yet. Default `all-unauthenticated`. */
  defaultInboundPolicy?: string;
  /** Annotations of the pod's namespace, inherited under the pod's own (the webhook passes them). */
  namespaceAnnotations?: Record<string, string>;
  /** Mesh only pods whose `linkerd.io/inject` (or their namespace's) is enabled or ingress, as the webhook does. Default false: mesh unless disabled, as `meshtls inject`. */
  requireAnnotation?: boolean;
  /** Namespace of the pod when its metadata has none (the AdmissionReview's). */
  namespace?: string;
}

/** Why a pod was left as it was (Linkerd's report reasons). */
export type SkipReason = "host-network" | "already-meshed" | "disabled" | "not-enabled" | "no-ports";

export type PodInjection =
  | { injected: true; patch: JsonPatch; warnings: string[] }
  | { injected: false; reason: SkipReason; message: string };

type Json = Record<string, unknown>;

interface PodTemplate {
  metadata?: { annotations?: Record<string, string>; labels?: Record<string, string>; namespace?: string };
  spec?: Json & {
    hostNetwork?: boolean;
    containers?: ContainerSpec[];
    initContainers?: ContainerSpec[];
    volumes?: unknown[];
  };
}

interface ContainerSpec {
  name?: string;
  ports?: { containerPort?: number; protocol?: string }[];
  livenessProbe?: { httpGet?: { port?: number | string } };
  readinessProbe?: { httpGet?: { port?: number | string } };
}

export function trustRootSha256(pem: string): string {
  return createHash("sha256").update(pem).digest("hex");
}

function resolved(options: InjectOptions): Required<Omit<InjectOptions, "namespaceAnnotations" | "namespace" | "proxyImage" | "initImage">> & { proxyImage: string; initImage: string } {
  const version = options.version ?? "0.1.0";
  return {
    trustAnchorsPem: options.trustAnchorsPem,
    controlPlaneNamespace: options.controlPlaneNamespace ?? "meshtls",
    trustDomain: options.trustDomain ?? "cluster.local",
    clusterDomain: options.clusterDomain ?? "cluster.local",
    version,
    proxyImage: options.proxyImage ?? `ghcr.io/meshtls/proxy:${version}`,
    initImage: options.initImage ?? `ghcr.io/meshtls/cli:${version}`,
    nativeSidecar: options.nativeSidecar ?? true,
    defaultInboundPolicy: options.defaultInboundPolicy ?? "all-unauthenticated",
    requireAnnotation: options.requireAnnotation ?? false,
  };
}

/** The identity name of a control-plane ServiceAccount (`identity`, `destination`). */
export function controlPlaneIdentity(serviceAccount: string, options: { controlPlaneNamespace?: string; trustDomain?: string }): string {
  const ns = options.controlPlaneNamespace ?? "meshtls";
  return `${serviceAccount}.${ns}.serviceaccount.identity.${ns}.${options.trustDomain ?? "cluster.local"}`;
}

/** The ports the workload listens on: container ports (TCP) and HTTP probe ports, sorted (Linkerd's `LINKERD2_PROXY_INBOUND_PORTS`). */
function workloadPorts(containers: ContainerSpec[]): number[] {
  const ports = new Set<number>();
  for (const c of containers) {
    for (const p of c.ports ?? []) if (typeof p.containerPort === "number" && (p.protocol ?? "TCP") === "TCP") ports.add(p.containerPort);
    for (const probe of [c.livenessProbe, c.readinessProbe]) if (typeof probe?.httpGet?.port === "number") ports.add(probe.httpGet.port);
  }
  return [...ports].sort((a, b) => a - b);
}

/**
 * Decides whether a pod template is meshed and, if so, returns the JSON
 * Patch that meshes it, relative to `base` (`""` for a Pod,
 * `/spec/template` for a Deployment). Never throws for a pod it declines;
 * @throws KubernetesError `ERR_KUBE_MANIFEST` for an unusable annotation value.
 */
export function buildPodPatch(pod: PodTemplate, options: InjectOptions, base = ""): PodInjection {
  const o = resolved(options);
  const own = pod.metadata?.annotations ?? {};
  // Namespace annotations are inherited; the pod's own win (Linkerd copies the namespace's config.linkerd.io/* onto the pod).
  const annotations: Record<string, string> = { ...(options.namespaceAnnotations ?? {}), ...own };
  const spec = pod.spec ?? {};
  const containers = spec.containers ?? [];
  const initContainers = spec.initContainers ?? [];

  const inject = annotations[INJECT_ANNOTATION];
  if (inject !== undefined && !(INJECT_VALUES as readonly string[]).includes(inject)) {
    throw new KubernetesError("ERR_KUBE_MANIFEST", `${INJECT_ANNOTATION}: "${inject}" is not one of ${INJECT_VALUES.join(", ")}`);
  }
  if ([...containers, ...initContainers].some((c) => c.name === PROXY_CONTAINER)) return { injected: false, reason: "already-meshed", message: `it has a ${PROXY_CONTAINER} container already` };
  if (inject === "disabled") return { injected: false, reason: "disabled", message: `${INJECT_ANNOTATION}: disabled` };
  if (o.requireAnnotation && inject === undefined) return { injected: false, reason: "not-enabled", message: `neither the pod nor its namespace has ${INJECT_ANNOTATION}: enabled` };
  if (spec.hostNetwork === true) return { injected: false, reason: "host-network", message: "hostNetwork: true (the redirect would capture the node's traffic)" };
  const ports = workloadPorts(containers);
  const workloadPort = ports[0];
  // A connection that was not redirected (no original destination) and has no transport header goes to the first port.
  if (workloadPort === undefined) return { injected: false, reason: "no-ports", message: "no container declares a TCP port for the proxy to forward to" };

  const warnings: string[] = [];
  const policy = annotations[DEFAULT_INBOUND_POLICY_ANNOTATION] ?? o.defaultInboundPolicy;
  if (!DEFAULT_POLICIES.includes(policy)) throw new KubernetesError("ERR_KUBE_MANIFEST", `${DEFAULT_INBOUND_POLICY_ANNOTATION}: "${policy}" is not one of ${DEFAULT_POLICIES.join(", ")}`);
  const portList = (name: string): number[] => {
    const text = annotations[name];
    const list = parsePortList(text);
    if (text !== undefined && text.trim() !== "" && list.length === 0) throw new KubernetesError("ERR_KUBE_MANIFEST", `${name}: "${text}" is not a list of ports or ranges`);
    return list;
  };
  // Linkerd adds an opaque-ports annotation listing only the default opaque ports the pod exposes.
  const opaqueAnnotation = annotations[OPAQUE_PORTS_ANNOTATION];
  const opaque = opaqueAnnotation === undefined ? DEFAULT_OPAQUE_PORTS.filter((p) => ports.includes(p)) : portList(OPAQUE_PORTS_ANNOTATION);
  const skip = portList(SKIP_INBOUND_PORTS_ANNOTATION);
  const requireIdentity = portList(REQUIRE_IDENTITY_PORTS_ANNOTATION);
  const logLevel = annotations[PROXY_LOG_LEVEL_ANNOTATION];
  if (logLevel !== undefined && !PINO_LEVELS.includes(logLevel)) warnings.push(`${PROXY_LOG_LEVEL_ANNOTATION}: "${logLevel}" is not one of ${PINO_LEVELS.join(", ")}; the proxy logs at info`);
  const native = annotations[NATIVE_SIDECAR_ANNOTATION] === undefined ? o.nativeSidecar : annotations[NATIVE_SIDECAR_ANNOTATION] === "true";
  for (const c of containers) for (const p of c.ports ?? []) if (p.protocol === "UDP") warnings.push(`container ${c.name ?? "?"} port ${p.containerPort ?? "?"}/UDP is not proxied`);

  const ns = o.controlPlaneNamespace;
  const svc = (name: string, port: number): string => `${name}.${ns}.svc.${o.clusterDomain}.:${port}`;
  const env: Json[] = [
    { name: "_pod_name", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
    { name: "_pod_ns", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
    { name: "_pod_nodeName", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
    { name: "_pod_sa", valueFrom: { fieldRef: { fieldPath: "spec.serviceAccountName" } } },
    { name: "MESHTLS_PROXY_IDENTITY", value: `$(_pod_sa).$(_pod_ns).serviceaccount.identity.${ns}.${o.trustDomain}` },
    { name: "MESHTLS_PROXY_TOKEN_FILE", value: TOKEN_FILE },
    { name: "MESHTLS_PROXY_TRUST_ANCHORS", value: `${TRUST_ROOTS_DIR}/${TRUST_ROOTS_KEY}` },
    { name: "MESHTLS_PROXY_IDENTITY_ADDR", value: svc("meshtls-identity", 8080) },
    { name: "MESHTLS_PROXY_IDENTITY_NAME", value: controlPlaneIdentity("identity", o) },
    { name: "MESHTLS_PROXY_DESTINATION_ADDR", value: svc("meshtls-destination", 8086) },
    { name: "MESHTLS_PROXY_DESTINATION_NAME", value: controlPlaneIdentity("destination", o) },
    { name: "MESHTLS_PROXY_POLICY_ADDR", value: svc("meshtls-destination", 8090) },
    { name: "MESHTLS_PROXY_WORKLOAD_NAME", value: '{"ns":"$(_pod_ns)","pod":"$(_pod_name)"}' },
    { name: "MESHTLS_PROXY_CONTEXT_TOKEN", value: '{"ns":"$(_pod_ns)","nodeName":"$(_pod_nodeName)","pod":"$(_pod_name)"}' },
    { name: "MESHTLS_PROXY_INBOUND", value: `0.0.0.0:${INBOUND_PORT}` },
    { name: "MESHTLS_PROXY_OUTBOUND", value: `127.0.0.1:${OUTBOUND_PORT}` },
    // Probes come from the kubelet on the pod IP.
    { name: "MESHTLS_PROXY_ADMIN", value: `0.0.0.0:${ADMIN_PORT}` },
    { name: "MESHTLS_PROXY_WORKLOAD", value: `127.0.0.1:${workloadPort}` },
    { name: "MESHTLS_PROXY_INBOUND_PORTS", value: ports.join(",") },
    { name: "MESHTLS_PROXY_DEFAULT_POLICY", value: policy },
    { name: "MESHTLS_PROXY_CLUSTER_NETWORKS", value: DEFAULT_CLUSTER_NETWORKS },
    // Behind the init container's nat rules the proxy reads each redirected connection's original destination: the
    // application is never told about it (inbound: the original port; outbound: the original address, not an HTTP proxy).
    { name: "MESHTLS_PROXY_TRANSPARENT", value: "true" },
    // Our init container (meshtls init) adds the redirect check's probe rule at the proxy's default address; Linkerd's proxy-init would not.
    { name: "MESHTLS_PROXY_REDIRECT_CHECK_INTERVAL", value: REDIRECT_CHECK_INTERVAL },
  ];
  if (opaque.length > 0) env.push({ name: "MESHTLS_PROXY_OPAQUE_PORTS", value: opaque.join(",") });
  if (skip.length > 0) env.push({ name: "MESHTLS_PROXY_SKIP_PORTS", value: skip.join(",") });
  if (requireIdentity.length > 0) env.push({ name: "MESHTLS_PROXY_REQUIRE_IDENTITY_PORTS", value: requireIdentity.join(",") });
  if (logLevel !== undefined && PINO_LEVELS.includes(logLevel)) env.push({ name: "MESHTLS_PROXY_LOG_LEVEL", value: logLevel });

  const proxy: Json = {
    name: PROXY_CONTAINER,
    image: o.proxyImage,
    imagePullPolicy: "IfNotPresent",
    env,
    ports: [
      { name: "linkerd-proxy", containerPort: INBOUND_PORT },
      { name: "linkerd-admin", containerPort: ADMIN_PORT },
    ],
    livenessProbe: { httpGet: { path: "/live", port: ADMIN_PORT }, initialDelaySeconds: 10 },
    readinessProbe: { httpGet: { path: "/ready", port: ADMIN_PORT }, initialDelaySeconds: 2 },
    ...(native ? { restartPolicy: "Always", startupProbe: { httpGet: { path: "/ready", port: ADMIN_PORT }, periodSeconds: 1, failureThreshold: 120 } } : {}),
    securityContext: {
      runAsUser: PROXY_UID,
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
    },
    terminationMessagePolicy: "FallbackToLogsOnError",
    volumeMounts: [
      { name: END_ENTITY_VOLUME, mountPath: END_ENTITY_DIR },
      { name: TOKEN_VOLUME, mountPath: TOKEN_DIR, readOnly: true },
      { name: TRUST_ROOTS_VOLUME, mountPath: TRUST_ROOTS_DIR, readOnly: true },
    ],
  };
  const init: Json = {
    name: INIT_CONTAINER,
    image: o.initImage,
    imagePullPolicy: "IfNotPresent",
    args: [
      "init",
      "--incoming-proxy-port", String(INBOUND_PORT),
      "--outgoing-proxy-port", String(OUTBOUND_PORT),
      "--proxy-uid", String(PROXY_UID),
      "--inbound-ports-to-ignore", [4190, ADMIN_PORT, 4567, 4568, ...skip].join(","),
      "--outbound-ports-to-ignore", "4567,4568",
    ],
    securityContext: {
      capabilities: { add: ["NET_ADMIN", "NET_RAW"] },
      runAsUser: 65534,
      runAsGroup: 65534,
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      privileged: false,
      allowPrivilegeEscalation: false,
      seccompProfile: { type: "RuntimeDefault" },
    },
    terminationMessagePolicy: "FallbackToLogsOnError",
    volumeMounts: [{ name: XTABLES_VOLUME, mountPath: "/run" }],
  };

  const namespace = pod.metadata?.namespace ?? options.namespace;
  const addedAnnotations: Record<string, string> = {
    [CREATED_BY_ANNOTATION]: `meshtls/inject ${o.version}`,
    [PROXY_VERSION_ANNOTATION]: o.version,
    [TRUST_ROOT_SHA256_ANNOTATION]: trustRootSha256(o.trustAnchorsPem),
  };
  if (opaqueAnnotation === undefined && opaque.length > 0) addedAnnotations[OPAQUE_PORTS_ANNOTATION] = opaque.join(",");
  const addedLabels: Record<string, string> = { [CONTROL_PLANE_NS_LABEL]: ns };
  if (namespace !== undefined) addedLabels[WORKLOAD_NS_LABEL] = namespace;

  const patch: JsonPatch = [];
  const add = (path: string, value: unknown): void => {
    patch.push({ op: "add", path: `${base}${path}`, value } satisfies AddOperation);
  };
  if (pod.metadata === undefined) add("/metadata", {});
  for (const [field, values] of [["annotations", addedAnnotations], ["labels", addedLabels]] as const) {
    if (pod.metadata?.[field] === undefined) add(`/metadata/${field}`, values);
    else for (const [key, value] of Object.entries(values)) add(`/metadata/${field}/${escapePointer(key)}`, value);
  }
  if (pod.spec === undefined) add("/spec", {});
  if (spec.volumes === undefined) add("/spec/volumes", []);
  if (spec.initContainers === undefined) add("/spec/initContainers", []);
  add("/spec/volumes/-", { name: XTABLES_VOLUME, emptyDir: {} });
  add("/spec/initContainers/0", init);
  add("/spec/volumes/-", { name: END_ENTITY_VOLUME, emptyDir: { medium: "Memory" } });
  add("/spec/volumes/-", { name: TOKEN_VOLUME, projected: { sources: [{ serviceAccountToken: { path: TOKEN_VOLUME, expirationSeconds: TOKEN_EXPIRATION_SECONDS, audience: TOKEN_AUDIENCE } }] } });
  add("/spec/volumes/-", { name: TRUST_ROOTS_VOLUME, configMap: { name: TRUST_ROOTS_CONFIGMAP, items: [{ key: TRUST_ROOTS_KEY, path: TRUST_ROOTS_KEY }] } });
  // A native sidecar starts after linkerd-init and before the app containers; otherwise the proxy is the first container.
  if (native) add("/spec/initContainers/1", proxy);
  else add("/spec/containers/0", proxy);
  return { injected: true, patch, warnings };
}
