import type tls from "node:tls";
import { pemDecode, verifyChain } from "@meshtls/pki";
import { certificateNotAfter } from "../credentials.js";
import type { TlsCredentials } from "../credentials.js";
import type { Credentials, TrustBundleSource } from "../sources.js";

/**
 * Why an open mesh connection was ended, as the `error` label of
 * `inbound_tcp_errors_total` says it: the client's leaf expired, ours did,
 * or the client's chain no longer verifies against the trust bundle.
 */
export type IdentityEnd = "open_peer_cert_expired" | "open_local_cert_expired" | "open_client_cert_untrusted";

/** Options of {@link createIdentityBounds}. */
export interface CreateIdentityBoundsOptions {
  credentials: TlsCredentials;
  /** Followed: at every change, each open connection's client chain is verified again against the new anchors. */
  trustBundle?: TrustBundleSource;
  /** Ends one connection (and says so once); `clientId` as given to `track`. Called at most once per connection. */
  end(socket: tls.TLSSocket, why: IdentityEnd, detail: string, clientId: string | undefined): void;
  /** The clock expiry is compared with. Default `Date.now`. */
  nowMs?: () => number;
}

/** Open terminated mesh connections, each bounded by the identities it was made with. */
export interface IdentityBounds {
  /** Bounds `socket`, whose client is `clientId` (if it sent a certificate), from now until it closes. */
  track(socket: tls.TLSSocket, clientId: string | undefined): void;
  /** Stops following the sources and clears every timer (connections stay open). */
  close(): void;
}

/** setTimeout's longest delay; a later expiry is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Most issuer certificates of our own chains, current and past, remembered to verify clients' leaves with. */
const MAX_KNOWN_ISSUERS = 16;

interface Bounded {
  clientId: string | undefined;
  /** The earlier of the two leaves' notAfter (ms); `Infinity` when neither is known. */
  endsAtMs: number;
  why: IdentityEnd;
  timer?: NodeJS.Timeout;
}

/**
 * The inbound half of "resumption is bounded by identity" for connections
 * already open: a handshake checks both leaves once, so without this a client
 * (with a proxy of its own making) could keep a connection, and the identity
 * policy granted it, past its certificate's expiry or the removal of its
 * anchor. Each connection gets one unref'd timer at the earlier notAfter, and
 * a trust bundle change verifies every open connection's client chain again.
 */
export function createIdentityBounds(options: CreateIdentityBoundsOptions): IdentityBounds {
  const nowMs = options.nowMs ?? Date.now;
  const open = new Map<tls.TLSSocket, Bounded>();

  const end = (socket: tls.TLSSocket, why: IdentityEnd, detail: string): void => {
    const bounded = open.get(socket);
    if (bounded === undefined) return;
    clearTimeout(bounded.timer);
    open.delete(socket);
    options.end(socket, why, detail, bounded.clientId);
  };

  const arm = (socket: tls.TLSSocket, bounded: Bounded): void => {
    if (!Number.isFinite(bounded.endsAtMs)) return;
    // Expired means strictly after notAfter, as every handshake compares it.
    const waitMs = bounded.endsAtMs + 1 - nowMs();
    if (waitMs <= 0) {
      end(socket, bounded.why, `expired at ${new Date(bounded.endsAtMs).toISOString()}`);
      return;
    }
    bounded.timer = setTimeout(() => arm(socket, bounded), Math.min(waitMs, MAX_TIMER_MS));
    bounded.timer.unref();
  };

  // node shows a server only the client's leaf, not the intermediates it sent: a leaf is
  // verified with the issuers of our own chains, current and past (an issuer rotation
  // leaves clients under the previous issuer for a while). A client under another issuer
  // is closed at a bundle change and reconnects through a full handshake.
  const knownIssuers: Uint8Array[] = [];
  const learn = (credentials: Credentials | undefined): void => {
    if (credentials === undefined) return;
    let blocks: { der: Uint8Array }[];
    try {
      blocks = pemDecode(credentials.certificateChainPem);
    } catch {
      // node:tls refuses such a chain too: nothing to learn.
      return;
    }
    for (const { der } of blocks.slice(1)) {
      if (knownIssuers.some((known) => Buffer.from(known).equals(der))) continue;
      knownIssuers.push(der);
      if (knownIssuers.length > MAX_KNOWN_ISSUERS) knownIssuers.shift();
    }
  };
  learn(options.credentials.current());
  const offCredentials = options.credentials.subscribe(learn);

  const offBundle = options.trustBundle?.subscribe((anchors) => {
    for (const [socket, bounded] of open) {
      // Read again from the socket rather than kept: nothing per connection but a timer.
      const [leaf, ...sent] = peerChain(socket);
      if (leaf === undefined) continue;
      // Chained to an anchor, as the handshake did; name, purpose and expiry are not this check's business.
      void verifyChain({ leaf, intermediates: [...sent, ...knownIssuers], anchors, profile: "rfc5280", now: new Date(Math.min(nowMs(), bounded.endsAtMs)) }).then((result) => {
        if (!result.ok) end(socket, "open_client_cert_untrusted", `the trust bundle changed: ${result.reason}`);
      });
    }
  });

  return {
    track(socket, clientId) {
      const peer = socket.getPeerX509Certificate();
      const peerEndsMs = certificateNotAfter(peer)?.getTime() ?? Infinity;
      // Ours as this connection presented it (a rotation since does not extend it); else the current one.
      const localEndsMs = (certificateNotAfter(socket.getX509Certificate()) ?? options.credentials.current()?.notAfter)?.getTime() ?? Infinity;
      const bounded: Bounded = { clientId, endsAtMs: Math.min(peerEndsMs, localEndsMs), why: peerEndsMs <= localEndsMs ? "open_peer_cert_expired" : "open_local_cert_expired" };
      open.set(socket, bounded);
      socket.once("close", () => {
        clearTimeout(bounded.timer);
        open.delete(socket);
      });
      arm(socket, bounded);
    },
    close() {
      offBundle?.();
      offCredentials();
      for (const bounded of open.values()) clearTimeout(bounded.timer);
      open.clear();
    },
  };
}

/** The client's leaf, then any certificates node shows above it (on a server, node 24 shows the leaf alone). */
function peerChain(socket: tls.TLSSocket): Uint8Array[] {
  const chain: Uint8Array[] = [];
  let certificate: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (certificate?.raw !== undefined && chain.length < 10) {
    chain.push(new Uint8Array(certificate.raw));
    const issuer: tls.DetailedPeerCertificate | undefined = certificate.issuerCertificate;
    if (issuer === undefined || issuer === certificate || issuer.raw?.equals(certificate.raw) === true) break;
    certificate = issuer;
  }
  return chain;
}
