import type { X509Certificate } from "node:crypto";
import type net from "node:net";
import tls from "node:tls";
import { verifyErrorText } from "../connect-endpoint.js";
import type { TlsCredentials } from "../credentials.js";
import { certificateNotAfter, peerIdentity } from "../credentials.js";
import { ProxyError } from "../errors.js";
import { TRANSPORT_ALPN } from "../transport-header.js";
import type { InboundTarget, Refusal } from "./target.js";
import { refuse } from "./target.js";

/** Options of {@link createTerminateTls}. */
export interface CreateTerminateTlsOptions {
  /** The local identity: the only SNI terminated. */
  identity: string;
  credentials: TlsCredentials;
  /** The handshake must complete within this. */
  handshakeTimeoutMs: number;
}

/** Most client certificates whose identity and expiry are kept, read once each. */
const MAX_KNOWN_PEERS = 1000;

/** A terminated mesh connection: the decrypted stream and the target with the client's identity. */
export interface Terminated {
  target: InboundTarget;
  socket: tls.TLSSocket;
}

/**
 * Creates the layer that terminates mesh TLS 1.3 on a detected connection
 * and names the client: its verified identity, or none (no certificate). A
 * certificate that does not chain to our anchors, or that expired (a resumed
 * session skips the checks), is a refusal, never an anonymous client. Before
 * the first certificate, or with an empty trust bundle, every connection is
 * refused at once (`ERR_NO_CREDENTIALS`), no handshake begun.
 *
 * Detection only hands over ClientHellos whose SNI is `identity` (anything
 * else is passed through opaque); the SNI of the hello that completed the
 * handshake is checked again here.
 */
export function createTerminateTls(options: CreateTerminateTlsOptions): (target: InboundTarget, raw: net.Socket) => Promise<Terminated | Refusal> {
  const { credentials } = options;
  // One TLS server object (never listening) terminates every mesh connection. Its own context follows the
  // credentials (bindServer): no SNICallback, whose certificate callback paused every handshake for a call into JS.
  // A new connection takes the server's context of the moment; open ones keep the one they started with.
  const pending = new Map<net.Socket, (result: { socket: tls.TLSSocket } | { error: Error; socket?: tls.TLSSocket }) => void>();
  const tlsServer = tls.createServer({
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
    maxVersion: "TLSv1.3",
    // h2: the one multiplexed HTTP/2 connection a peer proxy keeps to this endpoint.
    ALPNProtocols: [TRANSPORT_ALPN, "h2"],
    handshakeTimeout: options.handshakeTimeoutMs,
    allowHalfOpen: true,
  });
  // Key, chain, anchors, groups, ticket keys and ticket lifetime: the credentials' current ones, on every rebuild.
  credentials.bindServer(tlsServer);
  // node's server wraps the socket it is given (`_parent`): the handshake waiting on it is found by that object,
  // not by its addresses (reading them back cost two system calls per connection).
  const rawOf = (socket: tls.TLSSocket): net.Socket | undefined => (socket as tls.TLSSocket & { _parent?: net.Socket })._parent;
  tlsServer.on("secureConnection", (socket: tls.TLSSocket) => {
    const raw = rawOf(socket);
    if (raw !== undefined) pending.get(raw)?.({ socket });
  });
  tlsServer.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
    const raw = rawOf(socket);
    if (raw !== undefined) pending.get(raw)?.({ error, socket });
  });

  // A client certificate's identity and expiry, read once per certificate (by its SHA-256): parsing it
  // again for every connection cost more than node's part of a resumed handshake.
  const known = new Map<string, { clientId: string | undefined; notAfter: Date }>();
  const peerOf = (certificate: X509Certificate): { clientId: string | undefined; notAfter: Date } => {
    const key = certificate.fingerprint256;
    let peer = known.get(key);
    if (peer === undefined) {
      if (known.size >= MAX_KNOWN_PEERS) known.delete(known.keys().next().value ?? "");
      peer = { clientId: peerIdentity(certificate.raw), notAfter: certificateNotAfter(certificate) };
      known.set(key, peer);
    }
    return peer;
  };

  const handshake = (raw: net.Socket): Promise<tls.TLSSocket> =>
    new Promise((resolve, reject) => {
      pending.set(raw, (result) => {
        pending.delete(raw);
        if ("error" in result) {
          result.socket?.destroy();
          reject(new ProxyError("ERR_TLS_HANDSHAKE", `mesh TLS handshake failed: ${result.error.message}`, { cause: result.error }));
        } else {
          resolve(result.socket);
        }
      });
      raw.once("close", () => {
        if (pending.delete(raw)) reject(new ProxyError("ERR_TLS_HANDSHAKE", "the client went away during the handshake"));
      });
      tlsServer.emit("connection", raw);
    });

  return async (target, raw) => {
    // Checked when the server's context is taken (the same tick): without a certificate, or with no anchors, nothing
    // to terminate with. The server then still holds no certificate, or the last one: neither may be used.
    if (credentials.context() === undefined) return refuse("ERR_NO_CREDENTIALS", "no certificate yet: refusing mesh TLS", "tls_handshake");
    let secure: tls.TLSSocket;
    try {
      secure = await handshake(raw);
    } catch (error) {
      return { refused: error as ProxyError, errorLabel: "tls_handshake" };
    }
    // node reads the SNI back once per handshake anyway; a second ClientHello (after a HelloRetryRequest) is
    // not seen by detection.
    if (secure.servername !== options.identity) {
      secure.destroy();
      return refuse("ERR_TLS_HANDSHAKE", `SNI ${String(secure.servername)} is not ${options.identity}`, "tls_handshake");
    }
    const certificate = secure.getPeerX509Certificate();
    const peer = certificate === undefined ? undefined : peerOf(certificate);
    const expired = credentials.checkExpiry(peer?.notAfter);
    if (expired !== undefined) {
      secure.destroy();
      return { refused: expired, errorLabel: expired.code === "ERR_TLS_LOCAL_CERT_EXPIRED" ? "tls_local_cert_expired" : "tls_peer_cert_expired" };
    }
    if (peer !== undefined && !secure.authorized) {
      secure.destroy();
      return refuse("ERR_TLS_UNAUTHORIZED", `client certificate refused: ${verifyErrorText(secure.authorizationError)}`, "tls_client_cert_unverified");
    }
    credentials.handshaken("inbound", secure);
    const clientId = peer?.clientId;
    const terminated: InboundTarget = clientId === undefined ? { ...target, tls: { tls: "true" } } : { ...target, tls: { tls: "true", peerId: clientId }, clientId };
    return { target: terminated, socket: secure };
  };
}
