// Leaf issuance throughput (parse + verify a CSR, sign a leaf) beside raw node:crypto ECDSA P-256
// sign+verify, measured in the same run. Run with `pnpm --filter @meshtls/pki bench [durationMs]`.
// The two workloads run in alternating 100 ms slices so that load from other processes affects both alike.
import { createPublicKey, generateKeyPairSync, sign, verify } from "node:crypto";
import { createCsr, createIssuer, createTrustAnchor, generateKeyPair, issueLeaf, parseCsr, prepareIssuer } from "../dist/index.js";

const DURATION_MS = Number(process.argv[2] ?? 4000);
const SLICE_MS = 100;
const CSR_COUNT = 64;
const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";
const spiffeId = "spiffe://cluster.local/ns/default/sa/web";

const anchor = await createTrustAnchor({});
const issuerCk = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey } });
// Parsed and key-checked once, as an identity service holds its issuer.
const issuer = await prepareIssuer({ certificate: issuerCk.certificate, privateKey: issuerCk.keyPair.privateKey });
const csrs = [];
for (let i = 0; i < CSR_COUNT; i++) csrs.push(await createCsr({ keyPair: await generateKeyPair(), identity, spiffeId }));

const workloads = {
  "pki: parseCsr (parse + verify signature) + issueLeaf": async (i) => {
    const csr = await parseCsr(csrs[i % CSR_COUNT]);
    if (!csr.signatureValid) throw new Error("CSR signature did not verify");
    await issueLeaf({ issuer, publicKey: csr.publicKey.spki, identity, spiffeId });
  },
  "node:crypto ECDSA P-256 SHA-256 sign + verify": (() => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const tbs = Buffer.alloc(400, 7);
    return async (i) => {
      tbs[0] = i & 0xff;
      if (!verify("sha256", tbs, publicKey, sign("sha256", tbs, privateKey))) throw new Error("raw verify failed");
    };
  })(),
  // Reference only: what any CSR check must add to the raw pair (importing the requester's public key).
  "node:crypto import P-256 public key (JWK)": (() => {
    const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "jwk" });
    return async () => {
      createPublicKey({ key: jwk, format: "jwk" });
    };
  })(),
};

const totals = new Map(Object.keys(workloads).map((k) => [k, { ops: 0, ms: 0, cpuUs: 0 }]));
for (const fn of Object.values(workloads)) for (let i = 0; i < 100; i++) await fn(i); // warm-up
const rounds = Math.max(1, Math.round(DURATION_MS / (SLICE_MS * Object.keys(workloads).length)));
for (let r = 0; r < rounds; r++) {
  for (const [name, fn] of Object.entries(workloads)) {
    const t = totals.get(name);
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    let elapsed = 0;
    while ((elapsed = performance.now() - start) < SLICE_MS) {
      for (let i = 0; i < 5; i++) await fn(t.ops++);
    }
    const cpu = process.cpuUsage(cpu0);
    t.ms += elapsed;
    t.cpuUs += cpu.user + cpu.system;
  }
}
// Rates per wall-clock second, and per CPU second (robust when other processes compete for the cores).
const rate = (name) => (totals.get(name).ops / totals.get(name).ms) * 1000;
const cpuRate = (name) => (totals.get(name).ops / totals.get(name).cpuUs) * 1e6;
console.log(`${"workload".padEnd(56)} ${"per s".padStart(8)} ${"per CPU s".padStart(10)}`);
for (const name of Object.keys(workloads)) {
  console.log(`${name.padEnd(56)} ${rate(name).toFixed(0).padStart(8)} ${cpuRate(name).toFixed(0).padStart(10)}`);
}
const [issue, raw, importKey] = Object.keys(workloads);
console.log(`ratio (pki issuance / raw sign+verify): ${(rate(issue) / rate(raw)).toFixed(2)} wall-clock, ${(cpuRate(issue) / cpuRate(raw)).toFixed(2)} CPU  (target >= 0.50)`);
// Any issuer that checks a CSR must import the requester's key; this is the best ratio that allows.
const ceiling = 1 / (1 / cpuRate(raw) + 1 / cpuRate(importKey)) / cpuRate(raw);
console.log(`ceiling for any CSR-verifying issuer here (raw pair + one key import): ${ceiling.toFixed(2)} CPU`);
