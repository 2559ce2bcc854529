// Certify throughput over gRPC (TLS 1.3) on loopback against the built meshtls-identity, beside the raw
// node:crypto ECDSA P-256 sign+verify rate measured in the same run (one thread, while the server is idle).
// Usage: pnpm --filter meshtls-identity bench [-- --seconds 5 --concurrency 16 --channels 4 --server-cpu-prof DIR]
//
// The client is made cheap so that the server is what is measured: tokens (one per stream, each distinct),
// CSRs (one per stream, each its own key) and the gRPC frames carrying them are built before the run, and
// calls go out over node:http2 (TLS verified against the trust anchor, for the server's identity) with no
// per-call protobuf work. Each answer's gRPC status is checked, and the first leaf of every stream is decoded
// and verified against the anchor, so a server that answered with anything else would fail the run.
import { execFile, spawn } from "node:child_process";
import { generateKeyPairSync, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { CertifyRequest, CertifyResponse } from "@meshtls/api";
import { createCertifyHandler, createIssuerStore, createJwksTokenValidator } from "@meshtls/identity";
import { createCsr, decodeCertificates, generateKeyPair, verifyChain } from "@meshtls/pki";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    concurrency: { type: "string", default: "16" },
    channels: { type: "string", default: "4" },
    "log-level": { type: "string", default: "info" },
    "server-cpu-prof": { type: "string" },
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
const CERTIFY_PATH = "/io.linkerd.proxy.identity.Identity/Certify";
const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";

/** Raw node:crypto P-256 sign + verify pairs per second on this thread (the denominator of the ratio). */
function rawSignVerifyRate(durationMs) {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const data = Buffer.alloc(512, 7);
  let n = 0;
  const started = performance.now();
  const until = started + durationMs;
  while (performance.now() < until) {
    for (let i = 0; i < 50; i++) {
      data[0] = n & 0xff;
      if (!nodeVerify("sha256", data, publicKey, nodeSign("sha256", data, privateKey))) throw new Error("verify failed");
      n++;
    }
  }
  return n / ((performance.now() - started) / 1000);
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** A length-prefixed gRPC message (uncompressed). */
function grpcFrame(message) {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

async function procCpuMs(pid) {
  // utime + stime of a process, from /proc (Linux); undefined elsewhere.
  try {
    const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1].split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return undefined;
  }
}

const dir = await mkdtemp(path.join(tmpdir(), "meshtls-bench-"));
let child;
const sessions = [];
try {
  await cli(["certs", "create", "--out", dir]);
  await cli(["token", "keygen", "--out", path.join(dir, "token")]);
  const signerKey = path.join(dir, "token", "token-signer.key");
  // One distinct token per stream (minted a second apart so they differ), as many proxies would send.
  const tokens = [];
  for (let i = 0; i < concurrency; i += 4) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(4, concurrency - i) }, (_, k) =>
        cli(["token", "mint", "--key", signerKey, "--namespace", "default", "--service-account", "web", "--not-before", `-${i + k}s`]),
      ),
    );
    tokens.push(...batch.map((t) => Buffer.from(t.trim())));
  }
  if (new Set(tokens.map((t) => t.toString())).size !== tokens.length) throw new Error("tokens are not distinct");

  const serverArgs = [
    ...(values["server-cpu-prof"] ? ["--cpu-prof", "--cpu-prof-dir", values["server-cpu-prof"]] : []),
    identityBin,
    ...["--trust-anchors", path.join(dir, "ca.crt"), "--issuer-dir", dir, "--token-jwks", path.join(dir, "token", "jwks.json")],
    ...["--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", values["log-level"]],
  ];
  child = spawn(process.execPath, serverArgs, { stdio: ["ignore", "pipe", "inherit"] });
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

  const caPem = await readFile(path.join(dir, "ca.crt"), "utf8");
  const anchors = decodeCertificates(caPem);
  for (let i = 0; i < channels; i++) {
    const session = http2.connect(`https://${address}`, { ca: caPem, servername: SERVER_NAME, minVersion: "TLSv1.3" });
    session.on("error", () => {});
    sessions.push(session);
  }
  const csrs = await Promise.all(Array.from({ length: concurrency }, async () => await createCsr({ keyPair: await generateKeyPair(), identity })));
  const frames = csrs.map((csr, i) => grpcFrame(CertifyRequest.encode({ identity, token: tokens[i], certificateSigningRequest: csr }).finish()));
  const headers = { ":method": "POST", ":path": CERTIFY_PATH, "content-type": "application/grpc", te: "trailers" };

  /** One Certify call; resolves with the response message bytes, rejects on any gRPC status but OK. */
  const call = (session, frame) =>
    new Promise((resolve, reject) => {
      const stream = session.request(headers);
      const chunks = [];
      let grpcStatus;
      stream.on("response", (h) => (grpcStatus = h["grpc-status"] ?? grpcStatus));
      stream.on("trailers", (t) => (grpcStatus = t["grpc-status"]));
      stream.on("data", (c) => chunks.push(c));
      stream.on("error", reject);
      stream.on("close", () => {
        if (grpcStatus !== "0") return reject(new Error(`grpc-status ${grpcStatus}`));
        const body = Buffer.concat(chunks);
        if (body.length < 5 || body.readUInt32BE(1) !== body.length - 5) return reject(new Error("malformed gRPC response"));
        resolve(body.subarray(5));
      });
      stream.end(frame);
    });

  // Warm up connections and JIT; check what the server answers (a leaf that chains to the anchor).
  const checked = await Promise.all(frames.map((frame, i) => call(sessions[i % channels], frame)));
  for (const body of checked) {
    const response = CertifyResponse.decode(body);
    const result = await verifyChain({ leaf: response.leafCertificate, intermediates: response.intermediateCertificates, anchors, expectedName: { dns: identity }, purpose: "clientAuth" });
    if (!result.ok) throw new Error(`the server's answer does not verify: ${result.code} ${result.reason}`);
  }
  const warmUntil = performance.now() + 1000;
  while (performance.now() < warmUntil) await Promise.all(frames.map((frame, i) => call(sessions[i % channels], frame)));

  // Raw rate first, while the server is idle.
  const raw = rawSignVerifyRate(Math.min(3000, seconds * 1000));

  const serverCpuBefore = await procCpuMs(child.pid);
  const clientCpuBefore = process.cpuUsage();
  const latencies = [];
  let errors = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    frames.map(async (frame, i) => {
      const session = sessions[i % channels];
      while (performance.now() < until) {
        const t0 = performance.now();
        try {
          await call(session, frame);
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
  const serverCpuMs = serverCpuBefore === undefined ? undefined : serverCpuAfter - serverCpuBefore;

  // The same Certify handler in this process, without gRPC or TLS: where the time goes.
  const store = createIssuerStore({ dir, trustAnchors: anchors });
  await store.reload();
  const handler = createCertifyHandler({
    issuerStore: store,
    tokenValidator: createJwksTokenValidator({ jwks: JSON.parse(await readFile(path.join(dir, "token", "jwks.json"), "utf8")), issuer: "https://meshtls.local" }),
  });
  let handled = 0;
  const handlerCpuBefore = process.cpuUsage();
  const handlerStart = performance.now();
  const handlerUntil = handlerStart + Math.min(3000, seconds * 1000);
  while (performance.now() < handlerUntil) {
    await handler({ identity, token: tokens[handled % concurrency], certificateSigningRequest: csrs[handled % concurrency] });
    handled++;
  }
  const handlerCpu = process.cpuUsage(handlerCpuBefore);
  const handlerRate = handled / ((performance.now() - handlerStart) / 1000);
  store.close();

  const result = {
    certifyPerSecond: Math.round(rate),
    rawEcdsaP256SignVerifyPerSecond: Math.round(raw),
    ratio: Number((rate / raw).toFixed(3)),
    serverCpuMsPerCall: serverCpuMs === undefined ? null : Number((serverCpuMs / latencies.length).toFixed(3)),
    certifyPerServerCpuSecond: serverCpuMs === undefined ? null : Math.round(latencies.length / (serverCpuMs / 1000)),
    ratioPerServerCpuSecond: serverCpuMs === undefined ? null : Number((latencies.length / (serverCpuMs / 1000) / raw).toFixed(3)),
    clientCpuMsPerCall: Number(((clientCpu.user + clientCpu.system) / 1000 / latencies.length).toFixed(3)),
    p50Ms: Number(percentile(latencies, 50).toFixed(2)),
    p99Ms: Number(percentile(latencies, 99).toFixed(2)),
    handlerInProcessPerSecond: Math.round(handlerRate),
    handlerCpuMsPerCall: Number(((handlerCpu.user + handlerCpu.system) / 1000 / handled).toFixed(3)),
    calls: latencies.length,
    errors,
    concurrency,
    channels,
    seconds,
    transport: "gRPC over TLS 1.3, loopback",
    serverLogLevel: values["log-level"],
  };
  const rawMs = (1000 / raw).toFixed(3);
  console.log(`Certify over gRPC (TLS 1.3, loopback, ${concurrency} concurrent streams on ${channels} connections, ${seconds}s):`);
  console.log(`  Certify calls/s (wall clock)       ${result.certifyPerSecond}`);
  console.log(`  raw ECDSA P-256 sign+verify/s      ${result.rawEcdsaP256SignVerifyPerSecond}  (node:crypto, one thread, same run; ${rawMs} ms per pair)`);
  console.log(`  ratio (wall clock)                 ${result.ratio}  (aim >= 0.4)`);
  console.log(`  server CPU per call                ${result.serverCpuMsPerCall} ms  (${result.certifyPerServerCpuSecond} calls per server CPU second)`);
  console.log(`  ratio per server CPU second        ${result.ratioPerServerCpuSecond}`);
  console.log(`  client CPU per call                ${result.clientCpuMsPerCall} ms`);
  console.log(`  latency p50 / p99                  ${result.p50Ms} ms / ${result.p99Ms} ms`);
  console.log(`  handler in-process (no gRPC, TLS)  ${result.handlerInProcessPerSecond}/s, ${result.handlerCpuMsPerCall} ms CPU per call`);
  console.log(`  errors                             ${errors}`);
  console.log(JSON.stringify(result));
  if (errors > 0) process.exitCode = 1;
} finally {
  for (const s of sessions) s.destroy();
  if (child && child.exitCode === null) {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
  await rm(dir, { recursive: true, force: true });
}
