import { createPublicKey, verify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import type { JSONWebKeySet } from "jose";

/** The JWS algorithms verified here; any other `alg` goes through jose. */
const CURVE_FOR_ALG: Readonly<Record<string, { crv: string; hash: string; signatureBytes: number }>> = {
  ES256: { crv: "P-256", hash: "sha256", signatureBytes: 64 },
  ES384: { crv: "P-384", hash: "sha384", signatureBytes: 96 },
};

// Three unpadded base64url segments: ASCII only, so the signing input is exactly the token's bytes.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** Header members a token may carry and still take this path: anything else (`crit`, `b64`, `jwk`, …) goes through jose. */
const PLAIN_HEADER_MEMBERS: ReadonlySet<string> = new Set(["alg", "kid", "typ"]);

interface ImportedKey {
  key: KeyObject;
  crv: string;
  /** The JWK's own `alg`, if it names one. */
  alg?: string;
}

/**
 * Public keys of a local JWKS imported once into node:crypto, by `kid`, so that
 * each token costs one synchronous signature check instead of a WebCrypto job
 * (which on Node 20 costs about 1.5 × node:crypto's verify, plus its promise).
 *
 * It only answers when the answer is certain to be jose's: an ES256/ES384 token
 * whose header is `{ alg, kid, typ? }` and whose `kid` names exactly one key of the
 * set, usable for that algorithm under jose's own key selection rules (kty, crv,
 * `alg`, `use`, `key_ops`). Otherwise {@link LocalJwksKeys.verify} returns
 * `undefined` and the caller asks jose, which reports the precise error.
 */
export interface LocalJwksKeys {
  /**
   * `true`: the signature verifies; `false`: it does not (answer ERR_TOKEN_SIGNATURE);
   * `undefined`: not decided here.
   */
  verify(jwt: string, header: Record<string, unknown>): boolean | undefined;
}

export function createLocalJwksKeys(jwks: JSONWebKeySet, algorithms: readonly string[]): LocalJwksKeys {
  const byKid = new Map<string, ImportedKey | null>();
  for (const jwk of Array.isArray(jwks.keys) ? jwks.keys : []) {
    if (typeof jwk !== "object" || jwk === null || typeof jwk.kid !== "string") continue;
    // A kid that appears twice is left to jose (it tries each match).
    if (byKid.has(jwk.kid)) {
      byKid.set(jwk.kid, null);
      continue;
    }
    let imported: ImportedKey | null = null;
    const usable =
      jwk.kty === "EC" &&
      typeof jwk.crv === "string" &&
      jwk.d === undefined &&
      (jwk.use === undefined || jwk.use === "sig") &&
      (jwk.key_ops === undefined || (Array.isArray(jwk.key_ops) && jwk.key_ops.includes("verify")));
    if (usable) {
      try {
        const key = createPublicKey({ key: { kty: "EC", crv: jwk.crv, x: jwk.x, y: jwk.y } as never, format: "jwk" });
        imported = typeof jwk.alg === "string" ? { key, crv: jwk.crv as string, alg: jwk.alg } : { key, crv: jwk.crv as string };
      } catch {
        imported = null;
      }
    }
    byKid.set(jwk.kid, imported);
  }
  const allowed = new Set(algorithms);

  return {
    verify(jwt, header) {
      const alg = header["alg"];
      const kid = header["kid"];
      if (typeof alg !== "string" || typeof kid !== "string" || !allowed.has(alg)) return undefined;
      const params = CURVE_FOR_ALG[alg];
      if (!params) return undefined;
      for (const member of Object.keys(header)) if (!PLAIN_HEADER_MEMBERS.has(member)) return undefined;
      const entry = byKid.get(kid);
      if (!entry || entry.crv !== params.crv || (entry.alg !== undefined && entry.alg !== alg)) return undefined;
      if (!COMPACT_JWS.test(jwt)) return undefined;
      const dot2 = jwt.lastIndexOf(".");
      const encodedSignature = jwt.slice(dot2 + 1);
      if (encodedSignature.length !== Math.ceil((params.signatureBytes * 4) / 3)) return undefined;
      const signature = Buffer.from(encodedSignature, "base64url");
      try {
        return verify(params.hash, Buffer.from(jwt.slice(0, dot2), "ascii"), { key: entry.key, dsaEncoding: "ieee-p1363" }, signature);
      } catch {
        return false;
      }
    },
  };
}
