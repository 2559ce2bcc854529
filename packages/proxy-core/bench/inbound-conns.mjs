#!/usr/bin/env node
// CPU per new mesh connection of the inbound stack alone (createInbound: detection, mTLS termination, the transport
// header, policy, metrics, the workload connect and the forward), beside the node:tls floor measured in the same
// invocation: a server that terminates mTLS (client certificate required) and pipes into a plain connection, nothing
// else. A load generator in this process opens connections the way a peer proxy does (TLS 1.3, X25519, client
// certificate, resumed with the last ticket, ALPN transport.l5d.io/v1, the transport header and a request in one
// write) to a 1 KiB answer, and alternates between the two servers every --switch-ms, so that the host's drift (10–20 %
// within minutes here) falls on both alike; each server's CPU is read from its own process at every switch.
//   node packages/proxy-core/bench/inbound-conns.mjs [--seconds 40] [--switch-ms 1000] [--baseline DIST]
// --baseline: another proxy-core build (its dist/index.js) instead of the floor, for before/after comparisons.
// Needs packages/proxy-core and @meshtls/pki built (dist) and Node 24.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createBenchPki, identityOf } from "./mesh-pki.mjs";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "40" },
    "switch-ms": { type: "string", default: "1000" },
    baseline: { type: "string" },
    concurrency: { type: "string", default: "8" },
    // Child mode: one server, its port on stdout, its CPU (µs) on stdout for each line on stdin.
    serve: { type: "string" },
    dist: { type: "string" },
    dir: { type: "string" },
    backend: { type: "string" },
  },
});
const here = path.dirname(fileURLToPath(import.meta.url));
const ownDist = path.join(here, "../dist/index.js");
const SERVER_ID = identityOf("b");

if (values.serve !== undefined) await serve();
else await main();

