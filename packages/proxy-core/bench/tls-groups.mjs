#!/usr/bin/env node
// Cost of the post-quantum key exchange per mesh handshake: full TLS 1.3
// mTLS handshakes (P-256 ECDSA leaves from one mesh CA, no resumption)
// between two node:tls peers in this one process and thread, with the
// contexts createTlsCredentials builds (its groupsForOpenssl list), for
// X25519 alone and for the default X25519MLKEM768 first. Phases alternate so
// that load on the machine falls on both alike.
//   node packages/proxy-core/bench/tls-groups.mjs [--seconds 3] [--rounds 3]
// Needs packages/proxy-core built (dist) and Node 24 (OpenSSL 3.5).
import { once } from "node:events";
import tls from "node:tls";
import { parseArgs } from "node:util";
import { DEFAULT_TLS_GROUPS, groupsForOpenssl } from "../dist/index.js";
import { createBenchPki, identityOf } from "./mesh-pki.mjs";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "3" }, rounds: { type: "string", default: "3" } } });
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);

const pki = await createBenchPki();
const ca = pki.caPem;
const SERVER = identityOf("api");
const server = await pki.leaf("api");
const client = await pki.leaf("web");

async function phase(groups) {
  const ecdhCurve = groupsForOpenssl(groups);
  const options = { ca, ecdhCurve, minVersion: "TLSv1.3", maxVersion: "TLSv1.3" };
  const clientContext = tls.createSecureContext({ ...options, ...client });
  const seen = new Map();
  const listener = tls.createServer({ ...options, ...server, requestCert: true, rejectUnauthorized: true });
  listener.on("secureConnection", (socket) => socket.end());
  listener.on("tlsClientError", () => undefined);
  listener.listen(0, "127.0.0.1");
  await once(listener, "listening");
  const { port } = listener.address();
  const cpuStart = process.cpuUsage();
  const started = performance.now();
  let count = 0;
  while (performance.now() - started < seconds * 1000) {
    const socket = tls.connect({ host: "127.0.0.1", port, servername: SERVER, secureContext: clientContext, ...options, checkServerIdentity: () => undefined });
    await once(socket, "secureConnect");
    if (!socket.authorized) throw new Error(`unverified: ${socket.authorizationError}`);
    const group = socket.getEphemeralKeyInfo()?.name ?? "?";
    seen.set(group, (seen.get(group) ?? 0) + 1);
    socket.destroy();
    count++;
  }
  const wallS = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  listener.close();
  return { groups: [...seen.keys()].join(","), count, perSecond: count / wallS, perCpuSecond: count / ((cpu.user + cpu.system) / 1e6) };
}

console.log(`node ${process.version}, OpenSSL ${process.versions.openssl}; ${rounds} rounds of ${seconds} s per group list; both peers in one thread`);
const results = { X25519: [], [DEFAULT_TLS_GROUPS[0]]: [] };
for (let round = 0; round < rounds; round++) {
  for (const groups of [["X25519", "P-256"], [...DEFAULT_TLS_GROUPS]]) {
    const result = await phase(groups);
    results[groups[0]].push(result);
    console.log(`round ${round + 1} ${groups.join(":").padEnd(28)} negotiated ${result.groups.padEnd(15)} ${result.perSecond.toFixed(0).padStart(5)} handshakes/s, ${result.perCpuSecond.toFixed(0).padStart(5)} per CPU-second`);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const x = median(results.X25519.map((r) => r.perCpuSecond));
const pq = median(results[DEFAULT_TLS_GROUPS[0]].map((r) => r.perCpuSecond));
console.log(`median per CPU-second: X25519 ${x.toFixed(0)}, X25519MLKEM768 ${pq.toFixed(0)} (${(pq / x).toFixed(2)}x, +${((1 / pq - 1 / x) * 1e6).toFixed(0)} µs CPU per handshake, both peers)`);
