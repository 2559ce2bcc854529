// A throwaway mesh PKI for the benches: one trust anchor, one issuer, and leaves for the identities asked for,
// made with @meshtls/pki as the identity service would issue them.
import { createIssuer, createTrustAnchor, exportPrivateKey, generateKeyPair, issueLeaf, pemEncode } from "@meshtls/pki";

/** The mesh identity of ServiceAccount `sa` in namespace `default`. */
export const identityOf = (sa) => `${sa}.default.serviceaccount.identity.meshtls.cluster.local`;

/**
 * Makes an anchor and an issuer under it. `leaf(sa)` issues a leaf for ServiceAccount `sa` (its identity and SPIFFE
 * ID) and returns its key (PKCS#8 PEM) and chain (leaf + issuer, PEM); `caPem` and `caDer` are the anchor.
 */
export async function createBenchPki() {
  const anchor = await createTrustAnchor();
  const issuer = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey } });
  const leaf = async (sa) => {
    const pair = await generateKeyPair();
    const certificate = await issueLeaf({ issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey }, publicKey: pair.publicKey, identity: identityOf(sa), spiffeId: `spiffe://cluster.local/ns/default/sa/${sa}` });
    return { key: await exportPrivateKey(pair.privateKey), cert: pemEncode("CERTIFICATE", certificate) + pemEncode("CERTIFICATE", issuer.certificate) };
  };
  return { caPem: pemEncode("CERTIFICATE", anchor.certificate), caDer: Buffer.from(anchor.certificate), leaf };
}