/** Child: the meshtls inbound (from --dist) or the node:tls floor, answering CPU readings. */
async function serve() {
  const dir = values.dir;
  const backendPort = Number(values.backend);
  const file = (name) => readFileSync(path.join(dir, name));
  let port;
  if (values.serve === "floor") {
    const server = tls.createServer({ key: file("b.key"), cert: file("b.crt"), ca: file("ca.pem"), requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3", ecdhCurve: "X25519", ALPNProtocols: ["transport.l5d.io/v1"] }, (secure) => {
      const plain = net.connect({ host: "127.0.0.1", port: backendPort, noDelay: true });
      secure.on("error", () => plain.destroy());
      plain.on("error", () => secure.destroy());
      secure.pipe(plain);
      plain.pipe(secure);
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = server.address().port;
  } else {
    const pc = await import(values.dist);
    const creds = { identity: SERVER_ID, privateKeyPem: file("b.key").toString(), certificateChainPem: file("b.crt").toString(), notAfter: new Date(Date.now() + 86_400_000) };
    const anchors = [new Uint8Array(file("ca.der"))];
    const fixed = (value) => ({ current: () => value, subscribe: () => () => undefined });
    const inbound = pc.createInbound({
      identity: SERVER_ID,
      credentials: pc.createTlsCredentials({ credentials: fixed(creds), trustBundle: fixed(anchors), groups: ["X25519"] }),
      metrics: pc.createProxyMetrics(),
      // The backend's port is opaque (as the proxy bench's opaque path): no HTTP detection after the header.
      policy: pc.createStaticPolicySource({ ports: { [backendPort]: { opaque: true } } }),
      workload: { host: "127.0.0.1", port: 1 },
    });
    port = (await inbound.listen({ host: "127.0.0.1", port: 0 })).port;
  }
  console.log(port);
  createInterface({ input: process.stdin }).on("line", () => {
    const cpu = process.cpuUsage();
    console.log(cpu.user + cpu.system);
  });
}

async function main() {
  const { encodeHeader } = await import(ownDist);
  const dir = mkdtempSync(path.join(os.tmpdir(), "meshtls-inbound-bench-"));
  const pki = await createBenchPki();
  writeFileSync(path.join(dir, "ca.der"), pki.caDer);
  writeFileSync(path.join(dir, "ca.pem"), pki.caPem);
  for (const sa of ["a", "b"]) {
    const { key, cert } = await pki.leaf(sa);
    writeFileSync(path.join(dir, `${sa}.key`), key);
    writeFileSync(path.join(dir, `${sa}.crt`), cert);
  }

  // The workload: answers the first bytes with 1 KiB and closes.
  const answer = Buffer.alloc(1024, 120);
  const backend = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => undefined);
    socket.once("data", () => socket.end(answer));
  });
  await new Promise((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const backendPort = backend.address().port;

  const start = (mode, dist) =>
    new Promise((resolve) => {
      const args = [fileURLToPath(import.meta.url), "--serve", mode, "--dir", dir, "--backend", String(backendPort), ...(dist === undefined ? [] : ["--dist", dist])];
      const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] });
      const waiting = [];
      createInterface({ input: child.stdout }).on("line", (line) => {
        const next = waiting.shift();
        if (next !== undefined) next(Number(line));
        else resolve({ child, port: Number(line), cpu: () => new Promise((r) => (waiting.push(r), child.stdin.write("cpu\n"))) });
      });
    });
  const baselineName = values.baseline === undefined ? "node:tls floor" : `baseline ${values.baseline}`;
  const sides = [
    { name: "meshtls inbound", ...(await start("meshtls", ownDist)) },
    { name: baselineName, ...(values.baseline === undefined ? await start("floor") : await start("meshtls", path.resolve(values.baseline))) },
  ];

  const header = encodeHeader({ port: backendPort });
  const request = Buffer.concat([header, Buffer.from("GET / HTTP/1.1\r\nhost: b\r\n\r\n")]);
  const context = tls.createSecureContext({ key: readFileSync(path.join(dir, "a.key")), cert: readFileSync(path.join(dir, "a.crt")), ca: readFileSync(path.join(dir, "ca.pem")), ecdhCurve: "X25519" });
  const sessions = [undefined, undefined];
  const counts = [0, 0];
  // Handshakes that resumed a session, and all handshakes, per server: a full handshake costs several resumed ones.
  const resumed = [0, 0];
  const handshakes = [0, 0];
  const cpu = [0, 0];
  let target = 0;
  let stop = false;
  // One connection as a peer proxy makes it; counted for the server it went to when it closed with the whole answer.
  const connection = () =>
    new Promise((resolve) => {
      const t = target;
      const socket = tls.connect({ host: "127.0.0.1", port: sides[t].port, servername: SERVER_ID, secureContext: context, minVersion: "TLSv1.3", ALPNProtocols: ["transport.l5d.io/v1"], ...(sessions[t] === undefined ? {} : { session: sessions[t] }), checkServerIdentity: () => undefined });
      let received = 0;
      socket.on("session", (ticket) => (sessions[t] = ticket));
      socket.on("error", () => undefined);
      socket.once("secureConnect", () => {
        if (t === target) {
          handshakes[t]++;
          if (socket.isSessionReused()) resumed[t]++;
        }
        socket.write(request);
      });
      socket.on("data", (chunk) => (received += chunk.length));
      socket.on("close", () => {
        if (received >= answer.length && t === target) counts[t]++;
        resolve();
      });
    });
  const loop = async () => {
    while (!stop) await connection();
  };
  const load = async (ms) => {
    stop = false;
    const workers = Array.from({ length: Number(values.concurrency) }, loop);
    await new Promise((resolve) => setTimeout(resolve, ms));
    stop = true;
    await Promise.all(workers);
  };
  // Warm-up: each server's code optimized before anything counts.
  for (const t of [0, 1, 0, 1]) {
    target = t;
    await load(1500);
  }
  counts[0] = counts[1] = 0;
  resumed[0] = resumed[1] = handshakes[0] = handshakes[1] = 0;
  stop = false;
  const workers = Array.from({ length: Number(values.concurrency) }, loop);
  const end = Date.now() + Number(values.seconds) * 1000;
  for (let turn = 0; Date.now() < end; turn++) {
    target = turn % 2;
    const before = await sides[target].cpu();
    await new Promise((resolve) => setTimeout(resolve, Number(values["switch-ms"])));
    cpu[target] += (await sides[target].cpu()) - before;
  }
  stop = true;
  await Promise.all(workers);
  const per = cpu.map((us, i) => us / counts[i]);
  console.log(`new mesh connections (resumed, X25519, transport header, 1 KiB answer), alternating every ${values["switch-ms"]} ms for ${values.seconds} s:`);
  for (const [i, side] of sides.entries()) console.log(`  ${side.name.padEnd(40)} ${String(counts[i]).padStart(7)} connections, ${per[i].toFixed(0).padStart(5)} µs CPU each, ${resumed[i]} of ${handshakes[i]} handshakes resumed`);
  console.log(`  meshtls inbound ÷ ${baselineName}: ${(per[0] / per[1]).toFixed(3)}`);
  for (const side of sides) side.child.kill();
  backend.close();
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
