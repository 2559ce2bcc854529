// The proxy, composed.
export { createProxy } from "./proxy.js";
export type { CreateProxyOptions, Proxy, ProxyAddresses } from "./proxy.js";

// What proxy-core reads from: satisfied by @meshtls/identity and @meshtls/destination.
export type { Credentials, CredentialSource, Endpoint, EndpointResolver, EndpointSet, Resolution, TrustBundleSource } from "./sources.js";

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
export { detectTls, parseClientHello } from "./detect-tls.js";
export type { ClientHelloParse, Detection, DetectTlsOptions } from "./detect-tls.js";
export { certificateNotAfter, createTlsCredentials, namesIdentity, peerIdentity, SESSION_TICKET_LIFETIME_S, subjectAltNames } from "./credentials.js";
export type { CreateTlsCredentialsOptions, ResumableSession, TlsCredentials } from "./credentials.js";
export { encodeHeader, readTransportHeader, TRANSPORT_ALPN } from "./transport-header.js";
export type { ReadTransportHeaderOptions } from "./transport-header.js";
export { createInboundPolicy, identityAllowed, inNetworks, parseDefaultPolicy, parseNetworks } from "./policy.js";
export type { AuthorizeDecision, AuthorizeInput, CreateInboundPolicyOptions, DefaultPolicy, DenyReason, InboundPolicy, PortPolicy } from "./policy.js";
export { createProxyMetrics, OVERFLOW_LABEL_VALUE } from "./metrics.js";
export type { ConnectionLeg, CountedSocket, CreateProxyMetricsOptions, ProxyMetrics, RefusedListener } from "./metrics.js";
export { createAdminServer, isLoopback } from "./admin.js";
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
