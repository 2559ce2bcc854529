// Certify throughput over gRPC (TLS) on loopback against the built meshtls-identity,
// beside the raw node:crypto ECDSA P-256 sign+verify rate measured in the same run.
// Usage: pnpm --filter meshtls-identity bench [-- --seconds 5 --concurrency 16 --channels 4]
import { execFile, spawn } from "node:child_process";
import { createSign, createVerify, generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { credentials, Metadata } from "@grpc/grpc-js";
import { IdentityClient } from "@meshtls/api";
import { createCertifyHandler, createIssuerStore, createJwksTokenValidator } from "@meshtls/identity";
import { createCsr, decodeCertificates, generateKeyPair } from "@meshtls/pki";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    concurrency: { type: "string", default: "16" },
    channels: { type: "string", default: "4" },
    "log-level": { type: "string", default: "info" },
  },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const channels = Number(values.channels);

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const cliBin = path.join(repoRoot, "apps/cli/dist/main.js");
const identityBin = path.join(repoRoot, "apps/identity/dist/main.js");
const run = promisify(execFile);
const cli = async (args) => (await run(process.execPath, [cliBin, ...args])).stdout;
const SERVER_NAME = "identity.meshtls.serviceaccount.identity.meshtls.cluster.local";
const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";

function rawSignVerifyRate(durationMs) {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const data = Buffer.alloc(512, 7);
  let n = 0;
  const until = performance.now() + durationMs;
  while (performance.now() < until) {
    for (let i = 0; i < 50; i++) {
      const sig = createSign("SHA256").update(data).sign(privateKey);
      if (!createVerify("SHA256").update(data).verify(publicKey, sig)) throw new Error("verify failed");
      n++;
    }
  }
  return n / (durationMs / 1000);
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const dir = await mkdtemp(path.join(tmpdir(), "meshtls-bench-"));
let child;
try {
  await cli(["certs", "create", "--out", dir]);
  await cli(["token", "keygen", "--out", path.join(dir, "token")]);
  const token = Buffer.from((await cli(["token", "mint", "--key", path.join(dir, "token", "token-signer.key"), "--namespace", "default", "--service-account", "web"])).trim());

  child = spawn(
    process.execPath,
    [identityBin, "--trust-anchors", path.join(dir, "ca.crt"), "--issuer-dir", dir, "--token-jwks", path.join(dir, "token", "jwks.json"), "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", values["log-level"]],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  // Logs go to a pipe that we drain (as a log shipper would); the first JSON line with "listening" gives the port.
  const address = await new Promise((resolve, reject) => {
    let buffered = "";
    child.stdout.on("data", (chunk) => {
      buffered += chunk.toString();
      for (let nl; (nl = buffered.indexOf("\n")) >= 0; ) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.includes('"listening"')) resolve(JSON.parse(line).grpc);
      }
      if (buffered.length > 1 << 20) buffered = "";
    });
    child.once("exit", (code) => reject(new Error(`meshtls-identity exited ${code}`)));
  });

  const ca = await readFile(path.join(dir, "ca.crt"));
  const clients = Array.from({ length: channels }, () =>
    new IdentityClient(address, credentials.createSsl(ca), { "grpc.ssl_target_name_override": SERVER_NAME, "grpc.default_authority": SERVER_NAME }),
  );
  const csrs = await Promise.all(Array.from({ length: concurrency }, async () => Buffer.from(await createCsr({ keyPair: await generateKeyPair(), identity }))));
  const call = (client, csr) =>
    new Promise((resolve, reject) =>
      client.certify({ identity, token, certificateSigningRequest: csr }, new Metadata(), { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r))),
    );

  // Warm up connections and JIT.
  await Promise.all(csrs.map((csr, i) => call(clients[i % channels], csr)));
  const warmUntil = performance.now() + 1000;
  while (performance.now() < warmUntil) await Promise.all(csrs.map((csr, i) => call(clients[i % channels], csr)));

  // Raw rate first, while the server is idle.
  const raw = rawSignVerifyRate(Math.min(3000, seconds * 1000));

  // The same Certify handler in this process, without gRPC or TLS: where the time goes.
  const store = createIssuerStore({ dir, trustAnchors: decodeCertificates(await readFile(path.join(dir, "ca.crt"), "utf8")) });
  await store.reload();
  const handler = createCertifyHandler({
    issuerStore: store,
    tokenValidator: createJwksTokenValidator({ jwks: JSON.parse(await readFile(path.join(dir, "token", "jwks.json"), "utf8")), issuer: "https://meshtls.local" }),
  });
  let handled = 0;
  const handlerUntil = performance.now() + Math.min(3000, seconds * 1000);
  const handlerStart = performance.now();
  await Promise.all(
    csrs.map(async (csr) => {
      while (performance.now() < handlerUntil) {
        await handler({ identity, token, certificateSigningRequest: csr });
        handled++;
      }
    }),
  );
  const handlerRate = handled / ((performance.now() - handlerStart) / 1000);
  store.close();

  const procCpuMs = async (pid) => {
    // utime + stime of the server process, from /proc (Linux); undefined elsewhere.
    try {
      const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1].split(" ");
      return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
    } catch {
      return undefined;
    }
  };
  const serverCpuBefore = await procCpuMs(child.pid);
  const clientCpuBefore = process.cpuUsage();
  const latencies = [];
  let errors = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    csrs.map(async (csr, i) => {
      const client = clients[i % channels];
      while (performance.now() < until) {
        const t0 = performance.now();
        try {
          await call(client, csr);
          latencies.push(performance.now() - t0);
        } catch {
          errors++;
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const serverCpuAfter = await procCpuMs(child.pid);
  const clientCpu = process.cpuUsage(clientCpuBefore);
  latencies.sort((a, b) => a - b);
  const rate = latencies.length / elapsed;
  const result = {
    certifyPerSecond: Math.round(rate),
    rawEcdsaP256SignVerifyPerSecond: Math.round(raw),
    ratio: Number((rate / raw).toFixed(3)),
    handlerInProcessPerSecond: Math.round(handlerRate),
    handlerRatio: Number((handlerRate / raw).toFixed(3)),
    p50Ms: Number(percentile(latencies, 50).toFixed(2)),
    p99Ms: Number(percentile(latencies, 99).toFixed(2)),
    serverCpuMsPerCall: serverCpuBefore === undefined ? null : Number(((serverCpuAfter - serverCpuBefore) / latencies.length).toFixed(3)),
    clientCpuMsPerCall: Number(((clientCpu.user + clientCpu.system) / 1000 / latencies.length).toFixed(3)),
    calls: latencies.length,
    errors,
    concurrency,
    channels,
    seconds,
    transport: "gRPC over TLS 1.3, loopback",
    serverLogLevel: values["log-level"],
  };
  console.log(`Certify over gRPC (TLS, loopback, ${concurrency} concurrent on ${channels} channels, ${seconds}s):`);
  console.log(`  Certify calls/s               ${result.certifyPerSecond}`);
  console.log(`  raw ECDSA P-256 sign+verify/s ${result.rawEcdsaP256SignVerifyPerSecond}  (node:crypto, one thread, same run)`);
  console.log(`  ratio                         ${result.ratio}  (aim >= 0.4)`);
  console.log(`  handler in-process (no gRPC)  ${result.handlerInProcessPerSecond}/s  (ratio ${result.handlerRatio})`);
  console.log(`  latency p50 / p99             ${result.p50Ms} ms / ${result.p99Ms} ms`);
  console.log(`  CPU per call: server / client ${result.serverCpuMsPerCall} ms / ${result.clientCpuMsPerCall} ms (raw pair: ${(1000 / raw).toFixed(3)} ms)`);
  console.log(`  errors                        ${errors}`);
  console.log(JSON.stringify(result));
  for (const c of clients) c.close();
} finally {
  if (child && child.exitCode === null) {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
  await rm(dir, { recursive: true, force: true });
}
