// Server: the Certify service and its replaceable parts.
export { createIdentityServer } from "./server.ts";
export type { IdentityServerOptions, IdentityServerParts } from "./server.ts";
export { CERTIFY_LIMITS } from "./server-limits.ts";
export type { CertifyLimitReason, CertifyLimits } from "./server-limits.ts";
export { createCertifyHandler, MAX_CERTIFY_REQUEST_BYTES } from "./certify.ts";
export type { CertifyHandler, CertifyInput, CertifyOptions, CertifyOutput } from "./certify.ts";
export { createJwksTokenValidator, IDENTITY_TOKEN_AUDIENCE, LOCAL_TOKEN_ISSUER } from "./jwks-token-validator.ts";
export type { JwksTokenValidatorOptions } from "./jwks-token-validator.ts";
export { createJwksFileStore } from "./jwks-file-store.ts";
export type { JwksFileRejection, JwksFileReloadResult, JwksFileStore, JwksFileStoreOptions } from "./jwks-file-store.ts";
export type { TokenIdentity, TokenValidator } from "./token-validator.ts";
export { createIssuerStore, requireIssuerLoaded } from "./issuer-store.ts";
export { findIssuerFiles, ISSUER_LAYOUTS, loadIssuerFolder } from "./issuer-folder.ts";
export type { IssuerFolderFiles, IssuerLayout } from "./issuer-folder.ts";
export type { IssuerStore, IssuerStoreOptions, ReloadResult } from "./issuer-store.ts";
export type { IssuerRejection } from "./validate-issuer.ts";
export { createTrustAnchorsStore } from "./trust-anchors-store.ts";
export { FOLLOW_DEFAULTS } from "@meshtls/runtime";
export type { TrustAnchorsRejection, TrustAnchorsReloadResult, TrustAnchorsStore, TrustAnchorsStoreOptions } from "./trust-anchors-store.ts";
export type { Issuer, IssuerSource, IssuerState } from "./issuer.ts";
export { createStaticIssuerSource, validateIssuer } from "./validate-issuer.ts";
export { createIdentityPolicy } from "./identity-policy.ts";
export type { IdentityPolicy, RequestedIdentity } from "./identity-policy.ts";

// Client: the certifier and the credential store it writes.
export { createCertifier } from "./certifier.ts";
export { refreshDelayMs, backoffDelayMs, MIN_REFRESH_MS, MAX_REFRESH_MS, REFRESH_FRACTION } from "./refresh-timing.ts";
export type { Certifier, CertifierOptions } from "./certifier.ts";
export { createCredentialStore } from "./credential-store.ts";
export type { CredentialStore, Credentials, WritableCredentialStore } from "./credential-store.ts";
// The TLS of every client of the control plane (Certify, destination, policy), and the peer names it checks.
export { createControlPlaneCredentials } from "./control-plane-credentials.ts";
export type { ControlPlaneCredentials, ControlPlaneCredentialsOptions } from "./control-plane-credentials.ts";
export { namesIdentity, subjectAltNames } from "./peer-names.ts";

// Shared.
export { IdentityError } from "./errors.ts";
export type { IdentityErrorCode } from "./errors.ts";
export type { Logger } from "./logger.ts";
export { noopLogger } from "./logger.ts";

// For integrators: the CSR policy and the status mapping used at the RPC boundary.
export { checkCsr } from "./csr-policy.ts";
export { statusForCode } from "./grpc-status.ts";
