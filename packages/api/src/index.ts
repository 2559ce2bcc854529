// The Linkerd 2 proxy API: generated message codecs and grpc-js service definitions.
export {
  AddrSet,
  AuthorityOverride,
  DestinationClient,
  DestinationProfile,
  DestinationService,
  GetDestination,
  HttpStatusRange,
  NoEndpoints,
  ProtocolHint,
  ProtocolHint_H2,
  ProtocolHint_Opaque,
  ProtocolHint_OpaqueTransport,
  RequestMatch,
  ResponseClass,
  ResponseMatch,
  RetryBudget,
  // Service-profile names that would clash with the HTTP route API's.
  PathMatch as ProfilePathMatch,
  Route as ProfileRoute,
  TlsIdentity,
  TlsIdentity_DnsLikeIdentity,
  TlsIdentity_UriLikeIdentity,
  Update,
  WeightedAddr,
  WeightedAddrSet,
  WeightedDst,
} from "./gen/destination.js";
export type { DestinationServer } from "./gen/destination.js";
export { CertifyRequest, CertifyResponse, IdentityClient, IdentityService } from "./gen/identity.js";
export type { IdentityServer } from "./gen/identity.js";
export { IPAddress, IPNetwork, IPv6, TcpAddress } from "./gen/net.js";
export {
  Authn,
  Authn_PermitMeshTLS,
  Authn_PermitMeshTLS_PermitClientIdentities,
  Authn_PermitUnauthenticated,
  Authz,
  GrpcRoute,
  HttpLocalRateLimit,
  HttpRoute,
  Identity,
  IdentitySuffix,
  InboundServerPoliciesClient,
  InboundServerPoliciesService,
  Network,
  PortSpec,
  ProxyProtocol,
  ProxyProtocol_Detect,
  ProxyProtocol_Grpc,
  ProxyProtocol_Http1,
  ProxyProtocol_Http2,
  ProxyProtocol_Opaque,
  ProxyProtocol_Tls,
  // `Server` would read as a grpc-js server in callers' code.
  Server as InboundServer,
} from "./gen/inbound.js";
export type { InboundServerPoliciesServer } from "./gen/inbound.js";
export { Metadata, Resource as MetadataResource } from "./gen/meta.js";
export { HeaderMatch, HostMatch, HttpRouteMatch, PathMatch, QueryParamMatch } from "./gen/http_route.js";
export { HttpMethod, HttpMethod_Registered } from "./gen/http_types.js";
export { GrpcRouteMatch, GrpcRpcMatch } from "./gen/grpc_route.js";
export { Duration } from "./gen/google/protobuf/duration.js";
export { Header as TransportHeader, SessionProtocol as TransportSessionProtocol } from "./gen/opaque_transport.js";
export { Timestamp } from "./gen/google/protobuf/timestamp.js";
export type { MessageFns } from "./gen/net.js";

// Helpers for the net encoding, the opaque transport header and timestamps.
export { ipAddressToString, ipToIpAddress, ipToTcpAddress, tcpAddressToIp, tcpAddressToString } from "./net.js";
export {
  decodeTransportHeader,
  encodeTransportHeader,
  MAX_TRANSPORT_HEADER_BYTES,
  TRANSPORT_HEADER_ALPN,
  TRANSPORT_HEADER_PREFACE,
} from "./transport-header.js";
export type { DecodedTransportHeader, TransportHeaderFields, TransportSessionProtocolKind } from "./transport-header.js";
export { dateToTimestamp, timestampToDate } from "./timestamp.js";
export { refuseMalformedRequests } from "./malformed-requests.js";
export type { RefuseMalformedRequestsOptions } from "./malformed-requests.js";

// Errors.
export { ApiError } from "./errors.js";
export type { ApiErrorCode } from "./errors.js";
