import { buildPodPatch, CONTROL_PLANE_COMPONENT_LABEL, createKubeApiFromConfig, INJECT_ANNOTATION, type Namespace, type Pod } from "@meshtls/kubernetes";
import { CliError, describeError } from "../errors.ts";
import { readKubernetesPods } from "../mesh/edges.ts";
import type { CheckStatus } from "./check.ts";

/** A pod the injector would have meshed that runs without a proxy. */
export interface UnmeshedPod {
  namespace: string;
  name: string;
  /** Where `linkerd.io/inject: enabled` came from. */
  annotatedOn: "namespace" | "pod";
}

/** A pod the injector would refuse to mesh because of an error (it admits such pods without a proxy). */
export interface UnmeshablePod {
  namespace: string;
  name: string;
  reason: string;
}

/**
 * Namespaces the webhook configuration of `meshtls install` leaves out
 * (its `namespaceSelector`, `packages/kubernetes/src/install.ts`): the API
 * server never sends their pods to the injector.
 */
function webhookSkips(namespace: Namespace | undefined, name: string): boolean {
  return ["kube-system", "cert-manager"].includes(name) || namespace?.metadata.labels?.["config.linkerd.io/admission-webhooks"] === "disabled";
}

/**
 * The pods the injector webhook would mesh but that have no proxy: it was
 * unreachable when they were created, and the API server admitted them as
 * they were (`failurePolicy: Ignore`, as Linkerd). The decision is the
 * webhook's own (`buildPodPatch` with `requireAnnotation`, the namespace's
 * annotations inherited, as `reviewAdmission` calls it), so the check and
 * the injector cannot disagree. Finished pods and those being deleted are
 * left out; so are control-plane pods and namespaces the webhook never sees.
 */
export function findUnmeshedPods(pods: readonly Pod[], namespaces: readonly Namespace[]): { unmeshed: UnmeshedPod[]; unmeshable: UnmeshablePod[]; injected: number } {
  const byName = new Map(namespaces.map((n) => [n.metadata.name, n]));
  const unmeshed: UnmeshedPod[] = [];
  const unmeshable: UnmeshablePod[] = [];
  let injected = 0;
  for (const pod of pods) {
    const namespaceName = pod.metadata.namespace ?? "default";
    const namespace = byName.get(namespaceName);
    const phase = pod.status?.phase;
    if (phase === "Succeeded" || phase === "Failed" || pod.metadata.deletionTimestamp !== undefined) continue;
    if (webhookSkips(namespace, namespaceName) || pod.metadata.labels?.[CONTROL_PLANE_COMPONENT_LABEL] !== undefined) continue;
    const namespaceAnnotations = namespace?.metadata.annotations ?? {};
    const enabled = (value: string | undefined): boolean => value === "enabled" || value === "ingress";
    const annotatedOn = enabled(pod.metadata.annotations?.[INJECT_ANNOTATION]) ? "pod" : enabled(namespaceAnnotations[INJECT_ANNOTATION]) ? "namespace" : undefined;
    try {
      // Only the decision matters here: the patch (and the anchors' hash it carries) is discarded.
      const decision = buildPodPatch(pod, { trustAnchorsPem: "", namespaceAnnotations, requireAnnotation: true, namespace: namespaceName });
      if (decision.injected) unmeshed.push({ namespace: namespaceName, name: pod.metadata.name, annotatedOn: annotatedOn ?? "pod" });
      else if (decision.reason === "already-meshed" && annotatedOn !== undefined) injected++;
    } catch (error) {
      unmeshable.push({ namespace: namespaceName, name: pod.metadata.name, reason: describeError(error) });
    }
  }
  return { unmeshed, unmeshable, injected };
}

/** `meshtls check --kubernetes`: pods of injected namespaces (or annotated themselves) running without a proxy. */
export async function checkInjectedPods(options: { kubeconfig?: string; namespace?: string; timeoutMs?: number }, add: (check: string, status: CheckStatus, message: string) => void): Promise<void> {
  let pods: Pod[];
  let namespaces: Namespace[];
  try {
    pods = await readKubernetesPods(options);
    const api = createKubeApiFromConfig(options.kubeconfig === undefined ? {} : { kubeconfig: options.kubeconfig });
    const timeoutMs = options.timeoutMs ?? 10_000;
    namespaces =
      options.namespace === undefined
        ? ((await api.request<{ items?: Namespace[] }>({ method: "GET", path: "/api/v1/namespaces", timeoutMs })).items ?? [])
        : [await api.request<Namespace>({ method: "GET", path: `/api/v1/namespaces/${encodeURIComponent(options.namespace)}`, timeoutMs })];
  } catch (error) {
    add("injected-pods", "error", error instanceof CliError ? error.message : `cannot read namespaces from the Kubernetes API: ${describeError(error)}`);
    return;
  }
  const found = findUnmeshedPods(pods, namespaces);
  for (const pod of found.unmeshed) {
    const where = pod.annotatedOn === "namespace" ? "in an injected namespace" : `annotated ${INJECT_ANNOTATION}: enabled`;
    add(
      "injected-pods",
      "error",
      `pod ${pod.namespace}/${pod.name} ${where} has no proxy (admitted while the injector was unreachable?) — restart it (kubectl -n ${pod.namespace} delete pod ${pod.name}, or roll its workload out again) so that the injector meshes it`,
    );
  }
  for (const pod of found.unmeshable) {
    add("injected-pods", "warning", `pod ${pod.namespace}/${pod.name} cannot be meshed, so the injector admits it without a proxy: ${pod.reason}`);
  }
  if (found.unmeshed.length === 0) {
    const scope = options.namespace === undefined ? "the cluster" : `namespace ${options.namespace}`;
    add("injected-pods", "ok", found.injected === 0 ? `no pod in ${scope} is meant to be injected (${INJECT_ANNOTATION}: enabled on it or its namespace)` : `every pod meant to be injected in ${scope} has its proxy (${found.injected})`);
  }
}
