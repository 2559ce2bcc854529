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
export { generateKeyPair, exportPrivateKey, exportPublicKey } from "./keys.ts";
export { importPrivateKey, importPublicKey } from "./key-import.ts";
export { createCsr, parseCsr, type CsrSummary } from "./csr.ts";
export {
  createTrustAnchor,
  createIssuer,
  issueLeaf,
  prepareIssuer,
  certificateMatchesKey,
  DEFAULT_ANCHOR_LIFETIME_MS,
  DEFAULT_ISSUER_LIFETIME_MS,
  DEFAULT_LEAF_LIFETIME_MS,
  DEFAULT_SKEW_MS,
  type CertifiedKey,
  type PreparedIssuer,
} from "./ca.ts";
export { parseCertificate, type CertificateSummary } from "./certificate.ts";
export { verifyChain, DEFAULT_MAX_CHAIN_DEPTH, type ChainResult, type VerifyChainOptions } from "./verify.ts";

// Limits applied by every parser (integrators may want to show them).
export { MAX_DER_BYTES, MAX_PEM_CHARS, MAX_PEM_BLOCKS } from "./limits.ts";
