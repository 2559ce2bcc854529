import net from "node:net";
import tls from "node:tls";
import type { HostPort } from "./address.js";
import { formatHostPort } from "./address.js";
import type { TlsCredentials } from "./credentials.js";
import { certificateNotAfter, namesIdentity } from "./credentials.js";
import { ProxyError } from "./errors.js";
import type { DirectRead } from "./forward.js";
import type { Endpoint } from "./sources.js";
import type { TlsState } from "./tls-state.js";
import { encodeHeader, TRANSPORT_ALPN } from "./transport-header.js";

/**
 * An endpoint with what Linkerd's destination may add (as
 * `@meshtls/destination`'s client reads it): the SNI when it is not the
 * identity, and a gateway's `authority_override`.
 */
export interface MeshEndpoint extends Endpoint {
  /**
   * The SNI to send (Linkerd's `server_name`); default `identity`. Required in
   * practice for a URI identity (`spiffe://…`), which the peer's certificate
   * must carry as a URI SAN.
   */
  serverName?: string;
  /**
   * `host:port` of the real target behind a gateway: the connection goes to
   * the gateway with the transport ALPN and a header naming that host and
   * port (linkerd2-proxy `outbound/src/tcp/tagged_transport.rs`).
   */
  authorityOverride?: string;
}

/** Options of {@link connectEndpoint}. */
export interface ConnectEndpointOptions {
  endpoint: MeshEndpoint;
  /** The mesh TLS context; required for an endpoint with an identity. */
  credentials: TlsCredentials;
  /**
   * The authority being reached. Only for logs: as Linkerd's proxy, the
   * transport header names a target only for a gateway (`authorityOverride`).
   */
  authority?: string;
  /** The session protocol to announce in the transport header (the inbound then skips detection). Default: none. */
  sessionProtocol?: "http1" | "http2";
  /** Fail if the TCP connect and TLS handshake take longer. Default 3000. */
  connectTimeoutMs?: number;
  /** Local address to bind outgoing connections to. Default: the OS's choice. */
  localAddress?: string;
  /**
   * The caller's first bytes for the endpoint, asked for once the connection passed every check: sent with the
   * transport header in one write (one TLS record), where writing them after it took a record and a system call more.
   */
  firstBytes?: () => Buffer | undefined;
  /** Reads of the connection go to this `onread` ({@link DirectRead}): for a connection forwarded as bytes. */
  onread?: DirectRead["onread"];
}

/** An open connection to an endpoint and the TLS state it was opened with. */
export interface EndpointConnection {
  socket: net.Socket | tls.TLSSocket;
  tls: TlsState;
  /** `dialled` as `host:port` (`[v6]:port`, as everywhere else), for labels and messages. */
  remote: string;
  /** The address actually dialled (the inbound port for opaque transport). */
  dialled: HostPort;
  /** With an identity: the server certificate's notAfter (for a resumed session, the one first seen). */
  peerNotAfter?: Date;
}

/**
 * Opens a connection to one endpoint. With an identity: TLS 1.3 with our
 * client certificate, SNI = the endpoint's `serverName` or else its identity,
 * the chain verified against the anchors and a DNS or URI SAN equal to the
 * identity required (a URI identity can only match a URI SAN); a mismatch is
 * an error, never a downgrade. A stored session is offered only while our
 * certificate and the server's are valid, and every handshake, resumed or
 * not, is refused once either has expired. An opaque-transport hint dials the inbound
 * port with ALPN `transport.l5d.io/v1` and writes the transport header first
 * (the target port, and the session protocol when given); an
 * `authorityOverride` (a gateway) does the same with a header naming the
 * override's host and port. An override on an endpoint without identity is
 * refused: a gateway is only reached over mTLS.
 * Without an identity: plaintext, `not_provided_by_service_discovery`.
 * @throws ProxyError `ERR_NO_CREDENTIALS`, `ERR_CONNECT_TIMEOUT`, `ERR_CONNECT_FAILED`,
 *   `ERR_TLS_UNAUTHORIZED`, `ERR_TLS_IDENTITY_MISMATCH`, `ERR_TLS_HANDSHAKE`,
 *   `ERR_TLS_LOCAL_CERT_EXPIRED`, `ERR_TLS_PEER_CERT_EXPIRED`
 */
