import type { CryptoKeyPair } from "@meshtls/pki";

/** A workload's current certificate and key, as TLS layers need them. */
export interface Credentials {
  /** The DNS-like identity the leaf names. */
  identity: string;
  keyPair: CryptoKeyPair;
  /** The private key as PKCS#8 PEM, held in memory only (node:tls wants PEM). */
  privateKeyPem: string;
  /** Leaf certificate, DER. */
  leaf: Uint8Array;
  /** The leaf's issuer first, up towards (never including) the trust anchor; DER. */
  intermediates: Uint8Array[];
  /** Leaf then intermediates, PEM. */
  certificateChainPem: string;
  notAfter: Date;
}

/** The reader side: TLS layers ask for the current value or subscribe to changes. */
export interface CredentialStore {
  /** The current credentials, or undefined before the first certificate (callers must fail closed). */
  current(): Credentials | undefined;
  /** Calls `listener` on every new value; returns an unsubscribe function. */
  subscribe(listener: (credentials: Credentials) => void): () => void;
}

/** A store with its writer side, which the certifier holds. */
export interface WritableCredentialStore extends CredentialStore {
  set(credentials: Credentials): void;
}

/**
 * Creates an empty credential store. `current()` returns undefined once the
 * held certificate's notAfter has passed, so readers fail closed instead of
 * presenting an expired certificate. Listeners that throw do not stop other
 * listeners.
 */
export function createCredentialStore(options: { now?: () => Date } = {}): WritableCredentialStore {
  const now = options.now ?? (() => new Date());
  let value: Credentials | undefined;
  const listeners = new Set<(c: Credentials) => void>();
  return {
    current: () => (value !== undefined && value.notAfter.getTime() > now().getTime() ? value : undefined),
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    set(credentials) {
      value = credentials;
      for (const listener of [...listeners]) {
        try {
          listener(credentials);
        } catch {
          // A faulty subscriber must not keep others from the new certificate.
        }
      }
    },
  };
}
