import { randomBytes } from "node:crypto";
import type { X509Certificate } from "node:crypto";
import tls from "node:tls";
import { namesIdentity, subjectAltNames } from "@meshtls/identity";
import { pemEncode } from "@meshtls/pki";
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
  /**
   * Key exchange groups, most preferred first, as OpenSSL names them
   * (`X25519MLKEM768`, `X25519`, `P-256`, …). Default {@link DEFAULT_TLS_GROUPS}.
   * See {@link groupsForOpenssl} for the key shares a ClientHello carries.
   */
  groups?: readonly string[];
  /** Called once per completed mesh TLS handshake, resumed or not, with its key exchange group ({@link groupLabel}). */
  onHandshake?: (direction: "inbound" | "outbound", group: string) => void;
}

/** The mesh key exchange groups: the post-quantum hybrid first, X25519 and P-256 for peers without it. */
export const DEFAULT_TLS_GROUPS: readonly string[] = ["X25519MLKEM768", "X25519", "P-256"];

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
   * Makes `server` terminate with the current credentials: its own context
   * (`setSecureContext`) gets our key and chain, the anchors, the groups and
   * TLS 1.3 only, at once and on every rebuild, so it needs no SNICallback
   * (one JS round trip per handshake) and open connections keep the context
   * they started with. Its session tickets are sealed with keys made for the
   * current credentials and trust bundle, which change on every change of
   * either (so no ticket outlives the state it was issued under), and live
   * {@link SESSION_TICKET_LIFETIME_S}. Before the first certificate the
   * server keeps the context it was created with: callers check
   * {@link TlsCredentials.context} first and fail closed. Returns a function
   * that stops following.
   */
  bindServer(server: tls.Server): () => void;
  /**
   * Reports a completed mesh TLS handshake to `onHandshake` with the group it
   * negotiated, read from `socket` ({@link negotiatedGroup}).
   */
  handshaken(direction: "inbound" | "outbound", socket: tls.TLSSocket): void;
  /** The OpenSSL group list every mesh context and the terminating server use ({@link groupsForOpenssl}). */
  readonly ecdhCurve: string;
  /** Stops following the sources. */
  close(): void;
}

/** Most client sessions kept for resumption. */
const MAX_SESSIONS = 10_000;
/**
 * How long a server session ticket is accepted, in seconds: every bound
 * server's context is given it (without it OpenSSL's TLS 1.3 default is
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
 * @throws ProxyError `ERR_CONFIG_INVALID` for groups this node's OpenSSL does not know
 */
