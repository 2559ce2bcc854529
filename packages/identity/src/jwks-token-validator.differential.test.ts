import { generateKeyPairSync, sign } from "node:crypto";
import type { KeyObject } from "node:crypto";
import fc from "fast-check";
import type { JSONWebKeySet } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { createJwksTokenValidator } from "./jwks-token-validator.ts";
import type { TokenValidator } from "./token-validator.ts";

const ISSUER = "https://meshtls.local";
const NOW = new Date("2026-06-01T12:00:00Z");
const nowS = Math.floor(NOW.getTime() / 1000);

interface Signer {
  key: KeyObject;
  hash: string;
}
let signers: Record<SignerName, Signer>;
let jwks: JSONWebKeySet;
let fast: TokenValidator;
let joseOnly: TokenValidator;

beforeAll(() => {
  const ec = (namedCurve: string) => generateKeyPairSync("ec", { namedCurve });
  const p256 = ec("P-256");
  const p384 = ec("P-384");
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  signers = {
    p256: { key: p256.privateKey, hash: "sha256" },
    p384: { key: p384.privateKey, hash: "sha384" },
    stranger: { key: ec("P-256").privateKey, hash: "sha256" },
    rsa: { key: rsa.privateKey, hash: "sha256" },
  };
  jwks = {
    keys: [
      { ...p256.publicKey.export({ format: "jwk" }), kid: "k256", alg: "ES256", use: "sig" },
      { ...p384.publicKey.export({ format: "jwk" }), kid: "k384" },
      { ...rsa.publicKey.export({ format: "jwk" }), kid: "krsa", alg: "RS256" },
      // The same kid twice: jose must pick, so the fast path must step aside.
      { ...p256.publicKey.export({ format: "jwk" }), kid: "twice" },
      { ...p384.publicKey.export({ format: "jwk" }), kid: "twice" },
    ],
  };
  const options = { jwks, issuer: ISSUER, now: () => NOW };
  fast = createJwksTokenValidator(options);
  joseOnly = createJwksTokenValidator(options, { fastPath: false });
});

const b64 = (value: unknown): string => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** A compact JWS signed by hand, so that headers jose's SignJWT would refuse can be made too. */
function compact(header: Record<string, unknown>, payload: unknown, signer: Signer): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const isEc = signer.key.asymmetricKeyType === "ec";
  const signature = sign(signer.hash, Buffer.from(input), isEc ? { key: signer.key, dsaEncoding: "ieee-p1363" } : signer.key);
  return `${input}.${signature.toString("base64url")}`;
}

/** Mostly the valid value, sometimes one of the others (or absent), so both acceptance and every refusal are reached. */
function mostly<T>(valid: T, ...others: T[]): fc.Arbitrary<T | undefined> {
  return fc.oneof({ arbitrary: fc.constant(valid), weight: 12 }, { arbitrary: fc.constantFrom<T | undefined>(undefined, ...others), weight: 1 });
}
const rarely = <T,>(value: T): fc.Arbitrary<T | undefined> => fc.oneof({ arbitrary: fc.constant(undefined), weight: 12 }, { arbitrary: fc.constant(value), weight: 1 });

type SignerName = "p256" | "p384" | "stranger" | "rsa";
/** Algorithm, kid and signing key: mostly matching pairs of the set, sometimes anything. */
const keying: fc.Arbitrary<{ alg: string; kid: string; by: SignerName }> = fc.oneof(
  { arbitrary: fc.constantFrom({ alg: "ES256", kid: "k256", by: "p256" as const }, { alg: "ES384", kid: "k384", by: "p384" as const }, { alg: "RS256", kid: "krsa", by: "rsa" as const }), weight: 6 },
  {
    arbitrary: fc.record({
      alg: fc.constantFrom("ES256", "ES384", "RS256", "PS256", "none", "HS256"),
      kid: fc.constantFrom("k256", "k384", "krsa", "twice", "unknown"),
      by: fc.constantFrom<SignerName>("p256", "p384", "stranger", "rsa"),
    }),
    weight: 2,
  },
);

