#!/usr/bin/env node
/* global process */
// The baseline the proxy is measured against besides nginx: the least a Node
// mTLS hop can do. `node naive-pair.mjs client LISTEN_HOST LISTEN_PORT TARGET_HOST
// TARGET_PORT SERVERNAME CERT KEY CA` pipes each accepted plaintext connection into
// mTLS; `node naive-pair.mjs server LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT -
// CERT KEY CA` terminates mTLS (client certificate required) and pipes into
// plaintext. No detection, policy, discovery, metrics or session resumption.
// With role `client-resume` the client side offers the last TLS session it was
// given (a TLS 1.3 ticket from the server), as nginx's stream proxy does by
// default (proxy_ssl_session_reuse on) and meshtls does: the floor of node:tls
// for new connections under a proxy that resumes (one secure context, made
// once, where `client` makes one per connection as the simplest code does).
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";

const [role, host, port, targetHost, targetPort, servername, cert, key, ca] = process.argv.slice(2);
const context = { cert: readFileSync(cert), key: readFileSync(key), ca: readFileSync(ca), minVersion: "TLSv1.3" };
const join = (a, b) => {
  a.on("error", () => b.destroy());
  b.on("error", () => a.destroy());
  a.pipe(b);
  b.pipe(a);
};
let session;
// X25519 only, like for like with nginx (OpenSSL 3.0): a resumed TLS 1.3 handshake still exchanges keys (psk_dhe_ke).
const secureContext = role === "client-resume" ? tls.createSecureContext({ ...context, ecdhCurve: "X25519" }) : undefined;
const dial = () => {
  const options = secureContext === undefined ? context : { secureContext, session };
  const secure = tls.connect({ ...options, host: targetHost, port: Number(targetPort), servername, noDelay: true });
  if (role === "client-resume") secure.on("session", (s) => (session = s));
  return secure;
};
const server =
  role === "client" || role === "client-resume"
    ? net.createServer({ noDelay: true }, (plain) => join(plain, dial()))
    : tls.createServer({ ...context, requestCert: true, rejectUnauthorized: true }, (secure) => {
        secure.setNoDelay(true);
        join(secure, net.connect({ host: targetHost, port: Number(targetPort), noDelay: true }));
      });
server.listen(Number(port), host, () => process.stdout.write("listening\n"));
process.on("SIGTERM", () => process.exit(0));
