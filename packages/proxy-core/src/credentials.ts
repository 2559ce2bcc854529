import tls from "node:tls";
import { parseCertificate, pemEncode, PkiError } from "@meshtls/pki";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";
import type { CredentialSource, Credentials, TrustBundleSource } from "./sources.js";

/** Options of {@link createTlsCredentials}. */
export interface CreateTlsCredentialsOptions {
  /** The certifier's store: the current key and chain. */
  credentials: CredentialSource;
  /** The trust anchors; several may be trusted at once, and they may change. */
  trustBundle: TrustBundleSource;
  logger?: Logger;
}

/** What the TLS layers read: one secure context, rebuilt only when its inputs change. */
export interface TlsCredentials {
  /**
   * The context for mesh TLS in both directions (our chain as server and as
   * client, the anchors to verify peers, TLS 1.3 only), or `undefined` before
   * the first certificate or with an empty trust bundle: callers fail closed.
   */
  context(): tls.SecureContext | undefined;
  /** The credentials the current context was built from. */
  current(): Credentials | undefined;
  /** Called after every rebuild; returns an unsubscribe function. */
  subscribe(listener: (credentials: Credentials) => void): () => void;
  /** A TLS session to resume with `key` (endpoint and identity), if one is held. */
  session(key: string): Buffer | undefined;
  /** Keeps a session ticket for `key`; every session is dropped when the context is rebuilt. */
  storeSession(key: string, session: Buffer): void;
  /** Stops following the sources. */
  close(): void;
}

/** Most client sessions kept for resumption. */
const MAX_SESSIONS = 10_000;
/** Server session tickets are accepted this long (seconds): the bound on how long a resumed session outlives a trust bundle change. */
const SESSION_TIMEOUT_S = 300;

/**
 * Follows the credential store and the trust bundle and builds a
 * `tls.SecureContext` once per new certificate or bundle, never per
 * connection. Open connections keep the context they started with, so a
 * rotation never drops them. Client sessions are kept for resumption per
 * endpoint and identity and dropped on every rebuild; server tickets live 300 s. A new pair that node:tls refuses (key/cert
 * mismatch, bad PEM) is logged and the previous context stays.
 */
export function createTlsCredentials(options: CreateTlsCredentialsOptions): TlsCredentials {
  const logger = options.logger ?? noopLogger;
  let context: tls.SecureContext | undefined;
  let built: Credentials | undefined;
  let anchorsPem = "";
  const listeners = new Set<(credentials: Credentials) => void>();
  // Resumption skips the certificate exchange: a session is only reused for
  // the same endpoint and identity, and never across a new context.
  const sessions = new Map<string, Buffer>();

  const rebuild = (): void => {
    const credentials = options.credentials.current();
    if (credentials === undefined) return;
    if (anchorsPem === "") {
      logger.error({ code: "ERR_NO_CREDENTIALS" }, "the trust bundle is empty: every mesh TLS handshake fails");
      context = undefined;
      return;
    }
    try {
      context = tls.createSecureContext({
        key: credentials.privateKeyPem,
        cert: credentials.certificateChainPem,
        ca: anchorsPem,
        minVersion: "TLSv1.3",
        maxVersion: "TLSv1.3",
        sessionTimeout: SESSION_TIMEOUT_S,
      });
      built = credentials;
      sessions.clear();
    } catch (cause) {
      logger.error({ code: "ERR_NO_CREDENTIALS", err: String(cause) }, "node:tls refused the new credentials; keeping the previous ones");
      return;
    }
    logger.info({ identity: credentials.identity, notAfter: credentials.notAfter.toISOString() }, "mesh TLS credentials loaded");
    for (const listener of listeners) listener(credentials);
  };

  const setAnchors = (anchors: Uint8Array[]): void => {
    anchorsPem = anchors.map((der) => pemEncode("CERTIFICATE", der)).join("");
  };

  setAnchors(options.trustBundle.current());
  rebuild();
  const offCredentials = options.credentials.subscribe(() => rebuild());
  const offBundle = options.trustBundle.subscribe((anchors) => {
    setAnchors(anchors);
    logger.info({ anchors: anchors.length }, "trust bundle changed");
    rebuild();
  });

  return {
    context: () => context,
    current: () => (context === undefined ? undefined : built),
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    session: (key) => sessions.get(key),
    storeSession(key, session) {
      if (sessions.size >= MAX_SESSIONS && !sessions.has(key)) {
        const oldest = sessions.keys().next().value;
        if (oldest !== undefined) sessions.delete(oldest);
      }
      sessions.set(key, session);
    },
    close() {
      sessions.clear();
      offCredentials();
      offBundle();
      listeners.clear();
    },
  };
}

/**
 * The DNS and URI SANs of a DER certificate, read from the certificate itself.
 * Never from node's `subjectaltname` text: its quoting of values that hold
 * ", " can be confused for more entries (the shape of CVE-2021-44532). A
 * certificate that cannot be parsed names nothing, so it matches no identity.
 */
export function subjectAltNames(certificate: Uint8Array | undefined): { dns: string[]; uri: string[] } {
  if (certificate === undefined) return { dns: [], uri: [] };
  try {
    const { san } = parseCertificate(certificate);
    return { dns: san.dns, uri: san.uri };
  } catch (error) {
    if (error instanceof PkiError) return { dns: [], uri: [] };
    throw error;
  }
}

/** The client identity of a DER peer certificate: its first DNS SAN, else its first URI SAN. */
export function peerIdentity(certificate: Uint8Array | undefined): string | undefined {
  const names = subjectAltNames(certificate);
  return names.dns[0] ?? names.uri[0];
}

/** Whether a DNS or URI SAN of a DER certificate equals `identity` exactly. */
export function namesIdentity(certificate: Uint8Array | undefined, identity: string): boolean {
  const names = subjectAltNames(certificate);
  return names.dns.includes(identity) || names.uri.includes(identity);
}