const header = fc.record({
  typ: mostly<unknown>("JWT", "at+jwt", 1),
  crit: rarely(["exp"]),
  b64: rarely(false),
  x5u: rarely("https://example.com/x"),
});

const account = fc.constantFrom<[string, string]>(["default", "web"], ["shop", "api"], ["Bad_NS", "web"]);
const payload = fc
  .record({
    iss: mostly<unknown>(ISSUER, "https://kubernetes.default.svc", "", 1),
    aud: mostly<unknown>(["identity.l5d.io"], "identity.l5d.io", ["other", "identity.l5d.io"], "other", 7),
    // Around the 5 s tolerance.
    exp: mostly<unknown>(nowS + 3600, nowS - 3, nowS - 6, nowS - 3600, "soon"),
    nbf: mostly<unknown>(nowS - 60, nowS + 3, nowS + 60),
    iat: mostly<unknown>(nowS - 60, nowS + 3600),
    account,
    subAccount: mostly<string[] | undefined>(undefined, ["shop", "api"], ["default", "Bad_SA"]),
    k8sAccount: mostly<string[] | "none" | undefined>(undefined, ["shop", "api"], "none"),
  })
  .map(({ account: [ns, sa], subAccount, k8sAccount, ...claims }) => {
    const sub = subAccount ?? [ns, sa];
    const k8s = k8sAccount ?? [ns, sa];
    return {
      ...Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== undefined)),
      sub: `system:serviceaccount:${sub[0]}:${sub[1]}`,
      ...(k8s === "none" ? {} : { "kubernetes.io": { namespace: k8s[0], serviceaccount: { name: k8s[1], uid: "7c1f" } } }),
    };
  });

/** A change to one character of the token (or none). */
const mutation = fc.option(fc.tuple(fc.nat(), fc.constantFrom(..."AaZz09-_.=")), { nil: undefined, freq: 3 });

async function verdict(validator: TokenValidator, jwt: string): Promise<string> {
  try {
    const identity = await validator.validate(new TextEncoder().encode(jwt));
    return `ok ${JSON.stringify(identity)}`;
  } catch (error) {
    return (error as { code?: string }).code ?? `thrown ${String(error)}`;
  }
}

describe("the node:crypto fast path and jose alone give the same verdict", () => {
  it("on generated tokens: every header, claim, key and one-character change", async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(keying, header, payload, mutation, async ({ alg, kid, by }, h, p, change) => {
        let jwt = compact({ alg, kid, ...Object.fromEntries(Object.entries(h).filter(([, v]) => v !== undefined)) }, p, signers[by]);
        if (change !== undefined) {
          const at = change[0] % jwt.length;
          jwt = jwt.slice(0, at) + change[1] + jwt.slice(at + 1);
        }
        const [a, b] = await Promise.all([verdict(fast, jwt), verdict(joseOnly, jwt)]);
        expect(a, jwt).toBe(b);
        if (a.startsWith("ok")) accepted++;
      }),
      { numRuns: 3000 },
    );
    // The generator reaches acceptance, not only refusals.
    expect(accepted).toBeGreaterThan(100);
  }, 120_000);

  it("on a plain valid token, both accept it", async () => {
    const jwt = compact({ alg: "ES256", kid: "k256", typ: "JWT" }, { iss: ISSUER, aud: "identity.l5d.io", exp: nowS + 60, sub: "system:serviceaccount:default:web", "kubernetes.io": { namespace: "default", serviceaccount: { name: "web", uid: "u" } } }, signers.p256);
    expect(await verdict(fast, jwt)).toBe(await verdict(joseOnly, jwt));
    expect(await verdict(fast, jwt)).toMatch(/^ok /);
  });
});
