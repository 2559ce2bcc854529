#!/usr/bin/env node
/* global process, console, setTimeout */
/* eslint-disable no-console -- a benchmark prints its figure */
// The memory floor of node:tls on this machine: the RSS one idle mTLS
// connection costs a bare node:tls server and client (after a full GC, so
// only live memory counts), with nothing of meshtls loaded. Usage:
//   node --expose-gc tls-floor.mjs SERVER_CERT SERVER_KEY CLIENT_CERT CLIENT_KEY CA [N]
// prints one JSON line: {"serverKiBPerConn":…, "clientKiBPerConn":…}.
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import tls from "node:tls";

const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))[1]);
const settle = async () => {
  globalThis.gc?.();
  await new Promise((r) => setTimeout(r, 300));
  globalThis.gc?.();
  return rssKiB();
};

if (process.argv[2] === "--server") {
  const [cert, key, ca] = process.argv.slice(3).map((f) => readFileSync(f));
  const held = [];
  const server = tls.createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" }, (socket) => {
    held.push(socket);
    socket.on("data", () => socket.write("x".repeat(1024)));
  });
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
  process.on("message", async () => process.send({ rss: await settle() }));
} else {
  const [serverCert, serverKey, clientCert, clientKey, caFile, count = "1000"] = process.argv.slice(2);
  const n = Number(count);
  const server = fork(process.argv[1], ["--server", serverCert, serverKey, caFile], { execArgv: ["--expose-gc"] });
  const ask = () => new Promise((resolve) => (server.once("message", resolve), server.send("rss")));
  const { port } = await new Promise((resolve) => server.once("message", resolve));
  const secureContext = tls.createSecureContext({ cert: readFileSync(clientCert), key: readFileSync(clientKey), ca: readFileSync(caFile), minVersion: "TLSv1.3" });
  const open = (k) =>
    Promise.all(
      Array.from({ length: k }, () =>
        new Promise((resolve, reject) => {
          const socket = tls.connect({ host: "127.0.0.1", port, secureContext, checkServerIdentity: () => undefined }, () => socket.write("hi"));
          socket.once("data", () => resolve(socket));
          socket.once("error", reject);
        }),
      ),
    );
  const held = [];
  for (let i = 0; i < 4; i++) held.push(...(await open(50))); // warm-up: code, contexts, pools
  const clientBefore = await settle();
  const serverBefore = (await ask()).rss;
  for (let i = 0; i < n; i += 100) held.push(...(await open(Math.min(100, n - i))));
  const clientAfter = await settle();
  const serverAfter = (await ask()).rss;
  console.log(JSON.stringify({ connections: n, serverKiBPerConn: Number(((serverAfter - serverBefore) / n).toFixed(1)), clientKiBPerConn: Number(((clientAfter - clientBefore) / n).toFixed(1)) }));
  for (const s of held) s.destroy();
  server.kill();
}
