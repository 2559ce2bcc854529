// Leaf issuance throughput (parse + verify a CSR, sign a leaf) beside raw node:crypto ECDSA P-256
// sign+verify, measured in the same run. Run with `pnpm --filter @meshtls/pki bench [durationMs]`.
// The workloads run in alternating 100 ms slices so that load from other processes affects them alike.
import { createPublicKey, generateKeyPairSync, KeyObject, sign, verify, webcrypto } from "node:crypto";
import { createCsr, createIssuer, createTrustAnchor, generateKeyPair, issueLeaf, parseCsr, prepareIssuer } from "../dist/index.js";

const DURATION_MS = Number(process.argv[2] ?? 4000);
const SLICE_MS = 100;
const CSR_COUNT = 64;
const P256 = { name: "ECDSA", namedCurve: "P-256" };
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
  // Reference only: the signing half of the pair, which every issuance does once.
  "node:crypto ECDSA P-256 SHA-256 sign": (() => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const tbs = Buffer.alloc(400, 7);
    return async (i) => {
      tbs[0] = i & 0xff;
      sign("sha256", tbs, privateKey);
    };
  })(),
  // Reference only: what any CSR check must add to the raw pair (importing the requester's public key),
  // by each route node offers, each with the first verification under the fresh key.
  ...Object.fromEntries(
    [
      ["JWK", (k) => createPublicKey({ key: k.jwk, format: "jwk" })],
      ["raw point, WebCrypto", async (k) => KeyObject.from(await webcrypto.subtle.importKey("raw", k.point, P256, true, ["verify"]))],
      ["SPKI DER", (k) => createPublicKey({ key: k.spki, format: "der", type: "spki" })],
    ].map(([route, importKey]) => [
      `node:crypto import P-256 key (${route}) + verify`,
      (() => {
        const keys = Array.from({ length: CSR_COUNT }, () => {
          const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
          const spki = publicKey.export({ format: "der", type: "spki" });
          const tbs = Buffer.alloc(300, 5);
          return { jwk: publicKey.export({ format: "jwk" }), spki, point: spki.subarray(26), tbs, signature: sign("sha256", tbs, privateKey) };
        });
        return async (i) => {
          const k = keys[i % CSR_COUNT];
          if (!verify("sha256", k.tbs, await importKey(k), k.signature)) throw new Error("verify failed");
        };
      })(),
    ]),
  ),
};

/** Runs `group` in alternating 100 ms slices for about `durationMs`; returns ops, wall ms and CPU µs per workload. */
async function measure(group, durationMs) {
  const totals = new Map(Object.keys(group).map((k) => [k, { ops: 0, ms: 0, cpuUs: 0 }]));
  for (const fn of Object.values(group)) for (let i = 0; i < 100; i++) await fn(i); // warm-up
  const rounds = Math.max(1, Math.round(durationMs / (SLICE_MS * Object.keys(group).length)));
  for (let r = 0; r < rounds; r++) {
    for (const [name, fn] of Object.entries(group)) {
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
  return totals;
}

// The ratio first, with only the three workloads it needs; then the key-import routes, separately, so that
// their garbage (key objects with native handles) is not collected during the measured slices.
const [issue, raw, signOnly, ...imports] = Object.keys(workloads);
const pick = (names) => Object.fromEntries(names.map((n) => [n, workloads[n]]));
const totals = new Map([...(await measure(pick([issue, raw, signOnly]), DURATION_MS)), ...(await measure(pick(imports), DURATION_MS / 2))]);
// Rates per wall-clock second, and per CPU second (robust when other processes compete for the cores).
const rate = (name) => (totals.get(name).ops / totals.get(name).ms) * 1000;
const cpuRate = (name) => (totals.get(name).ops / totals.get(name).cpuUs) * 1e6;
console.log(`${"workload".padEnd(60)} ${"per s".padStart(8)} ${"per CPU s".padStart(10)}`);
for (const name of Object.keys(workloads)) {
  console.log(`${name.padEnd(60)} ${rate(name).toFixed(0).padStart(8)} ${cpuRate(name).toFixed(0).padStart(10)}`);
}
console.log(`ratio (pki issuance / raw sign+verify): ${(rate(issue) / rate(raw)).toFixed(2)} wall-clock, ${(cpuRate(issue) / cpuRate(raw)).toFixed(2)} CPU  (target >= 0.50)`);
// Any issuer that checks a CSR must import the requester's key and verify under it, and sign once:
// the best ratio that allows, with the fastest import route measured here.
const best = Math.max(...imports.map(cpuRate));
const ceiling = 1 / (1 / best + 1 / cpuRate(signOnly)) / cpuRate(raw);
console.log(`ceiling for any CSR-verifying issuer here (fastest import + verify, plus one sign): ${ceiling.toFixed(2)} CPU`);
