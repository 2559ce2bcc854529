export { PkiError, type PkiErrorCode } from "./errors.ts";
export { pemEncode, pemDecode, toDer, decodeCertificates, type DerLabel } from "./pem.ts";
export {
  identityName,
  parseIdentityName,
  spiffeId,
  parseSpiffeId,
  parseTrustDomain,
  validateSpiffePath,
  validateSpiffePathSegment,
  spiffeIdForIdentity,
  isDnsLabel,
  isDnsSubdomain,
  DEFAULT_CONTROL_NAMESPACE,
  DEFAULT_TRUST_DOMAIN,
  type IdentityNameParts,
} from "./names.ts";
export type { CryptoKey, CryptoKeyPair } from "./webcrypto.ts";
export { generateKeyPair, exportPrivateKey, importPrivateKey, exportPublicKey, importPublicKey } from "./keys.ts";

// Limits applied by every parser (integrators may want to show them).
export { MAX_DER_BYTES, MAX_PEM_CHARS, MAX_PEM_BLOCKS } from "./limits.ts";
