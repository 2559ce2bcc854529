import * as asn1js from "asn1js";
import { asBufferSource, CURVE_NAMES, OID, parseDer, toBytes } from "./der.ts";
import { PkiError } from "./errors.ts";
import { pemDecode, pemEncode } from "./pem.ts";
import { crypto, isCryptoKey, type CryptoKey, type CryptoKeyPair } from "./webcrypto.ts";

const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;

function subtle(): typeof crypto.subtle {
  return crypto.subtle;
}

/** Generates an extractable ECDSA P-256 key pair (extractable so node:tls can be given a PEM in memory). */
export async function generateKeyPair(_options: Record<string, never> = {}): Promise<CryptoKeyPair> {
  return subtle().generateKey(EC_P256, true, ["sign", "verify"]);
}

/** Exports a private key as PKCS#8: PEM string by default, or DER bytes with `format: "der"`. */
export async function exportPrivateKey(key: CryptoKey, options: { format: "der" }): Promise<Uint8Array>;
export async function exportPrivateKey(key: CryptoKey, options?: { format?: "pem" }): Promise<string>;
export async function exportPrivateKey(key: CryptoKey, options?: { format?: "pem" | "der" }): Promise<string | Uint8Array>;
export async function exportPrivateKey(key: CryptoKey, options: { format?: "pem" | "der" } = {}): Promise<string | Uint8Array> {
  if (!isCryptoKey(key) || key.type !== "private") throw new PkiError("ERR_KEY_INVALID", "expected a private CryptoKey");
  let der: Uint8Array;
  try {
    der = toBytes(await subtle().exportKey("pkcs8", key));
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
  const der = toBytes(await subtle().exportKey("spki", key));
  return options.format === "der" ? der : pemEncode("PUBLIC KEY", der);
}

function curveName(oid: string): string {
  return CURVE_NAMES[oid] ?? oid;
}

/** Checks an AlgorithmIdentifier is id-ecPublicKey on named P-256, throwing a coded error otherwise. */
function requireP256(alg: asn1js.AsnType | undefined, what: string): void {
  if (!(alg instanceof asn1js.Sequence)) throw new PkiError("ERR_KEY_INVALID", `${what}: algorithm identifier is malformed`);
  const [oid, params] = alg.valueBlock.value;
  if (!(oid instanceof asn1js.ObjectIdentifier)) throw new PkiError("ERR_KEY_INVALID", `${what}: algorithm identifier is malformed`);
  const algOid = oid.valueBlock.toString();
  if (algOid === OID.rsaEncryption || algOid === OID.rsaPss) throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: RSA keys are not supported (ECDSA P-256 only)`);
  if (algOid === OID.ed25519) throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: Ed25519 keys are not supported (ECDSA P-256 only)`);
  if (algOid !== OID.ecPublicKey) throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: key algorithm ${algOid} is not supported (ECDSA P-256 only)`);
  if (!(params instanceof asn1js.ObjectIdentifier)) {
    throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: EC key with explicit or missing curve parameters is not supported (named P-256 only)`);
  }
  const curve = params.valueBlock.toString();
  if (curve !== OID.p256) throw new PkiError("ERR_KEY_UNSUPPORTED", `${what}: curve ${curveName(curve)} is not supported (P-256 only)`);
}

/** Wraps a SEC1 ECPrivateKey (RFC 5915) into PKCS#8, reading the curve from its parameters. */
function sec1ToPkcs8(sec1: Uint8Array): Uint8Array {
  const parsed = parseDer(sec1, "EC private key", "ERR_KEY_INVALID");
  if (!(parsed instanceof asn1js.Sequence)) throw new PkiError("ERR_KEY_INVALID", "EC private key is not a SEQUENCE");
  const items = parsed.valueBlock.value;
  const version = items[0];
  if (!(version instanceof asn1js.Integer) || version.valueBlock.valueDec !== 1) {
    throw new PkiError("ERR_KEY_INVALID", "EC private key has an unknown version (expected 1)");
  }
  if (!(items[1] instanceof asn1js.OctetString)) throw new PkiError("ERR_KEY_INVALID", "EC private key has no private value");
  const params = items.find((i) => i.idBlock.tagClass === 3 && i.idBlock.tagNumber === 0);
  const inner = params instanceof asn1js.Constructed ? params.valueBlock.value[0] : undefined;
  if (!inner) throw new PkiError("ERR_KEY_INVALID", "EC private key does not name its curve");
  const alg = new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: OID.ecPublicKey }), inner] });
  requireP256(alg, "EC private key");
  const pkcs8 = new asn1js.Sequence({
    value: [new asn1js.Integer({ value: 0 }), alg, new asn1js.OctetString({ valueHex: asBufferSource(sec1) })],
  });
  return new Uint8Array(pkcs8.toBER(false));
}

function checkPkcs8(der: Uint8Array): void {
  const parsed = parseDer(der, "private key", "ERR_KEY_INVALID");
  if (!(parsed instanceof asn1js.Sequence)) throw new PkiError("ERR_KEY_INVALID", "private key is not a SEQUENCE");
  const [version, alg, key] = parsed.valueBlock.value;
  if (!(version instanceof asn1js.Integer) || !(key instanceof asn1js.OctetString)) {
    throw new PkiError("ERR_KEY_INVALID", "private key is not PKCS#8 PrivateKeyInfo");
  }
  requireP256(alg, "private key");
}

