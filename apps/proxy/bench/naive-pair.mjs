#!/usr/bin/env node
/* global process */
// The baseline the proxy is measured against besides nginx: the least a Node
// mTLS hop can do. `node naive-pair.mjs client LISTEN_HOST LISTEN_PORT TARGET_HOST
// TARGET_PORT SERVERNAME CERT KEY CA` pipes each accepted plaintext connection into
// mTLS; `node naive-pair.mjs server LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT -
// CERT KEY CA` terminates mTLS (client certificate required) and pipes into
// plaintext. No detection, policy, discovery, metrics or session resumption.
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
const server =
  role === "client"
    ? net.createServer({ noDelay: true }, (plain) => join(plain, tls.connect({ ...context, host: targetHost, port: Number(targetPort), servername, noDelay: true })))
    : tls.createServer({ ...context, requestCert: true, rejectUnauthorized: true }, (secure) => {
        secure.setNoDelay(true);
        join(secure, net.connect({ host: targetHost, port: Number(targetPort), noDelay: true }));
      });
server.listen(Number(port), host, () => process.stdout.write("listening\n"));
process.on("SIGTERM", () => process.exit(0));
