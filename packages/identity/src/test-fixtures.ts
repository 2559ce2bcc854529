// Shared by this package's tests: a real anchor + issuer (pki) and a real token signer (jose).
import { createIssuer, createTrustAnchor, pemEncode } from "@meshtls/pki";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import type { CryptoKey, JSONWebKeySet } from "jose";
import type { IssuerSource } from "./issuer.ts";
import { createStaticIssuerSource, validateIssuer } from "./validate-issuer.ts";

export const TOKEN_ISSUER = "https://meshtls.test";

export async function createPkiFixture(options: { now?: () => Date } = {}) {
  const anchor = await createTrustAnchor(options.now ? { now: options.now } : {});
  const issuer = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey }, ...(options.now ? { now: options.now } : {}) });
  const validated = await validateIssuer({ certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey, trustAnchors: [anchor.certificate] });
  const source: IssuerSource = createStaticIssuerSource({ issuer: validated });
  return { anchor, issuer, source, anchorPem: pemEncode("CERTIFICATE", anchor.certificate) };
}

export async function createTokenSigner() {
  const pair = await generateKeyPair("ES256");
  const jwks: JSONWebKeySet = { keys: [{ ...(await exportJWK(pair.publicKey)), kid: "test", alg: "ES256", use: "sig" }] };
  return {
    jwks,
    async mint(ns: string, sa: string, options: { now?: Date; lifetimeS?: number } = {}): Promise<string> {
      const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
      return new SignJWT({ "kubernetes.io": { namespace: ns, serviceaccount: { name: sa, uid: "u" } } })
        .setProtectedHeader({ alg: "ES256", kid: "test" })
        .setIssuer(TOKEN_ISSUER)
        .setSubject(`system:serviceaccount:${ns}:${sa}`)
        .setAudience(["identity.l5d.io"])
        .setNotBefore(now - 1)
        .setIssuedAt(now - 1)
        .setExpirationTime(now + (options.lifetimeS ?? 3600))
        .sign(pair.privateKey as CryptoKey);
    },
  };
}
