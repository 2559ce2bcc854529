import http2 from "node:http2";
import tls from "node:tls";
import type { TlsCredentials } from "../credentials.js";
import { certificateNotAfter, namesIdentity } from "../credentials.js";
import { ProxyError } from "../errors.js";

/** Options of {@link connectMeshH2}. */
export interface ConnectMeshH2Options {
  address: string;
  port: number;
  /** The endpoint's identity: SNI, and the SAN its certificate must carry. */
  identity: string;
  credentials: TlsCredentials;
  connectTimeoutMs: number;
  localAddress?: string;
  /** HTTP/2 settings of the session. */
  settings?: http2.Settings;
}

/**
 * Opens the one multiplexed mesh connection to an endpoint whose proxy takes
 * HTTP/2: TLS 1.3 with our client certificate, SNI and SAN = the endpoint's
 * identity (a mismatch is an error, never a downgrade), ALPN `h2` required.
 * @throws ProxyError `ERR_NO_CREDENTIALS`, `ERR_CONNECT_TIMEOUT`, `ERR_CONNECT_FAILED`,
 *   `ERR_TLS_IDENTITY_MISMATCH`, `ERR_TLS_UNAUTHORIZED`, `ERR_TLS_HANDSHAKE`, `ERR_TLS_*_CERT_EXPIRED`
 */
export function connectMeshH2(options: ConnectMeshH2Options): Promise<{ session: http2.ClientHttp2Session; socket: tls.TLSSocket; peerNotAfter: Date | undefined }> {
  const { identity, credentials } = options;
  const remote = `${options.address}:${options.port}`;
  const context = credentials.context();
  if (context === undefined) return Promise.reject(new ProxyError("ERR_NO_CREDENTIALS", `no mesh certificate yet: refusing to connect to ${identity}`));
  const ownExpired = credentials.checkExpiry(undefined);
  if (ownExpired !== undefined) return Promise.reject(ownExpired);
  return new Promise((resolve, reject) => {
    let mismatch: ProxyError | undefined;
    const socket = tls.connect({
      host: options.address,
      port: options.port,
      servername: identity,
      secureContext: context,
      minVersion: "TLSv1.3",
      maxVersion: "TLSv1.3",
      ALPNProtocols: ["h2"],
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      checkServerIdentity: (_host, cert) => {
        if (namesIdentity(cert.raw, identity)) return undefined;
        mismatch = new ProxyError("ERR_TLS_IDENTITY_MISMATCH", `${remote} presented a certificate for ${cert.subjectaltname || "no name"}, not ${identity}`);
        return mismatch;
      },
    });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ProxyError("ERR_CONNECT_TIMEOUT", `no mesh HTTP/2 connection to ${identity} at ${remote} within ${options.connectTimeoutMs} ms`));
    }, options.connectTimeoutMs);
    socket.once("error", (cause: Error & { code?: string }) => {
      clearTimeout(timer);
      if (mismatch !== undefined) return reject(mismatch);
      if (socket.connecting || (cause.code ?? "").startsWith("ECONN") || cause.code === "EHOSTUNREACH") {
        return reject(new ProxyError("ERR_CONNECT_FAILED", `connect to ${remote} failed: ${cause.message}`, { cause }));
      }
      if (/certificate|verify|issuer/i.test(cause.message) || /CERT|ISSUER|SELF_SIGNED/.test(cause.code ?? "")) {
        return reject(new ProxyError("ERR_TLS_UNAUTHORIZED", `${remote} (expected ${identity}): ${cause.code ?? cause.message}`, { cause }));
      }
      reject(new ProxyError("ERR_TLS_HANDSHAKE", `TLS with ${identity} at ${remote} failed: ${cause.message}`, { cause }));
    });
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const peerNotAfter = certificateNotAfter(socket.getPeerX509Certificate());
      const expired = credentials.checkExpiry(peerNotAfter);
      if (expired !== undefined) {
        socket.destroy();
        reject(expired);
        return;
      }
      if (socket.alpnProtocol !== "h2") {
        socket.destroy();
        reject(new ProxyError("ERR_TLS_HANDSHAKE", `${identity} at ${remote} did not negotiate h2`));
        return;
      }
      socket.removeAllListeners("error");
      credentials.handshaken("outbound", socket);
      const session = http2.connect(`http://${remote}`, { createConnection: () => socket, ...(options.settings === undefined ? {} : { settings: options.settings }) });
      resolve({ session, socket, peerNotAfter });
    });
  });
}
