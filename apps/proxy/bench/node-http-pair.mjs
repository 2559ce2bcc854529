#!/usr/bin/env node
/* global process */
// The bare Node floor under an HTTP-aware proxy pair: the least two Node
// processes can do to carry HTTP/1 requests over one multiplexed mTLS HTTP/2
// connection, as meshtls does between meshed proxies.
// `node node-http-pair.mjs client LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT SERVERNAME CERT KEY CA`:
// node:http server → one http2 session over mTLS to the server side.
// `node node-http-pair.mjs server LISTEN_HOST LISTEN_PORT APP_HOST APP_PORT - CERT KEY CA`:
// http2 server (client certificate required) → node:http keep-alive agent to the app.
// Hop-by-hop fields are dropped (HTTP/2 refuses them); nothing else: no detection,
// discovery, balancing, policy, identity headers, metrics, logging or error mapping.
import { readFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";

const [role, host, port, targetHost, targetPort, servername, cert, key, ca] = process.argv.slice(2);
const tlsOptions = { cert: readFileSync(cert), key: readFileSync(key), ca: readFileSync(ca), minVersion: "TLSv1.3" };
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "http2-settings"]);
const endToEnd = (headers) => {
  const out = {};
  for (const name in headers) if (name[0] !== ":" && !HOP_BY_HOP.has(name)) out[name] = headers[name];
  return out;
};

let server;
if (role === "client") {
  let session;
  const connect = () => {
    session = http2.connect(`https://${targetHost}:${targetPort}`, { ...tlsOptions, servername });
    session.on("error", () => undefined);
    session.on("close", () => (session = undefined));
    return session;
  };
  server = http.createServer({ keepAlive: true, noDelay: true }, (req, res) => {
    const stream = (session ?? connect()).request({ ...endToEnd(req.headers), ":method": req.method, ":path": req.url, ":authority": req.headers.host ?? servername });
    stream.on("error", () => res.destroy());
    stream.on("response", (headers) => {
      res.writeHead(headers[":status"], endToEnd(headers));
      stream.pipe(res);
    });
    req.pipe(stream);
  });
} else {
  const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 1024 });
  server = http2.createSecureServer({ ...tlsOptions, requestCert: true, rejectUnauthorized: true });
  server.on("stream", (stream, headers) => {
    const upstream = http.request({ agent, host: targetHost, port: Number(targetPort), method: headers[":method"], path: headers[":path"], headers: { ...endToEnd(headers), host: headers[":authority"] } });
    upstream.on("error", () => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
    upstream.on("response", (res) => {
      stream.respond({ ":status": res.statusCode, ...endToEnd(res.headers) });
      res.pipe(stream);
    });
    stream.on("error", () => upstream.destroy());
    stream.pipe(upstream);
  });
}
server.listen(Number(port), host, () => process.stdout.write("listening\n"));
process.on("SIGTERM", () => process.exit(0));
