// Process-level test support for session resumption and certificate recovery:
// short-lived leaves made from a mesh folder's issuer, a plain node:tls client
// that offers sessions without bounding them itself, and an HTTP GET through
// an outbound proxy.
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import tls from "node:tls";
import { exportPrivateKey, generateKeyPair, importPrivateKey, issueLeaf, parseCertificate, pemEncode, toDer } from "@meshtls/pki";

/** A leaf for `identity` from the issuer in `dir`, with no skew allowance, and a TLS 1.3 context presenting it. */
export async function issueShortLeaf(dir: string, identity: string, lifetimeMs: number): Promise<{ context: tls.SecureContext; notAfter: Date }> {
  const issuerCert = toDer(readFileSync(path.join(dir, "issuer.crt"), "utf8"), "CERTIFICATE");
  const issuerKey = await importPrivateKey(readFileSync(path.join(dir, "issuer.key"), "utf8"));
  const keyPair = await generateKeyPair();
  const leaf = await issueLeaf({ issuer: { certificate: issuerCert, privateKey: issuerKey.privateKey }, publicKey: keyPair.publicKey, identity, lifetimeMs, skewMs: 0 });
  const context = tls.createSecureContext({
    key: (await exportPrivateKey(keyPair.privateKey)) as string,
    cert: pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuerCert),
    ca: readFileSync(path.join(dir, "ca.crt"), "utf8"),
    minVersion: "TLSv1.3",
    maxVersion: "TLSv1.3",
  });
  return { context, notAfter: parseCertificate(leaf).notAfter };
}

export interface PlainResult {
  /** The handshake resumed the offered session. */
  reused: boolean;
  /** Bytes the workload answered with (empty when the proxy refused the connection). */
  answer: string;
  /** The last session the server gave on this connection. */
  session?: Buffer;
  /** The handshake failed with this code. */
  error?: string;
}

/**
 * One mesh TLS connection to an inbound proxy from a plain node:tls client
 * (it bounds nothing itself): offers `session`, sends an HTTP/1.0 GET and
 * collects the answer.
 */
export function plainMeshGet(options: { host: string; port: number; serverName: string; context: tls.SecureContext; session?: Buffer | undefined }): Promise<PlainResult> {
  return new Promise((resolve) => {
    let reused = false;
    let answer = "";
    let session: Buffer | undefined;
    let error: string | undefined;
    const socket = tls.connect({
      host: options.host,
      port: options.port,
      servername: options.serverName,
      secureContext: options.context,
      minVersion: "TLSv1.3",
      checkServerIdentity: () => undefined,
      ...(options.session === undefined ? {} : { session: options.session }),
    });
    socket.setTimeout(10_000, () => socket.destroy());
    socket.on("session", (ticket: Buffer) => (session = ticket));
    socket.once("secureConnect", () => {
      reused = socket.isSessionReused();
      socket.write("GET / HTTP/1.0\r\n\r\n");
    });
    socket.on("data", (chunk: Buffer) => (answer += String(chunk)));
    socket.on("error", (cause: Error & { code?: string }) => (error = cause.code ?? cause.message));
    socket.on("close", () => resolve({ reused, answer, ...(session === undefined ? {} : { session }), ...(error === undefined ? {} : { error }) }));
  });
}

/** A GET of `url` through an outbound proxy (absolute URI): the status, the `l5d-proxy-error` header and the body. */
export function getThroughProxy(proxy: string, url: string): Promise<{ status: number; proxyError?: string; body: string }> {
  const [host, port] = [proxy.slice(0, proxy.lastIndexOf(":")), Number(proxy.slice(proxy.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: url, headers: { host: new URL(url).host, connection: "close" }, agent: false, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (chunk: string) => (body += chunk));
      res.on("end", () => {
        const proxyError = res.headers["l5d-proxy-error"];
        resolve({ status: res.statusCode ?? 0, body, ...(typeof proxyError === "string" ? { proxyError } : {}) });
      });
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  });
}
