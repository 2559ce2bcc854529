// Test support (not exported): a real mesh PKI made by @meshtls/pki, and
// in-process sources of the shapes proxy-core reads.
import { createIssuer, createTrustAnchor, exportPrivateKey, generateKeyPair, issueLeaf, pemEncode } from "@meshtls/pki";
import type { CertifiedKey } from "@meshtls/pki";
import type { Credentials, CredentialSource, EndpointResolver, EndpointSet, Resolution, TrustBundleSource } from "./sources.js";

export const identityOf = (sa: string, ns = "default"): string => `${sa}.${ns}.serviceaccount.identity.meshtls.cluster.local`;

export interface TestMesh {
  anchor: CertifiedKey;
  issuer: CertifiedKey;
  issue(identity: string, options?: { lifetimeMs?: number }): Promise<Credentials & { leaf: Uint8Array }>;
}

export async function createTestMesh(): Promise<TestMesh> {
  const anchor = await createTrustAnchor();
  const issuer = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey } });
  return {
    anchor,
    issuer,
    async issue(identity, options = {}) {
      const keyPair = await generateKeyPair();
      const leaf = await issueLeaf({
        issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey },
        publicKey: keyPair.publicKey,
        identity,
        spiffeId: `spiffe://cluster.local/ns/${identity.split(".")[1] ?? "default"}/sa/${identity.split(".")[0] ?? "x"}`,
        ...(options.lifetimeMs === undefined ? {} : { lifetimeMs: options.lifetimeMs, skewMs: 0 }),
      });
      const notAfter = new Date(Date.now() + (options.lifetimeMs ?? 86_400_000));
      return {
        identity,
        leaf,
        privateKeyPem: (await exportPrivateKey(keyPair.privateKey)) as string,
        certificateChainPem: pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuer.certificate),
        notAfter,
      };
    },
  };
}

/** A store with a writer, the shape of @meshtls/identity's. */
export function createStore(initial?: Credentials): CredentialSource & { set(c: Credentials): void } {
  let value = initial;
  const listeners = new Set<(c: Credentials) => void>();
  return {
    current: () => value,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    set(c) {
      value = c;
      for (const l of listeners) l(c);
    },
  };
}

export function createBundle(anchors: Uint8Array[]): TrustBundleSource & { set(a: Uint8Array[]): void } {
  let value = anchors;
  const listeners = new Set<(a: Uint8Array[]) => void>();
  return {
    current: () => value,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    set(a) {
      value = a;
      for (const l of listeners) l(a);
    },
  };
}

/** An in-process resolver over a mutable table. */
export function createTableResolver(table: Map<string, EndpointSet>): EndpointResolver {
  return {
    resolve(authority): Resolution {
      const set = table.get(authority) ?? { exists: false, endpoints: [] };
      return {
        current: () => set,
        ready: () => Promise.resolve(set),
        subscribe: () => () => undefined,
        close: () => undefined,
      };
    },
  };
}
