import { KeyObject, sign } from "node:crypto";
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, errors, exportJWK, generateKeyPair, SignJWT } from "jose";
import type { CryptoKey, JSONWebKeySet, JWK } from "jose";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { createLocalJwksKeys } from "./local-jwks-keys.ts";

const ALGORITHMS = ["ES256", "ES384", "RS256"];
let es256: { privateKey: CryptoKey; jwk: JWK };
let es384: { privateKey: CryptoKey; jwk: JWK };
let rs256: { privateKey: CryptoKey; jwk: JWK };
let jwks: JSONWebKeySet;

async function pair(alg: string): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { privateKey: privateKey as CryptoKey, jwk: await exportJWK(publicKey) };
}

async function mint(alg: string, key: CryptoKey, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ sub: "system:serviceaccount:default:web" }).setProtectedHeader({ alg, ...header }).sign(key);
}

/** An ES256 token with any header, signed by hand (jose refuses to produce some of these). */
function rawMint(header: Record<string, unknown>, key: CryptoKey): string {
  const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const input = `${b64({ alg: "ES256", ...header })}.${b64({ sub: "system:serviceaccount:default:web" })}`;
  return `${input}.${sign("sha256", Buffer.from(input), { key: KeyObject.from(key as never), dsaEncoding: "ieee-p1363" }).toString("base64url")}`;
}

/** What jose itself says about the signature: "ok", or the error class name. */
async function joseSays(jwt: string, set: JSONWebKeySet = jwks): Promise<string> {
  try {
    await compactVerify(jwt, createLocalJWKSet(set), { algorithms: ALGORITHMS });
    return "ok";
  } catch (error) {
    return (error as Error).constructor.name;
  }
}

function fastSays(jwt: string, set: JSONWebKeySet = jwks): boolean | undefined {
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(jwt) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  return createLocalJwksKeys(set, ALGORITHMS).verify(jwt, header);
}

beforeAll(async () => {
  [es256, es384, rs256] = await Promise.all([pair("ES256"), pair("ES384"), pair("RS256")]);
  jwks = {
    keys: [
      { ...es256.jwk, kid: "p256", alg: "ES256", use: "sig" },
      { ...es384.jwk, kid: "p384" },
      { ...rs256.jwk, kid: "rsa", alg: "RS256" },
    ],
  };
});

describe("createLocalJwksKeys", () => {
  it("verifies ES256 and ES384 tokens by kid, and says false for a bad signature, as jose does", async () => {
    const good256 = await mint("ES256", es256.privateKey, { kid: "p256", typ: "JWT" });
    const good384 = await mint("ES384", es384.privateKey, { kid: "p384" });
    expect([fastSays(good256), await joseSays(good256)]).toEqual([true, "ok"]);
    expect([fastSays(good384), await joseSays(good384)]).toEqual([true, "ok"]);
    // Signed by a key outside the set but naming a kid inside it.
    const stranger = await pair("ES256");
    const forged = await mint("ES256", stranger.privateKey, { kid: "p256" });
    expect([fastSays(forged), await joseSays(forged)]).toEqual([false, errors.JWSSignatureVerificationFailed.name]);
  });

  it.each([
    ["an unknown kid", async () => mint("ES256", es256.privateKey, { kid: "nope" })],
    ["no kid", async () => mint("ES256", es256.privateKey)],
    ["a crit header", async () => rawMint({ kid: "p256", crit: ["exp"], exp: 1 }, es256.privateKey)],
    ["b64: false", async () => rawMint({ kid: "p256", b64: false, crit: ["b64"] }, es256.privateKey)],
    ["an embedded jwk", async () => mint("ES256", es256.privateKey, { kid: "p256", jwk: es256.jwk })],
    ["alg other than the key's", async () => mint("ES384", es384.privateKey, { kid: "p256" })],
    ["curve other than the alg's", async () => mint("ES256", es256.privateKey, { kid: "p384" })],
    ["an RSA algorithm", async () => mint("RS256", rs256.privateKey, { kid: "rsa" })],
  ])("leaves a token with %s to jose", async (_name, token) => {
    expect(fastSays(await token())).toBeUndefined();
  });

  it("agrees with jose that a hand-signed plain token verifies", async () => {
    const token = rawMint({ kid: "p256" }, es256.privateKey);
    expect([fastSays(token), await joseSays(token)]).toEqual([true, "ok"]);
  });

  it("leaves duplicated kids, private or restricted keys to jose", async () => {
    const token = await mint("ES256", es256.privateKey, { kid: "p256" });
    const other = await pair("ES256");
    expect(fastSays(token, { keys: [{ ...es256.jwk, kid: "p256" }, { ...other.jwk, kid: "p256" }] })).toBeUndefined();
    expect(fastSays(token, { keys: [{ ...es256.jwk, kid: "p256", use: "enc" }] })).toBeUndefined();
    expect(fastSays(token, { keys: [{ ...es256.jwk, kid: "p256", key_ops: ["encrypt"] }] })).toBeUndefined();
    expect(fastSays(token, { keys: [{ ...es256.jwk, kid: "p256", d: "AAAA" }] })).toBeUndefined();
    expect(fastSays(token, { keys: [{ ...es256.jwk, kid: "p256", key_ops: ["verify"] }] })).toBe(true);
  });

  it("never disagrees with jose on mutated tokens: true only where jose accepts, false only where jose finds a bad signature", async () => {
    const good = await mint("ES256", es256.privateKey, { kid: "p256", typ: "JWT" });
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \u00e9\u0161";
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: good.length }), fc.constantFrom(...alphabet), fc.constantFrom("replace", "insert", "delete")), { minLength: 1, maxLength: 3 }),
        async (edits) => {
          let jwt = good;
          for (const [at, ch, op] of edits) {
            jwt = op === "replace" ? jwt.slice(0, at) + ch + jwt.slice(at + 1) : op === "insert" ? jwt.slice(0, at) + ch + jwt.slice(at) : jwt.slice(0, at) + jwt.slice(at + 1);
          }
          const fast = fastSays(jwt);
          if (fast === true) expect(await joseSays(jwt)).toBe("ok");
          if (fast === false) expect(await joseSays(jwt)).toBe(errors.JWSSignatureVerificationFailed.name);
        },
      ),
      { numRuns: 400 },
    );
  });
});
