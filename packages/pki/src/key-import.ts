// Importing keys from PEM or DER (PKCS#8, SEC1, SPKI): the identity service and the CLI, never the proxy, whose
// keys are generated in memory (keys.ts). PKCS#8 and SEC1 are read with asn1js.
import * as asn1js from "asn1js";
import { asBufferSource } from "./bytes.ts";
import { parseDer } from "./der.ts";
import { PkiError } from "./errors.ts";
import { checkP256Spki, EC_P256, requireP256, subtle } from "./keys.ts";
import { OID } from "./oids.ts";
import { pemDecode } from "./pem.ts";
import type { CryptoKey, CryptoKeyPair } from "./webcrypto.ts";

/** Checks an asn1js AlgorithmIdentifier is id-ecPublicKey on named P-256, throwing a coded error otherwise. */
function requireP256Algorithm(alg: asn1js.AsnType | undefined, what: string): void {
  if (!(alg instanceof asn1js.Sequence)) throw new PkiError("ERR_KEY_INVALID", `${what}: algorithm identifier is malformed`);
  const [oid, params] = alg.valueBlock.value;
  if (!(oid instanceof asn1js.ObjectIdentifier)) throw new PkiError("ERR_KEY_INVALID", `${what}: algorithm identifier is malformed`);
  requireP256(oid.valueBlock.toString(), params instanceof asn1js.ObjectIdentifier ? params.valueBlock.toString() : undefined, what);
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
  requireP256Algorithm(alg, "EC private key");
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
  requireP256Algorithm(alg, "private key");
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
