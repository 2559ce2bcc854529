// The proxy, composed.
export { createProxy } from "./proxy.js";
export type { CreateProxyOptions, Proxy, ProxyAddresses } from "./proxy.js";

// What proxy-core reads from: satisfied by @meshtls/identity and @meshtls/destination.
export type { Credentials, CredentialSource, Endpoint, EndpointResolver, EndpointSet, PolicySource, Resolution, TrustBundleSource } from "./sources.js";

// Inbound policy: Linkerd's model, the flags' static source, a settable store.
export { ALL_NETWORKS, authorize, checkServerPolicy, DEFAULT_CLUSTER_NETWORKS, defaultServerPolicy, identityAllowed, inNetworks, meshTlsAuthentication, parseDefaultPolicy, parseNetworks, policyLabel } from "./policy.js";
export type { Authentication, Authorization, AuthorizeDecision, AuthorizeInput, DefaultPolicy, DenyReason, PolicyMeta, PolicyNetwork, ServerPolicy, ServerProtocol } from "./policy.js";
export { createStaticPolicySource, flagPolicies } from "./static-policy.js";
export type { PortOverrides, StaticPolicyOptions } from "./static-policy.js";
export { createPolicyStore } from "./policy-store.js";
export { createPolicyWatcher } from "./policy-watcher.js";
export type { CreatePolicyWatcherOptions, PolicyWatcher, PolicyWatchStream } from "./policy-watcher.js";
export { serverPolicyFromProto } from "./policy-proto.js";
export type { CreatePolicyStoreOptions, PolicyStore } from "./policy-store.js";

// Errors, logging, TLS state.
export { ProxyError } from "./errors.js";
export type { ProxyErrorCode } from "./errors.js";
export { noopLogger } from "./logger.js";
export type { Logger } from "./logger.js";
export type { NoTlsReason, TlsState } from "./tls-state.js";

// The layers, for integrators building their own stacks.
export { createInbound } from "./inbound.js";
export type { CreateInboundOptions, Inbound } from "./inbound.js";
export { createOutbound, normalizeAuthority } from "./outbound.js";
export type { CreateOutboundOptions, Outbound, Route } from "./outbound.js";
export type { OutboundTarget } from "./outbound/target.js";
export { createDiscover } from "./outbound/discover.js";
export type { CreateDiscoverOptions, Discover } from "./outbound/discover.js";
export { createConnectOutbound } from "./outbound/connect.js";
export type { ConnectOutbound, CreateConnectOutboundOptions, OutboundConnection } from "./outbound/connect.js";
export { createHttpProxyServer } from "./outbound/http-proxy.js";
export type { CreateHttpProxyServerOptions } from "./outbound/http-proxy.js";
export { createRouteServer } from "./outbound/route.js";
export { createTransparentServer } from "./outbound/transparent.js";
export type { CreateTransparentServerOptions, TransparentIntercept } from "./outbound/transparent.js";
export type { CreateRouteServerOptions } from "./outbound/route.js";
export { detectTls, parseClientHello } from "./detect-tls.js";
export type { ClientHelloParse, Detection, DetectTlsOptions } from "./detect-tls.js";
export {
  certificateNotAfter,
  createTlsCredentials,
  DEFAULT_TLS_GROUPS,
  groupLabel,
  groupsForOpenssl,
  namesIdentity,
  negotiatedGroup,
  peerIdentity,
  SESSION_TICKET_LIFETIME_S,
  sessionKexGroup,
  subjectAltNames,
} from "./credentials.js";
export type { CreateTlsCredentialsOptions, ResumableSession, TlsCredentials } from "./credentials.js";
export { encodeHeader, readTransportHeader, TRANSPORT_ALPN } from "./transport-header.js";
export type { ReadTransportHeaderOptions } from "./transport-header.js";
export { acceptTarget, createInboundServer } from "./inbound/accept.js";
export type { OriginalDestinationLookup } from "./inbound/accept.js";
export { detectLayer } from "./inbound/detect.js";
export { createTerminateTls } from "./inbound/terminate-tls.js";
export type { CreateTerminateTlsOptions, Terminated } from "./inbound/terminate-tls.js";
export { opaqueTransportLayer } from "./inbound/opaque-transport.js";
export type { OpaqueTransportOptions } from "./inbound/opaque-transport.js";
export { authorizeTarget } from "./inbound/authorize.js";
export { createConnectWorkload, loopRefusal } from "./inbound/connect-workload.js";
export type { ConnectWorkload } from "./inbound/connect-workload.js";
export { isRefusal, refuse } from "./inbound/target.js";
export type { InboundTarget, Refusal } from "./inbound/target.js";
export { createProxyMetrics, OVERFLOW_LABEL_VALUE } from "./metrics.js";
export type { ConnectionLeg, CountedSocket, CreateProxyMetricsOptions, ProxyMetrics, RefusedListener } from "./metrics.js";
export { createTapHub } from "./tap.js";
export { createTapServer } from "./tap-server.js";
export type { CreateTapServerOptions, TapServer } from "./tap-server.js";
export type { CreateTapHubOptions, TapAuthzEvent, TapConnectionEvent, TapEvent, TapHub, TapRequestEvent, TapSink, TapSubscription, TapTls } from "./tap.js";
export { createAdminServer } from "./admin.js";
export type { AdminIdentity, AdminServer, CreateAdminServerOptions } from "./admin.js";
export { createOwnSockets } from "./own-sockets.js";
export type { CreateOwnSocketsOptions, ListenerKind, OwnSockets } from "./own-sockets.js";
export { createBalancer, endpointKey } from "./balancer.js";
export type { Balancer, CreateBalancerOptions } from "./balancer.js";
export { connectEndpoint } from "./connect-endpoint.js";
export type { ConnectEndpointOptions, EndpointConnection } from "./connect-endpoint.js";
export { forwardStreams } from "./forward.js";
export type { ForwardStreamsOptions } from "./forward.js";
export { formatHostPort, parseHostPort } from "./address.js";
export type { HostPort } from "./address.js";
