// Identity: ServiceAccount tokens reviewed by the API server.
export { checkAccess, createTokenReviewValidator } from "./token-review-validator.ts";
export type { TokenReviewValidatorOptions } from "./token-review-validator.ts";

// The API server and the list+watch loop.
export { createKubeApi, createKubeApiFromConfig } from "./api-client.ts";
export type { KubeApi, KubeApiOptions, KubeConfigSource, KubeRequest, KubeWatchRequest, WatchEvent } from "./api-client.ts";
export { startReflector } from "./reflector.ts";
export type { Reflector, ReflectorDelta, ReflectorOptions } from "./reflector.ts";
export type { Container, EndpointSlice, EndpointSliceEndpoint, KubeObject, Namespace, ObjectMeta, Pod, Service, ServicePort } from "./types.ts";

// Errors and logging.
export { KubernetesError } from "./errors.ts";
export type { KubernetesErrorCode } from "./errors.ts";
export { noopLogger } from "./logger.ts";
export type { Logger } from "./logger.ts";

// The destination service's sources: endpoints and inbound policy from the API server.
export { createKubernetesSource, SERVICE_NAME_LABEL } from "./kubernetes-source.ts";
export type { KubernetesSource, KubernetesSourceOptions } from "./kubernetes-source.ts";
export { toAuthorizationPolicy, toMeshTLSAuthentication, toNetworkAuthentication, toServer, toServerAuthorization } from "./policy-crds.ts";
export type { Converted } from "./policy-crds.ts";
export {
  CONTROL_PLANE_NS_LABEL,
  DEFAULT_INBOUND_POLICY_ANNOTATION,
  DEFAULT_OPAQUE_PORTS,
  inboundPortOf,
  OPAQUE_PORTS_ANNOTATION,
  parsePortList,
  podMetricLabels,
  SKIP_INBOUND_PORTS_ANNOTATION,
} from "./pod-facts.ts";

// Meshing pods: the patch shared by `meshtls inject` and the injector webhook.
export {
  buildPodPatch,
  controlPlaneIdentity,
  INJECT_ANNOTATION,
  PROXY_UID,
  TOKEN_AUDIENCE,
  TOKEN_EXPIRATION_SECONDS,
  TOKEN_FILE,
  TRUST_ROOT_SHA256_ANNOTATION,
  TRUST_ROOTS_CONFIGMAP,
  TRUST_ROOTS_DIR,
  TRUST_ROOTS_KEY,
  trustRootSha256,
} from "./inject.ts";
export type { InjectOptions, PodInjection, SkipReason } from "./inject.ts";
export { injectObject, POD_TEMPLATE_PATHS } from "./inject-workloads.ts";
export type { InjectReport } from "./inject-workloads.ts";
export { applyPatch, escapePointer } from "./json-patch.ts";
export type { AddOperation, JsonPatch } from "./json-patch.ts";
export { reviewAdmission } from "./admission.ts";
export type { AdmissionOptions, AdmissionResponse, AdmissionReviewResult } from "./admission.ts";
export {
  buildInstallManifests,
  CONTROL_PLANE_COMPONENT_LABEL,
  DESTINATION_TLS_SECRET,
  INJECTOR_TLS_SECRET,
  ISSUER_SECRET,
  policyCrds,
  TRUST_ANCHOR_SECRET,
  WEBHOOK_CONFIGURATION,
} from "./install.ts";
export type { InstallOptions, PemPair } from "./install.ts";
