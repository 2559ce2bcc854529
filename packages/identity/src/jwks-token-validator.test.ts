import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import type { CryptoKey, JSONWebKeySet, JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IdentityError } from "./errors.ts";
import { createJwksTokenValidator } from "./jwks-token-validator.ts";

const ISSUER = "https://meshtls.local/token-signer";
const NOW = new Date("2026-06-01T12:00:00Z");
const nowS = Math.floor(NOW.getTime() / 1000);

let jwks: JSONWebKeySet;
let signingKey: CryptoKey;
let otherKey: CryptoKey;

beforeAll(async () => {
  const pair = await generateKeyPair("ES256");
  const other = await generateKeyPair("ES256");
  signingKey = pair.privateKey as CryptoKey;
  otherKey = other.privateKey as CryptoKey;
  jwks = { keys: [{ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "ES256", use: "sig" }] };
});

function claims(ns = "default", sa = "web"): JWTPayload {
  return {
    iss: ISSUER,
    sub: `system:serviceaccount:${ns}:${sa}`,
    aud: ["identity.l5d.io"],
    iat: nowS - 60,
    nbf: nowS - 60,
    exp: nowS + 3600,
    "kubernetes.io": { namespace: ns, serviceaccount: { name: sa, uid: "7c1f" } },
  };
}

async function mint(payload: JWTPayload, key: CryptoKey = signingKey, kid = "k1"): Promise<Uint8Array> {
  const jwt = await new SignJWT(payload).setProtectedHeader({ alg: "ES256", kid, typ: "JWT" }).sign(key);
  return new TextEncoder().encode(jwt);
}

function validator() {
  return createJwksTokenValidator({ jwks, issuer: ISSUER, now: () => NOW, clockToleranceMs: 0 });
}

async function codeOf(token: Uint8Array): Promise<{ code: string; message: string }> {
  try {
    await validator().validate(token);
  } catch (error) {
    expect(error).toBeInstanceOf(IdentityError);
    return { code: (error as IdentityError).code, message: (error as IdentityError).message };
  }
  throw new Error("token was accepted");
}

