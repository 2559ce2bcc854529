import { experimental } from "@grpc/grpc-js";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { pemEncode } from "@meshtls/pki";
import { namesIdentity } from "@meshtls/proxy-core";
import type { CredentialSource, TrustBundleSource } from "@meshtls/proxy-core";

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

/** Options of {@link createDestinationChannelCredentials}. */
export interface DestinationChannelCredentialsOptions {
  /** The identity the destination service must present (a DNS or URI SAN); never its host name. */
  serverName: string;
  /** The live trust anchors (the file the proxy follows). */
  trustBundle: TrustBundleSource;
  /** The proxy's own certificate, presented as the client certificate. */
  credentials: CredentialSource;
}

/** Channel credentials that follow the trust bundle and the proxy's certificate. */
export interface DestinationChannelCredentials {
  credentials: ChannelCredentials;
  /** Stops following the sources. */
  close(): void;
}

/**
 * TLS credentials for the destination channel built from grpc-js's
 * certificate providers: every new connection of the channel takes the
 * current anchors and the current mesh certificate, so a rotated bundle or a
 * refreshed certificate is used from the next (re)connection on, without a
 * new client, and the destination client keeps its resolutions and their
 * last known sets meanwhile. The server is verified against the anchors and
 * by its mesh identity. Like linkerd2-proxy's control-plane clients, the
 * channel waits for the proxy's first certificate before it connects.
 */
export function createDestinationChannelCredentials(options: DestinationChannelCredentialsOptions): DestinationChannelCredentials {
  const caListeners = new Set<CaListener>();
  const identityListeners = new Set<IdentityListener>();
  const caUpdate = (anchors: Uint8Array[]): experimental.CaCertificateUpdate => ({
    caCertificate: Buffer.from(anchors.map((der) => pemEncode("CERTIFICATE", der)).join("")),
  });
  const identityUpdate = (): experimental.IdentityCertificateUpdate | undefined => {
    const held = options.credentials.current();
    return held === undefined ? undefined : { certificate: Buffer.from(held.certificateChainPem), privateKey: Buffer.from(held.privateKeyPem) };
  };
  let ca = caUpdate(options.trustBundle.current());
  let identity = identityUpdate();

  const provider: experimental.CertificateProvider = {
    addCaCertificateListener(listener) {
      caListeners.add(listener);
      process.nextTick(() => caListeners.has(listener) && listener(ca));
    },
    removeCaCertificateListener: (listener) => void caListeners.delete(listener),
    addIdentityCertificateListener(listener) {
      identityListeners.add(listener);
      process.nextTick(() => identity !== undefined && identityListeners.has(listener) && listener(identity));
    },
    removeIdentityCertificateListener: (listener) => void identityListeners.delete(listener),
  };
  const offBundle = options.trustBundle.subscribe((anchors) => {
    ca = caUpdate(anchors);
    for (const listener of caListeners) listener(ca);
  });
  const offCredentials = options.credentials.subscribe(() => {
    const next = identityUpdate();
    if (next === undefined) return;
    identity = next;
    for (const listener of identityListeners) listener(identity);
  });

  const expected = options.serverName;
  const credentials = experimental.createCertificateProviderChannelCredentials(provider, provider, {
    checkServerIdentity: (_host, cert) => (namesIdentity(cert.raw, expected) ? undefined : new Error(`the destination service is not ${expected}`)),
  });
  return {
    credentials,
    close() {
      offBundle();
      offCredentials();
      caListeners.clear();
      identityListeners.clear();
    },
  };
}
