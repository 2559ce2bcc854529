import { experimental } from "@grpc/grpc-js";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { pemEncode } from "@meshtls/pki";
import type { Credentials } from "./credential-store.ts";
import { namesIdentity } from "./peer-names.ts";
import type { TrustAnchorsStore } from "./trust-anchors-store.ts";

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;
/** The part of the workload's credentials a client certificate needs. */
type ClientCertificate = Pick<Credentials, "privateKeyPem" | "certificateChainPem">;

/** Options of {@link createControlPlaneCredentials}. */
export interface ControlPlaneCredentialsOptions {
  /** The identity the control-plane service must present (a DNS or URI SAN); never its host name. */
  serverName: string;
  /** The trust anchors the service is verified against, live (identity's trust-anchors store) or fixed. */
  trustBundle: Pick<TrustAnchorsStore, "current" | "subscribe">;
  /**
   * The workload's certificate, presented as the client certificate (the
   * destination and policy APIs); the channel connects only once there is one.
   * Default none: no client certificate (the identity service's Certify).
   */
  credentials?: {
    current(): ClientCertificate | undefined;
    subscribe(listener: (credentials: ClientCertificate) => void): () => void;
  };
}

/** Channel credentials that follow their sources. */
export interface ControlPlaneCredentials {
  credentials: ChannelCredentials;
  /** Stops following the sources. */
  close(): void;
}

/**
 * The TLS of every meshtls client of the control plane (the certifier's
 * Certify channel, the proxy's destination and policy channels): the server
 * is verified against the trust anchors and by its identity (a DNS or URI
 * SAN equal to `serverName`), never by the host it was reached at. Built on
 * grpc-js's certificate providers, so each new connection of a channel takes
 * the current anchors and the current client certificate: a rotated bundle or
 * a refreshed certificate is used from the next (re)connection on, without a
 * new client. Like linkerd2-proxy's control-plane clients, a channel that
 * presents a client certificate waits for the first one before it connects.
 * Pair it with the channel options `grpc.ssl_target_name_override` and
 * `grpc.default_authority` set to `serverName`, so that the SNI names the
 * identity too.
 */
export function createControlPlaneCredentials(options: ControlPlaneCredentialsOptions): ControlPlaneCredentials {
  const caListeners = new Set<CaListener>();
  const identityListeners = new Set<IdentityListener>();
  const caUpdate = (anchors: Uint8Array[]): experimental.CaCertificateUpdate => ({
    caCertificate: Buffer.from(anchors.map((der) => pemEncode("CERTIFICATE", der)).join("")),
  });
  const identityUpdate = (held: ClientCertificate | undefined): experimental.IdentityCertificateUpdate | undefined =>
    held === undefined ? undefined : { certificate: Buffer.from(held.certificateChainPem), privateKey: Buffer.from(held.privateKeyPem) };
  let ca = caUpdate(options.trustBundle.current());
  let identity = identityUpdate(options.credentials?.current());

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
  const offCredentials = options.credentials?.subscribe((held) => {
    const next = identityUpdate(held);
    if (next === undefined) return;
    identity = next;
    for (const listener of identityListeners) listener(identity);
  });

  const expected = options.serverName;
  const credentials = experimental.createCertificateProviderChannelCredentials(provider, options.credentials === undefined ? null : provider, {
    checkServerIdentity: (_host, cert) => (namesIdentity(cert.raw, expected) ? undefined : new Error(`the control-plane service is not ${expected}`)),
  });
  return {
    credentials,
    close() {
      offBundle();
      offCredentials?.();
      caListeners.clear();
      identityListeners.clear();
    },
  };
}