export function createTlsCredentials(options: CreateTlsCredentialsOptions): TlsCredentials {
  const logger = options.logger ?? noopLogger;
  const now = options.now ?? (() => new Date());
  const ecdhCurve = groupsForOpenssl(options.groups ?? DEFAULT_TLS_GROUPS);
  // One known group offered and accepted: every handshake used it (resumed ones too), nothing to read back per
  // connection (a server reads it from the whole session encoded again, its peer's certificate included).
  const onlyGroup = options.groups?.length === 1 ? groupLabel(options.groups[0]) : undefined;
  const fixedGroup = onlyGroup === "other" || onlyGroup === "unknown" ? undefined : onlyGroup;
  try {
    tls.createSecureContext({ ecdhCurve });
  } catch (cause) {
    throw new ProxyError("ERR_CONFIG_INVALID", `this node's OpenSSL (${process.versions.openssl}) does not support the TLS groups ${ecdhCurve}`, { cause });
  }
  let context: tls.SecureContext | undefined;
  let built: Credentials | undefined;
  // What `context` was built from: the bound servers' contexts are built from the same.
  let contextOptions: tls.SecureContextOptions | undefined;
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

  // A server's own context, not one an SNICallback swaps in: no certificate callback pauses each handshake for JS.
  // node's setSecureContext keeps neither ticket keys set since nor the ticket lifetime: both are given each time.
  const serve = (server: tls.Server): void => {
    if (contextOptions === undefined) return;
    try {
      server.setSecureContext({ ...contextOptions, ticketKeys, sessionTimeout: SESSION_TICKET_LIFETIME_S });
    } catch (cause) {
      logger.error({ code: "ERR_NO_CREDENTIALS", err: String(cause) }, "node:tls refused the new credentials for the inbound server; keeping the previous ones");
    }
  };

  const rebuild = (): void => {
    const credentials = options.credentials.current();
    if (credentials === undefined) return;
    if (anchorsPem === "") {
      logger.error({ code: "ERR_NO_CREDENTIALS" }, "the trust bundle is empty: every mesh TLS handshake fails");
      context = undefined;
      contextOptions = undefined;
      return;
    }
    const next: tls.SecureContextOptions = {
      key: credentials.privateKeyPem,
      cert: credentials.certificateChainPem,
      ca: anchorsPem,
      ecdhCurve,
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
    };
    try {
      context = tls.createSecureContext(next);
      built = credentials;
      contextOptions = next;
    } catch (cause) {
      logger.error({ code: "ERR_NO_CREDENTIALS", err: String(cause) }, "node:tls refused the new credentials; keeping the previous ones");
      return;
    }
    for (const server of servers) serve(server);
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
    handshaken(direction, socket) {
      options.onHandshake?.(direction, fixedGroup ?? negotiatedGroup(socket));
    },
    ecdhCurve,
    bindServer(server) {
      server.setTicketKeys(ticketKeys);
      serve(server);
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
 * The OpenSSL 3.5 group list for `groups`: the same order, with a key share
 * (`*`) for the first group and, when that one is a post-quantum hybrid or
 * ML-KEM group, for the first classical group after it. So the default
 * ClientHello carries X25519MLKEM768 and X25519 shares: a peer without
 * ML-KEM (OpenSSL 3.0-3.4, rustls before 0.23.18) picks X25519 with no
 * HelloRetryRequest, and one with it picks the hybrid. A server choosing
 * P-256 only costs one HelloRetryRequest. As a server, OpenSSL picks the
 * first group of this list among the client's key shares, else asks (HRR)
 * for the first it supports.
 * @throws ProxyError `ERR_CONFIG_INVALID` for an empty list or a name that is not a group name
 */
export function groupsForOpenssl(groups: readonly string[]): string {
  if (groups.length === 0) throw new ProxyError("ERR_CONFIG_INVALID", "no TLS key exchange group given");
  const bad = groups.find((group) => !/^[A-Za-z0-9_-]{1,40}$/.test(group));
  if (bad !== undefined) throw new ProxyError("ERR_CONFIG_INVALID", `${JSON.stringify(bad.slice(0, 60))} is not a TLS group name`);
  const postQuantum = (group: string): boolean => /MLKEM/i.test(group);
  const first = groups[0] ?? "";
  const classical = postQuantum(first) ? groups.findIndex((group) => !postQuantum(group)) : -1;
  return groups.map((group, i) => (i === 0 || i === classical ? `*${group}` : group)).join(":");
}

/** IANA TLS group ids to the names `tls_handshakes_total` reports: OpenSSL's fixed list, so a bounded label. */
const GROUP_NAMES = new Map<number, string>([
  [0x17, "P-256"],
  [0x18, "P-384"],
  [0x19, "P-521"],
  [0x1d, "X25519"],
  [0x1e, "X448"],
  [0x100, "ffdhe2048"],
  [0x101, "ffdhe3072"],
  [0x102, "ffdhe4096"],
  [0x103, "ffdhe6144"],
  [0x104, "ffdhe8192"],
  [0x200, "MLKEM512"],
  [0x201, "MLKEM768"],
  [0x202, "MLKEM1024"],
  [0x11eb, "SecP256r1MLKEM768"],
  [0x11ec, "X25519MLKEM768"],
  [0x11ed, "SecP384r1MLKEM1024"],
]);
/** OpenSSL's curve names that differ from its group names. */
const CURVE_ALIASES = new Map([
  ["prime256v1", "P-256"],
  ["secp256r1", "P-256"],
  ["secp384r1", "P-384"],
  ["secp521r1", "P-521"],
]);
const KNOWN_GROUPS = new Set(GROUP_NAMES.values());

/** A group name as `tls_handshakes_total` reports it: one of a fixed list, else `other`. */
export function groupLabel(name: string | undefined): string {
  if (name === undefined) return "unknown";
  const group = CURVE_ALIASES.get(name) ?? name;
  return KNOWN_GROUPS.has(group) ? group : "other";
}

/**
 * The key exchange group a finished TLS 1.3 handshake used, as
 * {@link groupLabel} names it. A client reads it with
 * `getEphemeralKeyInfo()` (Node 24: `{ type: "TLSGroup", name }`); node gives
 * a server nothing, so a server reads the group OpenSSL keeps in the session
 * (`kex_group`, field [19] of its SSL_SESSION encoding). `unknown` when
 * neither says.
 */
export function negotiatedGroup(socket: tls.TLSSocket): string {
  const info = socket.getEphemeralKeyInfo() as { name?: string } | null | undefined;
  if (info !== null && info !== undefined && typeof info.name === "string") return groupLabel(info.name);
  const session = socket.getSession();
  const id = session === undefined ? undefined : sessionKexGroup(session);
  return id === undefined ? "unknown" : (GROUP_NAMES.get(id) ?? "other");
}

/** The `kex_group` of an OpenSSL SSL_SESSION (DER: SEQUENCE { …, [19] EXPLICIT INTEGER }), if present and well formed. */
export function sessionKexGroup(der: Uint8Array): number | undefined {
  // One DER header: tag, then the content's start and end; undefined when it does not fit.
  const header = (at: number, end: number): { tag: number; start: number; end: number } | undefined => {
    if (at + 2 > end) return undefined;
    const tag = der[at] ?? 0;
    let length = der[at + 1] ?? 0;
    let start = at + 2;
    if (length & 0x80) {
      const bytes = length & 0x7f;
      if (bytes === 0 || bytes > 3 || start + bytes > end) return undefined;
      length = 0;
      for (let i = 0; i < bytes; i++) length = length * 256 + (der[start + i] ?? 0);
      start += bytes;
    }
    return start + length > end ? undefined : { tag, start, end: start + length };
  };
  const outer = header(0, der.length);
  if (outer === undefined || outer.tag !== 0x30) return undefined;
  for (let at = outer.start; at < outer.end; ) {
    const field = header(at, outer.end);
    if (field === undefined) return undefined;
    if (field.tag === 0xb3) {
      const integer = header(field.start, field.end);
      if (integer === undefined || integer.tag !== 0x02 || integer.end - integer.start > 3) return undefined;
      let value = 0;
      for (let i = integer.start; i < integer.end; i++) value = value * 256 + (der[i] ?? 0);
      return value;
    }
    at = field.end;
  }
  return undefined;
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

// The peer names are read as @meshtls/identity reads them (the control plane's clients check servers with the same function).
export { namesIdentity, subjectAltNames };

/** The client identity of a DER peer certificate: its first DNS SAN, else its first URI SAN. */
export function peerIdentity(certificate: Uint8Array | undefined): string | undefined {
  const names = subjectAltNames(certificate);
  return names.dns[0] ?? names.uri[0];
}