export function connectEndpoint(options: ConnectEndpointOptions): Promise<EndpointConnection> {
  const { endpoint } = options;
  const timeoutMs = options.connectTimeoutMs ?? 3000;
  const identity = endpoint.identity;
  const localAddress = options.localAddress === undefined ? {} : { localAddress: options.localAddress };
  const onread = options.onread === undefined ? {} : { onread: options.onread };

  if (identity === undefined && endpoint.authorityOverride !== undefined) {
    return Promise.reject(new ProxyError("ERR_TLS_UNAUTHORIZED", `${formatHostPort(endpoint.address, endpoint.port)} is a gateway for ${endpoint.authorityOverride} but has no identity: refusing to reach it without mTLS`));
  }
  if (identity === undefined) {
    const dialled = { host: endpoint.address, port: endpoint.port };
    const remote = formatHostPort(dialled.host, dialled.port);
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: endpoint.address, port: endpoint.port, allowHalfOpen: true, noDelay: true, ...localAddress, ...onread });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ProxyError("ERR_CONNECT_TIMEOUT", `no connection to ${remote} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("error", (cause) => {
        clearTimeout(timer);
        reject(new ProxyError("ERR_CONNECT_FAILED", `connect to ${remote} failed: ${cause.message}`, { cause }));
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        const first = options.firstBytes?.();
        if (first !== undefined) socket.write(first);
        resolve({ socket, tls: { tls: "no_identity", reason: "not_provided_by_service_discovery" }, remote, dialled });
      });
    });
  }

  const context = options.credentials.context();
  if (context === undefined) {
    return Promise.reject(new ProxyError("ERR_NO_CREDENTIALS", `no mesh certificate yet: refusing to connect to ${identity}`));
  }
  // An expired certificate of ours would be refused by the server; a stored session must not hide it.
  const ownExpired = options.credentials.checkExpiry(undefined);
  if (ownExpired !== undefined) return Promise.reject(ownExpired);
  let header: Buffer | undefined;
  try {
    header = transportHeader(endpoint, options.sessionProtocol);
  } catch (error) {
    return Promise.reject(error);
  }
  const opaque = header !== undefined;
  const port = endpoint.opaqueTransportPort ?? endpoint.port;
  const serverName = endpoint.serverName ?? identity;
  const dialled = { host: endpoint.address, port };
  const remote = formatHostPort(dialled.host, dialled.port);
  const sessionKey = `${remote}|${identity}`;
  const stored = options.credentials.session(sessionKey);
  return new Promise((resolve, reject) => {
    let mismatch: ProxyError | undefined;
    const socket = tls.connect({
      ...(stored === undefined ? {} : { session: stored.ticket }),
      host: endpoint.address,
      port,
      servername: serverName,
      secureContext: context,
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ...(opaque ? { ALPNProtocols: [TRANSPORT_ALPN] } : {}),
      ...localAddress,
      ...onread,
      // The server must be the endpoint's identity, never the host name.
      checkServerIdentity: (_host, cert) => {
        if (namesIdentity(cert.raw, identity)) return undefined;
        mismatch = new ProxyError(
          "ERR_TLS_IDENTITY_MISMATCH",
          `${remote} presented a certificate for ${cert.subjectaltname || "no name"}, not ${identity}`,
        );
        return mismatch;
      },
    });
    // A resumed handshake shows no server certificate: its expiry is the one
    // seen when the session was first made (and verified, chain and name).
    const peerNotAfter = (): Date | undefined => (socket.isSessionReused() ? stored?.peerNotAfter : certificateNotAfter(socket.getPeerX509Certificate()));
    // Only a ticket from this identity's server at this address is reused, and
    // only once this connection passed every check (tickets may come earlier).
    let accepted: Date | undefined;
    let early: Buffer | undefined;
    const keep = (ticket: Buffer, notAfter: Date): void => options.credentials.storeSession(sessionKey, { ticket, peerNotAfter: notAfter });
    socket.on("session", (ticket: Buffer) => {
      if (accepted === undefined) early = ticket;
      else keep(ticket, accepted);
    });
    // Before the handshake: Nagle would hold our first bytes behind the
    // unacknowledged Finished until the peer's delayed ACK (tens of ms).
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ProxyError("ERR_CONNECT_TIMEOUT", `no mesh TLS connection to ${identity} at ${remote} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("error", (cause: Error & { code?: string }) => {
      clearTimeout(timer);
      if (mismatch !== undefined) return reject(mismatch);
      if (cause.code === "CERT_HAS_EXPIRED") {
        return reject(new ProxyError("ERR_TLS_PEER_CERT_EXPIRED", `${remote} (expected ${identity}) presented an expired certificate`, { cause }));
      }
      if (socket.connecting || (cause.code ?? "").startsWith("ECONN") || cause.code === "EHOSTUNREACH") {
        return reject(new ProxyError("ERR_CONNECT_FAILED", `connect to ${remote} failed: ${cause.message}`, { cause }));
      }
      if (socket.authorizationError !== undefined && socket.authorizationError !== null) {
        return reject(new ProxyError("ERR_TLS_UNAUTHORIZED", `${remote} (expected ${identity}): ${verifyErrorText(socket.authorizationError)}`, { cause }));
      }
      if (/certificate|verify|issuer/i.test(cause.message) || /CERT|ISSUER|SELF_SIGNED/.test(cause.code ?? "")) {
        return reject(new ProxyError("ERR_TLS_UNAUTHORIZED", `${remote} (expected ${identity}): ${cause.code ?? cause.message}`, { cause }));
      }
      reject(new ProxyError("ERR_TLS_HANDSHAKE", `TLS with ${identity} at ${remote} failed: ${cause.message}`, { cause }));
    });
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const notAfter = peerNotAfter();
      const expired = options.credentials.checkExpiry(notAfter);
      if (expired !== undefined) {
        socket.destroy();
        reject(expired);
        return;
      }
      if (opaque && socket.alpnProtocol !== TRANSPORT_ALPN) {
        socket.destroy();
        reject(new ProxyError("ERR_TLS_HANDSHAKE", `${identity} at ${remote} did not negotiate ${TRANSPORT_ALPN}`));
        return;
      }
      socket.removeAllListeners("error");
      accepted = notAfter;
      if (early !== undefined && notAfter !== undefined) keep(early, notAfter);
      const first = options.firstBytes?.();
      const opening = header === undefined ? first : first === undefined ? header : Buffer.concat([header, first]);
      if (opening !== undefined) socket.write(opening);
      options.credentials.handshaken("outbound", socket);
      resolve({ socket, tls: { tls: "true", peerId: identity }, remote, dialled, ...(notAfter === undefined ? {} : { peerNotAfter: notAfter }) });
    });
  });
}

