/**
 * Every failure this package reports, as a stable string a caller can switch
 * on. The token validator reports `IdentityError`s instead (the identity
 * service's seam); these are for the API client, the watch loop and config.
 */
export type KubernetesErrorCode =
  /** The API server answered an HTTP error; `httpStatus` and `reason` say which. */
  | "ERR_KUBE_API_STATUS"
  /** The API server could not be reached, or the connection broke. */
  | "ERR_KUBE_API_UNREACHABLE"
  /** The API server answered something that is not the expected JSON. */
  | "ERR_KUBE_API_RESPONSE"
  /** A SelfSubjectAccessReview said this process may not do what it needs. */
  | "ERR_KUBE_ACCESS_DENIED"
  /** The kubeconfig (or in-cluster configuration) cannot be used. */
  | "ERR_KUBE_CONFIG"
  /** The caller's AbortSignal fired. */
  | "ERR_KUBE_ABORTED"
  /** A manifest or an AdmissionReview that cannot be read or meshed (not an object, bad annotation value). */
  | "ERR_KUBE_MANIFEST"
  /** A JSON Patch operation whose path does not resolve. */
  | "ERR_KUBE_PATCH";

/** The one error class of `@meshtls/kubernetes`. */
export class KubernetesError extends Error {
  readonly code: KubernetesErrorCode;
  /** HTTP status of an `ERR_KUBE_API_STATUS` (or the `code` of an in-stream ERROR Status). */
  readonly httpStatus: number | undefined;
  /** The Status body's `reason` (e.g. `Expired`, `Forbidden`), when there was one. */
  readonly reason: string | undefined;

  constructor(code: KubernetesErrorCode, message: string, options?: { cause?: unknown; httpStatus?: number; reason?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "KubernetesError";
    this.code = code;
    this.httpStatus = options?.httpStatus;
    this.reason = options?.reason;
  }
}