function isPkcs8(der: Uint8Array): boolean {
  try {
    const parsed = asn1js.fromBER(der);
    const first = parsed.result instanceof asn1js.Sequence ? parsed.result.valueBlock.value[0] : undefined;
    const second = parsed.result instanceof asn1js.Sequence ? parsed.result.valueBlock.value[1] : undefined;
    return first instanceof asn1js.Integer && first.valueBlock.valueDec === 0 && second instanceof asn1js.Sequence;
  } catch {
    return false;
  }
}

/**
 * Imports an ECDSA P-256 private key from PKCS#8 (PEM `PRIVATE KEY` or DER) or SEC1 (PEM `EC PRIVATE KEY`
 * or DER, as openssl and cert-manager write), returning the pair with the public key derived.
 * Other algorithms and curves throw ERR_KEY_UNSUPPORTED; malformed input ERR_KEY_INVALID / ERR_PEM_INVALID.
 */
export async function importPrivateKey(input: string | Uint8Array): Promise<CryptoKeyPair> {
  let pkcs8: Uint8Array;
  if (typeof input === "string" || (input instanceof Uint8Array && input[0] !== 0x30)) {
    const text = typeof input === "string" ? input : Buffer.from(input).toString("latin1");
    const blocks = pemDecode(text);
    const block = blocks.find((b) => b.label === "PRIVATE KEY" || b.label === "EC PRIVATE KEY");
    if (!block) {
      const labels = blocks.map((b) => b.label);
      if (labels.includes("ENCRYPTED PRIVATE KEY")) throw new PkiError("ERR_KEY_UNSUPPORTED", "encrypted private keys are not supported");
      if (labels.includes("RSA PRIVATE KEY")) throw new PkiError("ERR_KEY_UNSUPPORTED", "RSA keys are not supported (ECDSA P-256 only)");
      throw new PkiError("ERR_PEM_INVALID", `no PRIVATE KEY or EC PRIVATE KEY block found (found: ${labels.join(", ")})`);
    }
    pkcs8 = block.label === "EC PRIVATE KEY" ? sec1ToPkcs8(block.der) : block.der;
  } else if (input instanceof Uint8Array) {
    pkcs8 = isPkcs8(input) ? input : sec1ToPkcs8(input);
  } else {
    throw new PkiError("ERR_KEY_INVALID", "private key must be a PEM string or DER bytes");
  }
  checkPkcs8(pkcs8);
  try {
    const privateKey = await subtle().importKey("pkcs8", asBufferSource(pkcs8), EC_P256, true, ["sign"]);
    const jwk = await subtle().exportKey("jwk", privateKey);
    const publicKey = await subtle().importKey(
      "jwk",
      { kty: "EC", crv: "P-256", x: jwk.x ?? "", y: jwk.y ?? "", ext: true },
      EC_P256,
      true,
      ["verify"],
    );
    return { privateKey, publicKey };
  } catch (err) {
    throw new PkiError("ERR_KEY_INVALID", "private key is not a valid ECDSA P-256 key", { cause: err });
  }
}

/** Reads the DER SubjectPublicKeyInfo from PEM (`PUBLIC KEY`) or DER input. */
export function publicKeyDer(input: string | Uint8Array): Uint8Array {
  if (typeof input === "string" || (input instanceof Uint8Array && input[0] !== 0x30)) {
    const text = typeof input === "string" ? input : Buffer.from(input).toString("latin1");
    const block = pemDecode(text).find((b) => b.label === "PUBLIC KEY");
    if (!block) throw new PkiError("ERR_PEM_INVALID", "no PUBLIC KEY block found");
    return block.der;
  }
  if (input instanceof Uint8Array) return input;
  throw new PkiError("ERR_KEY_INVALID", "public key must be a PEM string or DER bytes");
}

const P256_SPKI_HEADER = new Uint8Array(Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004", "hex"));

function hasP256Header(der: Uint8Array): boolean {
  for (let i = 0; i < P256_SPKI_HEADER.length; i++) if (der[i] !== P256_SPKI_HEADER[i]) return false;
  return true;
}

/** Checks that DER SPKI bytes hold a named-curve P-256 key, throwing ERR_KEY_UNSUPPORTED / ERR_KEY_INVALID. */
export function checkP256Spki(der: Uint8Array): void {
  // Fast path: the one DER encoding a named-curve P-256 uncompressed key has.
  if (der.length === P256_SPKI_HEADER.length + 64 && hasP256Header(der)) return;
  const parsed = parseDer(der, "public key", "ERR_KEY_INVALID");
  if (!(parsed instanceof asn1js.Sequence)) throw new PkiError("ERR_KEY_INVALID", "public key is not a SEQUENCE");
  const [alg, bits] = parsed.valueBlock.value;
  requireP256(alg, "public key");
  if (!(bits instanceof asn1js.BitString)) throw new PkiError("ERR_KEY_INVALID", "public key has no key bits");
  throw new PkiError("ERR_KEY_INVALID", "public key is not an uncompressed P-256 point");
}

/** Imports an ECDSA P-256 public key from SPKI PEM (`PUBLIC KEY`) or DER. */
export async function importPublicKey(input: string | Uint8Array): Promise<CryptoKey> {
  const der = publicKeyDer(input);
  checkP256Spki(der);
  try {
    return await subtle().importKey("spki", asBufferSource(der), EC_P256, true, ["verify"]);
  } catch (err) {
    throw new PkiError("ERR_KEY_INVALID", "public key is not a valid ECDSA P-256 point", { cause: err });
  }
}