/**
 * The transport header an endpoint needs, if any: for a gateway
 * (`authorityOverride`) the override's port and host as `name`; for an
 * opaque-transport endpoint its own port and no name.
 * @throws ProxyError `ERR_TARGET_FORBIDDEN` for an override that is not `host:port`
 */
function transportHeader(endpoint: MeshEndpoint, sessionProtocol: "http1" | "http2" | undefined): Buffer | undefined {
  if (endpoint.opaqueTransportPort === undefined && endpoint.authorityOverride === undefined) return undefined;
  const key = sessionProtocol ?? "none";
  let encoded = encodedHeaders.get(endpoint);
  const known = encoded?.[key];
  if (known !== undefined) return known;
  const header = encodeTransportHeaderOf(endpoint, sessionProtocol);
  if (encoded === undefined) encodedHeaders.set(endpoint, (encoded = {}));
  encoded[key] = header;
  return header;
}

/**
 * Each endpoint's encoded headers, by session protocol: the same bytes for every connection to it (protobuf encoding
 * them again cost more per connection than the rest of the header's handling). A memo of a pure function, kept while
 * discovery keeps the endpoint object; written headers are never modified.
 */
const encodedHeaders = new WeakMap<MeshEndpoint, Partial<Record<"none" | "http1" | "http2", Buffer>>>();

function encodeTransportHeaderOf(endpoint: MeshEndpoint, sessionProtocol: "http1" | "http2" | undefined): Buffer {
  const protocol = sessionProtocol === undefined ? {} : { sessionProtocol };
  const override = endpoint.authorityOverride;
  if (override !== undefined) {
    const colon = override.lastIndexOf(":");
    const host = override.slice(0, colon);
    const port = Number(override.slice(colon + 1));
    if (colon <= 0 || !/^[0-9]{1,5}$/.test(override.slice(colon + 1)) || port < 1 || port > 65535 || host.includes(":")) {
      throw new ProxyError("ERR_TARGET_FORBIDDEN", `authority override ${JSON.stringify(override.slice(0, 300))} is not <host>:<port>`);
    }
    return encodeHeader({ port, name: host, ...protocol });
  }
  return encodeHeader({ port: endpoint.port, ...protocol });
}

/**
 * OpenSSL's verification error as its code (`UNABLE_TO_GET_ISSUER_CERT`), not node's message: on Node 24 the
 * message ends with advice to try the system CA store, which never applies to mesh anchors.
 */
export function verifyErrorText(error: Error | string | undefined | null): string {
  if (error === undefined || error === null) return "unverified";
  if (typeof error === "string") return error;
  const { code } = error as Error & { code?: unknown };
  return typeof code === "string" && code !== "" ? code : error.message;
}
