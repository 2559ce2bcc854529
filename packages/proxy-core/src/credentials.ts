import { randomBytes } from "node:crypto";
import type { X509Certificate } from "node:crypto";
import tls from "node:tls";
import { parseCertificate, pemEncode, PkiError } from "@meshtls/pki";
import { ProxyError } from "./errors.js";
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
  /** The clock certificates' expiry is checked against. Default `() => new Date()`. */
  now?: () => Date;
}

/** A client TLS session kept for resumption, with what resumption would otherwise skip checking. */
export interface ResumableSession {
  /** The session as node's `session` event gives it (TLS 1.3 ticket and secrets). */
  ticket: Buffer;
  /** notAfter of the server certificate the session was verified with: a resumed handshake does not show it again. */
  peerNotAfter: Date;
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
  /**
   * A session to resume with `key` (endpoint and identity), if one is held
   * and both our certificate and the peer's are still valid.
   */
  session(key: string): ResumableSession | undefined;
  /** Keeps a session for `key`; every session is dropped when the credentials or the trust bundle change. */
  storeSession(key: string, session: ResumableSession): void;
  /**
   * Why a mesh TLS connection, resumed or not, must be refused now: our
   * certificate (`ERR_TLS_LOCAL_CERT_EXPIRED`) or the peer's, given by its
   * notAfter (`ERR_TLS_PEER_CERT_EXPIRED`), has expired. `undefined` while
   * both are valid. Resumption skips certificate checks, so every handshake
   * needs this one.
   */
  checkExpiry(peerNotAfter: Date | undefined): ProxyError | undefined;
  /**
   * Makes `server` encrypt and accept session tickets only with keys made
   * for the current credentials and trust bundle: the keys change on every
   * change of either, so no ticket outlives the state it was issued under.
   * Returns a function that stops following.
   */
  bindServer(server: tls.Server): () => void;
  /** Stops following the sources. */
  close(): void;
}

/** Most client sessions kept for resumption. */
const MAX_SESSIONS = 10_000;
/**
 * How long a server session ticket is accepted, in seconds: pass it as the
 * terminating `tls.Server`'s `sessionTimeout`. Tickets are sealed with that
 * server's own keys and timeout whatever context SNICallback picks, so the
 * contexts built here cannot set it (without it OpenSSL's TLS 1.3 default is
 * 7200 s).
 */
export const SESSION_TICKET_LIFETIME_S = 300;

/**
 * Follows the credential store and the trust bundle and builds a
 * `tls.SecureContext` once per new certificate or bundle, never per
 * connection. Open connections keep the context they started with, so a
 * rotation never drops them. A new pair that node:tls refuses (key/cert
 * mismatch, bad PEM) is logged and the previous context stays.
 *
 * Resumption is bounded by identity: every change of credentials or bundle
 * drops the client sessions and changes the ticket keys of every bound
 * server, and {@link TlsCredentials.checkExpiry} refuses a session once
 * either certificate has expired.
 */
export function createTlsCredentials(options: CreateTlsCredentialsOptions): TlsCredentials {
  const logger = options.logger ?? noopLogger;
  const now = options.now ?? (() => new Date());
  let context: tls.SecureContext | undefined;
  let built: Credentials | undefined;
  let anchorsPem = "";
  const listeners = new Set<(credentials: Credentials) => void>();
  // Resumption skips the certificate exchange: a session is only reused for
  // the same endpoint and identity, and never across a change of inputs.
  const sessions = new Map<string, ResumableSession>();
  const servers = new Set<tls.Server>();
  let ticketKeys = randomBytes(48);

  // Called on every change of inputs, before the rebuild and whether or not
  // it succeeds: a session made under the previous inputs is never resumed.
  const forgetSessions = (): void => {
    sessions.clear();
    ticketKeys = randomBytes(48);
    for (const server of servers) server.setTicketKeys(ticketKeys);
  };

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
      });
      built = credentials;
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

  const expired = (notAfter: Date, at: Date): boolean => !(at.getTime() <= notAfter.getTime());

  setAnchors(options.trustBundle.current());
  rebuild();
  const offCredentials = options.credentials.subscribe(() => {
    forgetSessions();
    rebuild();
  });
  const offBundle = options.trustBundle.subscribe((anchors) => {
    setAnchors(anchors);
    logger.info({ anchors: anchors.length }, "trust bundle changed");
    forgetSessions();
    rebuild();
  });

  const checkExpiry = (peerNotAfter: Date | undefined): ProxyError | undefined => {
    const at = now();
    if (built !== undefined && expired(built.notAfter, at)) {
      return new ProxyError("ERR_TLS_LOCAL_CERT_EXPIRED", `our certificate expired at ${built.notAfter.toISOString()}: refusing mesh TLS until a new one arrives`);
    }
    if (peerNotAfter !== undefined && expired(peerNotAfter, at)) {
      return new ProxyError("ERR_TLS_PEER_CERT_EXPIRED", `the peer's certificate expired at ${Number.isNaN(peerNotAfter.getTime()) ? "an unreadable time" : peerNotAfter.toISOString()}`);
    }
    return undefined;
  };

  return {
    context: () => context,
    current: () => (context === undefined ? undefined : built),
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    session(key) {
      const session = sessions.get(key);
      if (session === undefined) return undefined;
      if (checkExpiry(session.peerNotAfter) === undefined) return session;
      sessions.delete(key);
      return undefined;
    },
    storeSession(key, session) {
      if (sessions.size >= MAX_SESSIONS && !sessions.has(key)) {
        const oldest = sessions.keys().next().value;
        if (oldest !== undefined) sessions.delete(oldest);
      }
      sessions.set(key, session);
    },
    checkExpiry,
    bindServer(server) {
      server.setTicketKeys(ticketKeys);
      servers.add(server);
      return () => servers.delete(server);
    },
    close() {
      sessions.clear();
      servers.clear();
      offCredentials();
      offBundle();
      listeners.clear();
    },
  };
}

/**
 * The notAfter of a peer certificate as node shows it; a date that cannot be
 * read is the epoch, so that it counts as expired (fail closed).
 */
export function certificateNotAfter(certificate: X509Certificate): Date;
export function certificateNotAfter(certificate: X509Certificate | undefined): Date | undefined;
export function certificateNotAfter(certificate: X509Certificate | undefined): Date | undefined {
  if (certificate === undefined) return undefined;
  const time = Date.parse(certificate.validTo);
  return new Date(Number.isNaN(time) ? 0 : time);
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
