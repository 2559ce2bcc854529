import { webcrypto } from "node:crypto";
import { types } from "node:util";

/** WebCrypto key type (node's `globalThis.crypto`), re-exported so callers need no DOM lib. */
export type CryptoKey = webcrypto.CryptoKey;
/** WebCrypto key pair type. */
export type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** The WebCrypto implementation used throughout: node's, which is `globalThis.crypto`. */
export const crypto: webcrypto.Crypto = webcrypto as webcrypto.Crypto;

export function isCryptoKey(value: unknown): value is CryptoKey {
  return types.isCryptoKey(value);
}