describe("createJwksTokenValidator", () => {
  it("maps a valid token to its ServiceAccount", async () => {
    const id = await validator().validate(await mint(claims("shop", "cart")));
    expect(id).toMatchObject({ namespace: "shop", serviceAccount: "cart", subject: "system:serviceaccount:shop:cart" });
    expect(id.expiresAt?.getTime()).toBe((nowS + 3600) * 1000);
  });

  it("tolerates a trailing newline, as token files have", async () => {
    const token = await mint(claims());
    const withNewline = new Uint8Array([...token, 0x0a]);
    await expect(validator().validate(withNewline)).resolves.toMatchObject({ serviceAccount: "web" });
  });

  it.each([
    ["wrong audience", { aud: ["kubernetes.default.svc"] }, "ERR_TOKEN_AUDIENCE", /identity\.l5d\.io/],
    ["no audience", { aud: undefined }, "ERR_TOKEN_AUDIENCE", /null.*identity\.l5d\.io/],
    ["expired", { exp: nowS - 10 }, "ERR_TOKEN_EXPIRED", /expired at/],
    ["not yet valid", { nbf: nowS + 600 }, "ERR_TOKEN_NOT_YET_VALID", /not valid before/],
    ["wrong issuer", { iss: "https://evil.example" }, "ERR_TOKEN_ISSUER", /evil\.example/],
    ["no exp", { exp: undefined }, "ERR_TOKEN_CLAIMS", /exp/],
    ["not a ServiceAccount", { sub: "user:alice" }, "ERR_TOKEN_CLAIMS", /not a ServiceAccount/],
    ["bad label", { sub: "system:serviceaccount:Default:web" }, "ERR_TOKEN_CLAIMS", /DNS-1123/],
    ["claims disagree", { "kubernetes.io": { namespace: "other", serviceaccount: { name: "web" } } }, "ERR_TOKEN_CLAIMS", /disagree/],
    ["no kubernetes.io claim", { "kubernetes.io": undefined }, "ERR_TOKEN_CLAIMS", /kubernetes\.io/],
  ])("refuses a token with %s", async (_name, patch, code, message) => {
    const payload: Record<string, unknown> = { ...claims(), ...patch };
    for (const [k, v] of Object.entries(patch)) if (v === undefined) delete payload[k];
    const result = await codeOf(await mint(payload as JWTPayload));
    expect(result.code).toBe(code);
    expect(result.message).toMatch(message);
  });

  it("refuses a token signed by an unknown key", async () => {
    expect((await codeOf(await mint(claims(), otherKey, "k2"))).code).toBe("ERR_TOKEN_UNKNOWN_KEY");
  });

  it("refuses a token whose signature was made by another key under a known kid", async () => {
    expect((await codeOf(await mint(claims(), otherKey, "k1"))).code).toBe("ERR_TOKEN_SIGNATURE");
  });

  it("refuses alg none", async () => {
    const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const unsigned = `${b64({ alg: "none", typ: "JWT" })}.${b64(claims())}.`;
    const result = await codeOf(new TextEncoder().encode(unsigned));
    expect(result.code).toBe("ERR_TOKEN_ALGORITHM");
    expect(result.message).toMatch(/"none" is not accepted/);
  });

  it("refuses HS256 even though the JWKS key would be usable as an HMAC secret", async () => {
    const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const token = `${b64({ alg: "HS256", kid: "k1" })}.${b64(claims())}.AAAA`;
    expect((await codeOf(new TextEncoder().encode(token))).code).toBe("ERR_TOKEN_ALGORITHM");
  });

  it.each([
    ["garbage", new TextEncoder().encode("not a jwt")],
    ["invalid UTF-8", new Uint8Array([0xff, 0xfe, 0xfd])],
    ["oversized", new Uint8Array(20_000).fill(0x41)],
    ["two segments", new TextEncoder().encode("eyJhbGciOiJFUzI1NiJ9.e30")],
  ])("refuses a malformed token (%s) with a code", async (_name, token) => {
    expect((await codeOf(token)).code).toBe("ERR_TOKEN_MALFORMED");
  });

  it("requires an expected issuer", () => {
    expect(() => createJwksTokenValidator({ jwks, issuer: "" })).toThrow(/issuer is required/);
  });

  describe("a followed JWKS (a function, e.g. a JWKS file store's current)", () => {
    it("accepts a new signer's token right after the set changes, and refuses a removed key's", async () => {
      const b = await generateKeyPair("ES256");
      const jwkB = { ...(await exportJWK(b.publicKey)), kid: "k2", alg: "ES256", use: "sig" };
      let current: JSONWebKeySet = jwks;
      let reads = 0;
      const followed = createJwksTokenValidator({ jwks: () => (reads++, current), issuer: ISSUER, now: () => NOW, clockToleranceMs: 0 });
      const tokenA = await mint(claims());
      const tokenB = await mint(claims("shop", "cart"), b.privateKey as CryptoKey, "k2");

      await expect(followed.validate(tokenA)).resolves.toMatchObject({ serviceAccount: "web" });
      await expect(followed.validate(tokenB)).rejects.toMatchObject({ code: "ERR_TOKEN_UNKNOWN_KEY" });
      expect(reads).toBe(2); // read at each validation

      current = { keys: [...jwks.keys, jwkB] };
      await expect(followed.validate(tokenB)).resolves.toMatchObject({ serviceAccount: "cart" });
      await expect(followed.validate(tokenA)).resolves.toMatchObject({ serviceAccount: "web" });

      current = { keys: [jwkB] };
      await expect(followed.validate(tokenA)).rejects.toMatchObject({ code: "ERR_TOKEN_UNKNOWN_KEY" });
      await expect(followed.validate(tokenB)).resolves.toMatchObject({ serviceAccount: "cart" });
      // A token signed by B's key under A's kid: refused (the kid names no key now).
      await expect(followed.validate(await mint(claims(), b.privateKey as CryptoKey, "k1"))).rejects.toMatchObject({ code: "ERR_TOKEN_UNKNOWN_KEY" });
      // Signed by A under B's kid: the signature does not verify.
      await expect(followed.validate(await mint(claims(), signingKey, "k2"))).rejects.toMatchObject({ code: "ERR_TOKEN_SIGNATURE" });
    });

    it("fails closed while the function returns no usable set, and recovers when it returns one", async () => {
      let current = { keys: "none" } as unknown as JSONWebKeySet;
      const followed = createJwksTokenValidator({ jwks: () => current, issuer: ISSUER, now: () => NOW });
      await expect(followed.validate(await mint(claims()))).rejects.toMatchObject({ code: "ERR_TOKEN_UNAVAILABLE", message: /JWKS is not usable/ });
      current = { keys: [] };
      await expect(followed.validate(await mint(claims()))).rejects.toMatchObject({ code: "ERR_TOKEN_UNKNOWN_KEY" });
      current = jwks;
      await expect(followed.validate(await mint(claims()))).resolves.toMatchObject({ serviceAccount: "web" });
    });
  });

  it("refuses an http JWKS URL unless it is loopback and explicitly allowed (anyone on the path could add a key)", () => {
    const make = (href: string, allow: boolean) => () => createJwksTokenValidator({ jwks: new URL(href), issuer: ISSUER, allowInsecureLoopbackJwks: allow });
    for (const [href, allow] of [
      ["http://127.0.0.1:8080/jwks.json", false],
      ["http://[::1]/jwks.json", false],
      ["http://keys.example/jwks.json", true],
      ["http://10.0.0.1/jwks.json", true],
      ["ftp://127.0.0.1/jwks.json", true],
      ["file:///etc/jwks.json", true],
    ] as const) {
      expect(make(href, allow), href).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    }
    for (const [href, allow] of [
      ["https://keys.example/jwks.json", false],
      ["http://127.0.0.1:8080/jwks.json", true],
      ["http://localhost/jwks.json", true],
      ["http://[::1]:1/jwks.json", true],
    ] as const) {
      expect(make(href, allow), href).not.toThrow();
    }
  });

  describe("remote JWKS", () => {
    let url: URL;
    let server: ReturnType<typeof createServer>;
    beforeAll(async () => {
      server = createServer((_req, res) => {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify(jwks));
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`);
    });
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it("fetches the keys over HTTP from a loopback host when allowed", async () => {
      const remote = createJwksTokenValidator({ jwks: url, issuer: ISSUER, now: () => NOW, allowInsecureLoopbackJwks: true });
      await expect(remote.validate(await mint(claims()))).resolves.toMatchObject({ namespace: "default" });
    });

    it("reports an unreachable JWKS as unavailable, not as a bad token", async () => {
      const closed = createServer();
      await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
      const port = (closed.address() as AddressInfo).port;
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      const remote = createJwksTokenValidator({ jwks: new URL(`http://127.0.0.1:${port}/jwks.json`), issuer: ISSUER, now: () => NOW, fetchTimeoutMs: 2000, allowInsecureLoopbackJwks: true });
      await expect(remote.validate(await mint(claims()))).rejects.toMatchObject({ code: "ERR_TOKEN_UNAVAILABLE" });
    });
  });
});
