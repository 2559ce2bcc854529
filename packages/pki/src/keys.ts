// Generating, exporting and checking keys: what a proxy needs, read with der-reader.ts. Importing keys from PEM/DER
// (PKCS#8, SEC1) is in key-import.ts, with asn1js.
import { generateKeyPairSync, KeyObject } from "node:crypto";
import { toBytes } from "./bytes.ts";
import { children, content, decodeOid, expectTag, readTlv } from "./der-reader.ts";
import { PkiError } from "./errors.ts";
import { MAX_DER_BYTES } from "./limits.ts";
import { CURVE_NAMES, OID } from "./oids.ts";
import { pemEncode } from "./pem.ts";
import { crypto, isCryptoKey, type CryptoKey, type CryptoKeyPair } from "./webcrypto.ts";

export const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;

export function subtle(): typeof crypto.subtle {
  return crypto.subtle;
}

/**
 * Generates an extractable ECDSA P-256 key pair (extractable so node:tls can be given a PEM in memory). Generated
 * synchronously (about 1 ms, once per certificate): WebCrypto's generateKey and exportKey run on libuv's thread pool,
 * whose four threads and their malloc arenas an idle proxy would otherwise keep for the one key a day it makes.
 */
export async function generateKeyPair(_options: Record<string, never> = {}): Promise<CryptoKeyPair> {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { privateKey: privateKey.toCryptoKey(EC_P256, true, ["sign"]), publicKey: publicKey.toCryptoKey(EC_P256, true, ["verify"]) };
}

/** Exports a private key as PKCS#8: PEM string by default, or DER bytes with `format: "der"`. */
export async function exportPrivateKey(key: CryptoKey, options: { format: "der" }): Promise<Uint8Array>;
export async function exportPrivateKey(key: CryptoKey, options?: { format?: "pem" }): Promise<string>;
export async function exportPrivateKey(key: CryptoKey, options?: { format?: "pem" | "der" }): Promise<string | Uint8Array>;
export async function exportPrivateKey(key: CryptoKey, options: { format?: "pem" | "der" } = {}): Promise<string | Uint8Array> {
  if (!isCryptoKey(key) || key.type !== "private") throw new PkiError("ERR_KEY_INVALID", "expected a private CryptoKey");
  let der: Uint8Array;
  try {
    // node:crypto exports synchronously (WebCrypto's exportKey is a thread-pool job) but ignores `extractable`: checked here.
    if (!key.extractable) throw new Error("the key is not extractable");
    der = toBytes(KeyObject.from(key as never).export({ type: "pkcs8", format: "der" }));
  } catch (err) {
    throw new PkiError("ERR_KEY_INVALID", "private key cannot be exported (is it extractable?)", { cause: err });
  }
  return options.format === "der" ? der : pemEncode("PRIVATE KEY", der);
}

/** Exports a public key as SPKI: PEM string by default, or DER bytes with `format: "der"`. */
export async function exportPublicKey(key: CryptoKey, options: { format: "der" }): Promise<Uint8Array>;
export async function exportPublicKey(key: CryptoKey, options?: { format?: "pem" }): Promise<string>;
export async function exportPublicKey(key: CryptoKey, options?: { format?: "pem" | "der" }): Promise<string | Uint8Array>;
export async function exportPublicKey(key: CryptoKey, options: { format?: "pem" | "der" } = {}): Promise<string | Uint8Array> {
  if (!isCryptoKey(key) || key.type !== "public") throw new PkiError("ERR_KEY_INVALID", "expected a public CryptoKey");
  if (!key.extractable) throw new PkiError("ERR_KEY_INVALID", "public key cannot be exported (is it extractable?)");
  const der = toBytes(KeyObject.from(key as never).export({ type: "spki", format: "der" }));
  return options.format === "der" ? der : pemEncode("PUBLIC KEY", der);
}

function curveName(oid: string): string {
  return CURVE_NAMES[oid] ?? oid;
}

/**
 * Checks an AlgorithmIdentifier (its OID, and the curve OID when its parameters are one) is id-ecPublicKey on
 * named P-256, throwing ERR_KEY_UNSUPPORTED otherwise.
 */
export function requireP256(algOid: string, curveOid: string | undefined, what: string): void {
  if (algOid === OID.rsaEncryption || algOid === OID.rsaPss) throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: RSA keys are not supported (ECDSA P-256 only)`);
  if (algOid === OID.ed25519) throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: Ed25519 keys are not supported (ECDSA P-256 only)`);
  if (algOid !== OID.ecPublicKey) throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: key algorithm ${algOid} is not supported (ECDSA P-256 only)`);
  if (curveOid === undefined) {
    throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: EC key with explicit or missing curve parameters is not supported (named P-256 only)`);
  }
  if (curveOid !== OID.p256) throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: curve ${curveName(curveOid)} is not supported (P-256 only)`);
}

const P256_SPKI_HEADER = new Uint8Array(Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004", "hex"));

function hasP256Header(der: Uint8Array): boolean {
  for (let i = 0; i < P256_SPKI_HEADER.length; i++) if (der[i] !== P256_SPKI_HEADER[i]) return false;
  return true;
}

/** Checks that DER SPKI bytes hold a named-curve P-256 key, throwing ERR_KEY_UNSUPPORTED / ERR_KEY_INVALID. */
export function checkP256Spki(der: Uint8Array): void {
  // Fast path: the one DER encoding a named-curve P-256 uncompressed key has.
  if (der instanceof Uint8Array && der.length === P256_SPKI_HEADER.length + 64 && hasP256Header(der)) return;
  if (!(der instanceof Uint8Array)) throw new PkiError("ERR_KEY_INVALID", "public key must be bytes");
  if (der.length > MAX_DER_BYTES) throw new PkiError("ERR_KEY_INVALID", `public key is larger than ${MAX_DER_BYTES} bytes`);
  let parts: { algOid: string; curveOid: string | undefined; hasBits: boolean };
  try {
    const outer = expectTag(readTlv(der, 0), 0x30, "public key");
    if (outer.end !== der.length) throw new Error(`${der.length - outer.end} trailing bytes after the DER value`);
    const [alg, bits] = children(der, outer);
    const [algOid, params] = children(der, expectTag(alg, 0x30, "algorithm identifier"));
    parts = {
      algOid: decodeOid(content(der, expectTag(algOid, 0x06, "algorithm OID"))),
      curveOid: params?.tag === 0x06 ? decodeOid(content(der, params)) : undefined,
      hasBits: bits?.tag === 0x03,
    };
  } catch (err) {
    throw new PkiError("ERR_KEY_INVALID", `public key is not valid DER: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  requireP256(parts.algOid, parts.curveOid, "public key");
  if (!parts.hasBits) throw new PkiError("ERR_KEY_INVALID", "public key has no key bits");
  throw new PkiError("ERR_KEY_INVALID", "public key is not an uncompressed P-256 point");
}
