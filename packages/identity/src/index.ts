// Server parts.
export { createJwksTokenValidator, IDENTITY_TOKEN_AUDIENCE } from "./jwks-token-validator.ts";
export type { JwksTokenValidatorOptions } from "./jwks-token-validator.ts";
export type { TokenIdentity, TokenValidator } from "./token-validator.ts";

// Client parts.
export { refreshDelayMs, backoffDelayMs, MIN_REFRESH_MS, MAX_REFRESH_MS, REFRESH_FRACTION } from "./refresh-timing.ts";
export { createCredentialStore } from "./credential-store.ts";
export type { CredentialStore, Credentials, WritableCredentialStore } from "./credential-store.ts";

// Shared.
export { IdentityError } from "./errors.ts";
export type { IdentityErrorCode } from "./errors.ts";
export type { Logger } from "./logger.ts";
export { noopLogger } from "./logger.ts";

// For integrators: the status mapping used at the RPC boundary.
export { statusForCode } from "./grpc-status.ts";
