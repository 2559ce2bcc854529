import { status } from "@grpc/grpc-js";
import type { IdentityErrorCode } from "./errors.ts";

/**
 * The gRPC status of each refusal; the only place status codes appear.
 * Upstream Linkerd answers FAILED_PRECONDITION for token and identity
 * failures; meshtls uses UNAUTHENTICATED and PERMISSION_DENIED, which say
 * more (see README).
 */
export function statusForCode(code: IdentityErrorCode): status {
  switch (code) {
    case "ERR_REQUEST_TOO_LARGE":
      return status.RESOURCE_EXHAUSTED;
    case "ERR_ISSUER_UNAVAILABLE":
    case "ERR_TOKEN_UNAVAILABLE":
      return status.UNAVAILABLE;
    case "ERR_IDENTITY_MISSING":
    case "ERR_TOKEN_MISSING":
    case "ERR_CSR_MISSING":
    case "ERR_IDENTITY_INVALID":
    case "ERR_CSR_INVALID":
      return status.INVALID_ARGUMENT;
    case "ERR_CSR_REJECTED":
      return status.FAILED_PRECONDITION;
    case "ERR_TOKEN_MALFORMED":
    case "ERR_TOKEN_ALGORITHM":
    case "ERR_TOKEN_UNKNOWN_KEY":
    case "ERR_TOKEN_SIGNATURE":
    case "ERR_TOKEN_EXPIRED":
    case "ERR_TOKEN_NOT_YET_VALID":
    case "ERR_TOKEN_AUDIENCE":
    case "ERR_TOKEN_ISSUER":
    case "ERR_TOKEN_CLAIMS":
    case "ERR_TOKEN_REJECTED":
      return status.UNAUTHENTICATED;
    case "ERR_IDENTITY_MISMATCH":
      return status.PERMISSION_DENIED;
    default:
      return status.INTERNAL;
  }
}
