// The Linkerd 2 proxy API: generated message codecs and grpc-js service definitions.
export {
  AddrSet,
  AuthorityOverride,
  DestinationClient,
  DestinationService,
  GetDestination,
  NoEndpoints,
  ProtocolHint,
  ProtocolHint_H2,
  ProtocolHint_Opaque,
  ProtocolHint_OpaqueTransport,
  TlsIdentity,
  TlsIdentity_DnsLikeIdentity,
  TlsIdentity_UriLikeIdentity,
  Update,
  WeightedAddr,
  WeightedAddrSet,
} from "./gen/destination.js";
export type { DestinationServer } from "./gen/destination.js";
export { CertifyRequest, CertifyResponse, IdentityClient, IdentityService } from "./gen/identity.js";
export type { IdentityServer } from "./gen/identity.js";
export { IPAddress, IPv6, TcpAddress } from "./gen/net.js";
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

// Errors.
export { ApiError } from "./errors.js";
export type { ApiErrorCode } from "./errors.js";
