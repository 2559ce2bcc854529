// Signing DER with node:crypto over the same OpenSSL key as a WebCrypto CryptoKey (KeyObject.from): synchronous,
// and it emits the DER ECDSA-Sig-Value X.509 and PKCS#10 want. Certificates (ca.ts) and CSRs (csr.ts) sign here.
import { KeyObject, sign as nodeSign } from "node:crypto";
import * as w from "./der-writer.ts";
import { PkiError } from "./errors.ts";
import { OID } from "./oids.ts";
import { isCryptoKey, type CryptoKey } from "./webcrypto.ts";

export interface Signer {
  key: KeyObject;
  hash: "sha256" | "sha384" | "sha512";
  /** DER AlgorithmIdentifier of the signature. */
  algorithm: Uint8Array;
}

/** A node:crypto signer for a WebCrypto ECDSA private key: P-256 → SHA-256, P-384 → SHA-384, P-521 → SHA-512. */
export function signerFor(privateKey: CryptoKey): Signer {
  if (!isCryptoKey(privateKey) || privateKey.type !== "private" || privateKey.algorithm.name !== "ECDSA" || !privateKey.usages.includes("sign")) {
    throw new PkiError("ERR_KEY_INVALID", "signing key must be an ECDSA private CryptoKey with usage 'sign'");
  }
  const curve = (privateKey.algorithm as { namedCurve?: string }).namedCurve;
  const [hash, oid] = curve === "P-384" ? (["sha384", OID.ecdsaSha384] as const) : curve === "P-521" ? (["sha512", OID.ecdsaSha512] as const) : (["sha256", OID.ecdsaSha256] as const);
  return { key: KeyObject.from(privateKey as never), hash, algorithm: w.encode(w.seq(w.oid(oid))) };
}

/** SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }: the signed form of a certificate and of a CSR. */
export function signDer(tbs: Uint8Array, signer: Signer): Uint8Array {
  let signature: Buffer;
  try {
    signature = nodeSign(signer.hash, tbs, signer.key);
  } catch (err) {
    throw new PkiError("ERR_KEY_INVALID", "the signing key could not sign", { cause: err });
  }
  return w.encode(w.seq(tbs, signer.algorithm, w.bitString(signature)));
}
