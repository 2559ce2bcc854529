/**
 * The injector webhook's protocol-free core: an AdmissionReview v1 in, the
 * AdmissionReview to answer out (k8s `admission/v1/types.go`; Linkerd's
 * `controller/webhook/server.go`). The patch is `buildPodPatch`'s, the one
 * `meshtls inject` applies.
 */

import { KubernetesError } from "./errors.ts";
import { buildPodPatch, type InjectOptions } from "./inject.ts";

export interface AdmissionOptions extends Omit<InjectOptions, "namespaceAnnotations" | "namespace" | "requireAnnotation"> {
  /** The annotations of a namespace (its `linkerd.io/inject` and `config.linkerd.io/*` are inherited). Default: none. */
  namespaceAnnotations?: (namespace: string) => Promise<Record<string, string>>;
  /** Answer `allowed: false` when a pod cannot be meshed because of an error. Default false: the pod is created unmeshed, with a warning. */
  denyOnError?: boolean;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  patchType?: "JSONPatch";
  /** Base64 of the JSON Patch. */
  patch?: string;
  warnings?: string[];
  status?: { code: number; message: string };
}

export interface AdmissionReviewResult {
  /** The review to send back: the request's apiVersion and kind, with `response`. */
  review: { apiVersion: string; kind: string; response: AdmissionResponse };
  /** What happened, for logs and metrics: `injected`, a skip reason, `ignored` (not a Pod CREATE), `error`. */
  outcome: string;
  message?: string;
}

const API_VERSION = "admission.k8s.io/v1";

/**
 * Answers one AdmissionReview.
 * @throws KubernetesError `ERR_KUBE_MANIFEST` when `body` is not an
 * AdmissionReview v1 with a `request.uid` (the server answers 400).
 */
export async function reviewAdmission(body: unknown, options: AdmissionOptions): Promise<AdmissionReviewResult> {
  const review = (typeof body === "object" && body !== null ? body : {}) as { apiVersion?: unknown; kind?: unknown; request?: unknown };
  if (review.apiVersion !== API_VERSION || review.kind !== "AdmissionReview") {
    throw new KubernetesError("ERR_KUBE_MANIFEST", `not an ${API_VERSION} AdmissionReview (apiVersion ${JSON.stringify(review.apiVersion)}, kind ${JSON.stringify(review.kind)})`);
  }
  const request = (typeof review.request === "object" && review.request !== null ? review.request : undefined) as
    | { uid?: unknown; kind?: { kind?: unknown }; operation?: unknown; namespace?: unknown; object?: unknown }
    | undefined;
  if (request === undefined) throw new KubernetesError("ERR_KUBE_MANIFEST", "the AdmissionReview has no request");
  if (typeof request.uid !== "string" || request.uid === "") throw new KubernetesError("ERR_KUBE_MANIFEST", "the AdmissionReview's request has no uid");
  const uid = request.uid;
  const answer = (response: Omit<AdmissionResponse, "uid">, outcome: string, message?: string): AdmissionReviewResult => ({
    review: { apiVersion: API_VERSION, kind: "AdmissionReview", response: { uid, ...response } },
    outcome,
    ...(message === undefined ? {} : { message }),
  });
  const pod = request.object;
  if (request.kind?.kind !== "Pod" || request.operation !== "CREATE" || typeof pod !== "object" || pod === null) {
    return answer({ allowed: true }, "ignored");
  }
  const namespace = typeof request.namespace === "string" && request.namespace !== "" ? request.namespace : undefined;
  try {
    const inherited = namespace === undefined || options.namespaceAnnotations === undefined ? {} : await options.namespaceAnnotations(namespace);
    const { namespaceAnnotations: _lookup, denyOnError: _deny, ...inject } = options;
    const injection = buildPodPatch(pod, { ...inject, namespaceAnnotations: inherited, requireAnnotation: true, ...(namespace === undefined ? {} : { namespace }) });
    if (!injection.injected) return answer({ allowed: true }, injection.reason, injection.message);
    return answer(
      {
        allowed: true,
        patchType: "JSONPatch",
        patch: Buffer.from(JSON.stringify(injection.patch)).toString("base64"),
        ...(injection.warnings.length === 0 ? {} : { warnings: injection.warnings }),
      },
      "injected",
    );
  } catch (error) {
    const message = `meshtls injector: not meshed: ${error instanceof Error ? error.message : String(error)}`;
    if (options.denyOnError === true) return answer({ allowed: false, status: { code: 403, message } }, "error", message);
    return answer({ allowed: true, warnings: [message] }, "error", message);
  }
}
