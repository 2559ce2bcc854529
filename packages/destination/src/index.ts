// Client: what a proxy uses.
export { createDestinationClient } from "./client.js";
export type { BackoffOptions, DestinationClient, DestinationClientOptions, Endpoint, EndpointSet, Resolution } from "./client.js";
export { RECONNECT_BACKOFF, reconnectDelayMs } from "./backoff.js";
export { createRedialingChannel } from "./channel.js";
export type { RedialingChannel } from "./channel.js";

// Server and endpoint registries: what the destination service composes.
export { createDestinationServer, peerOf } from "./server.js";
export type { DestinationServerHandle, DestinationServerOptions } from "./server.js";
export { buildProfile, DEFAULT_RETRY_BUDGET } from "./profile.js";
export type { ProfileSubject } from "./profile.js";
export { createStaticRegistry, DEFAULT_INBOUND_PORT, DEFAULT_WEIGHT } from "./registry.js";
export type {
  EndpointRegistry,
  RegistryChange,
  RegistryEndpoint,
  RegistryService,
  RegistryServicePort,
  RegistrySnapshot,
  RegistryWorkload,
  StaticRegistry,
} from "./registry.js";
export { createFileRegistry } from "./file-registry.js";
export type { FileRegistry, FileRegistryOptions, RegistryReload } from "./file-registry.js";
export { MAX_REGISTRY_FILE_BYTES, parseRegistry } from "./registry-file-format.js";
export { DEFAULT_AUTHORITY_PORT, parseAuthority, parseContextToken } from "./authority.js";
export type { ContextToken, Target } from "./authority.js";

// Inbound policy (InboundServerPolicies): a protocol-free controller over a policy model.
export { createInboundPolicyController, policySourceOf } from "./policy/controller.js";
export type { InboundPolicyController, InboundPolicyControllerOptions, PortQuery } from "./policy/controller.js";
export { createInboundPolicyServer } from "./policy/grpc.js";
export type { InboundPolicyServerHandle, InboundPolicyServerOptions } from "./policy/grpc.js";
export { resolveInboundServer } from "./policy/resolve.js";
export type { ResolveOptions } from "./policy/resolve.js";
export { parseWorkload, MAX_WORKLOAD_BYTES } from "./policy/workload.js";
export type { WorkloadRef } from "./policy/workload.js";
export { ALL_NETWORKS, DEFAULT_CLUSTER_NETWORKS, cidrContains, parseCidr } from "./policy/cidr.js";
export { DEFAULT_POLICIES, EMPTY_POLICY_MODEL, PROXY_PROTOCOLS, selectorMatches } from "./policy/model.js";
export type {
  AuthenticationRef,
  AuthorizationPolicy,
  Cidr,
  DefaultPolicy,
  IdentityRef,
  LabelSelector,
  LabelSelectorRequirement,
  MeshTLSAuthentication,
  NetworkAuthentication,
  PolicyModel,
  PolicyServer,
  PolicySource,
  PolicyWorkload,
  ProxyProtocolName,
  ServerAuthorization,
} from "./policy/model.js";

// Errors and logging.
export { DestinationError } from "./errors.js";
export type { DestinationErrorCode } from "./errors.js";
export { noopLogger } from "./logger.js";
export type { Logger } from "./logger.js";
