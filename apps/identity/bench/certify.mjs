// Certify throughput over gRPC (TLS 1.3) on loopback against the built meshtls-identity (--workers N), beside
// the raw node:crypto ECDSA P-256 sign+verify rate measured in the same run while the server is idle: on one
// thread, and on N threads at once (worker_threads, N = the CPUs node may use), so both ratios are printed.
// Usage: pnpm --filter meshtls-identity bench [-- --seconds 5 --workers N --client h2load|node --concurrency 16
//        --channels 4 --server-cpu-prof DIR]
//
// The load generator must cost little, or it measures itself: by default it is h2load (Debian/Ubuntu package
// nghttp2-client), which sends one prebuilt gRPC request (a token and a CSR) over TLS on `channels` connections
// with `concurrency` streams in flight. h2load does not read gRPC statuses, so the bench counts issued leaves in
// the server's own identity_certify_total{result="ok"} before and after, and fails unless that equals h2load's
// completed requests with no refusal. `--client node` keeps the node:http2 client (one distinct token and CSR per
// stream, each answer's gRPC status checked). Either way, the first answer on every stream of a node:http2
// warm-up (TLS verified for the server's identity) is decoded and its leaf verified against the anchor.
import { execFile, spawn } from "node:child_process";
import { generateKeyPairSync, sign as nodeSign, verify as nodeVerify } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http2 from "node:http2";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { Worker } from "node:worker_threads";
import { CertifyRequest, CertifyResponse } from "@meshtls/api";
import { createCertifyHandler, createIssuerStore, createJwksTokenValidator } from "@meshtls/identity";
import { createCsr, decodeCertificates, generateKeyPair, verifyChain } from "@meshtls/pki";

const cpus = availableParallelism();
const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    workers: { type: "string", default: String(cpus) },
    client: { type: "string", default: "h2load" },
    concurrency: { type: "string", default: "16" },
    channels: { type: "string", default: "4" },
    "log-level": { type: "string", default: "info" },
    "server-cpu-prof": { type: "string" },
  },
});
const seconds = Number(values.seconds);
const workers = Number(values.workers);
const concurrency = Number(values.concurrency);
const channels = Number(values.channels);
const client = values.client;
if (client !== "h2load" && client !== "node") throw new Error(`--client must be h2load or node, not ${client}`);
if (concurrency % channels !== 0) throw new Error("--concurrency must be a multiple of --channels");
// The server's "listening" line (info) gives its ports.
if (!["info", "debug", "trace"].includes(values["log-level"])) throw new Error("--log-level must be info, debug or trace: the bench reads the server's \"listening\" line");

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const cliBin = path.join(repoRoot, "apps/cli/dist/main.js");
const identityBin = path.join(repoRoot, "apps/identity/dist/main.js");
const run = promisify(execFile);
const cli = async (args) => (await run(process.execPath, [cliBin, ...args])).stdout;
const SERVER_NAME = "identity.meshtls.serviceaccount.identity.meshtls.cluster.local";
const CERTIFY_PATH = "/io.linkerd.proxy.identity.Identity/Certify";
const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";

if (client === "h2load") {
  try {
    await run("h2load", ["--version"]);
  } catch {
    console.error("bench: h2load not found. Install it (Debian/Ubuntu: apt-get install nghttp2-client), or run with --client node.");
    process.exit(1);
  }
}

/** Raw node:crypto P-256 sign + verify pairs per second on this thread (the one-thread denominator). */
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

/** The same loop on `threads` worker_threads at once (started together): the sum of their rates. */
async function rawSignVerifyRateAllThreads(threads, durationMs) {
  // The workers run this very function (its source), with the same imports.
  const code = `const { generateKeyPairSync, sign: nodeSign, verify: nodeVerify } = require("node:crypto");
${rawSignVerifyRate.toString()}
const { parentPort } = require("node:worker_threads");
parentPort.once("message", (ms) => parentPort.postMessage(rawSignVerifyRate(ms)));
parentPort.postMessage("ready");`;
  const pool = Array.from({ length: threads }, () => new Worker(code, { eval: true }));
  await Promise.all(pool.map((w) => new Promise((resolve) => w.once("message", resolve))));
  const rates = await Promise.all(
    pool.map(
      (w) =>
        new Promise((resolve, reject) => {
          w.once("message", resolve);
          w.once("error", reject);
          w.postMessage(durationMs);
        }),
    ),
  );
  await Promise.all(pool.map((w) => w.terminate()));
  return rates.reduce((a, b) => a + b, 0);
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

/** CPU of every server process (the primary and its workers), in ms; undefined when /proc is not there. */
async function serverProcessesCpuMs(pids) {
  const each = await Promise.all(pids.map(procCpuMs));
  return each.some((v) => v === undefined) ? undefined : each.reduce((a, b) => a + b, 0);
}

/** identity_certify_total from the admin /metrics (summed over workers by the server): { ok, refused }. */
async function certifyCounts(adminAddress) {
  const text = await (await fetch(`http://${adminAddress}/metrics`)).text();
  let ok = 0;
  let refused = 0;
  for (const m of text.matchAll(/^identity_certify_total\{result="([^"]+)"\} (\d+)$/gm)) {
    if (m[1] === "ok") ok += Number(m[2]);
    else refused += Number(m[2]);
  }
  return { ok, refused };
}

/**
 * Runs h2load; returns its counts, wall-clock rate, per-request latencies (ms, from its log file) and CPU (ms, from
 * the shell's `times`, which reports the finished child's user + system time).
 */
async function h2load({ address, bodyFile, requests, logFile }) {
  const args = [
    ...["-n", String(requests), "-c", String(channels), "-m", String(concurrency / channels), "-t", "1"],
    ...["-d", bodyFile, "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", logFile],
    `https://${address}${CERTIFY_PATH}`,
  ];
  const script = 'h2load "$@" > "$H2LOAD_OUT"; rc=$?; times; exit $rc';
  const outFile = `${logFile}.out`;
  const { stdout } = await run("bash", ["-c", script, "bash", ...args], { env: { ...process.env, H2LOAD_OUT: outFile }, timeout: (seconds * 10 + 60) * 1000 });
  const out = await readFile(outFile, "utf8");
  const counts = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const finished = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(out);
  const tls = /TLS Protocol: (\S+)/.exec(out);
  if (!counts || !finished) throw new Error(`h2load printed something unexpected:\n${out}`);
  // `times` prints the shell's own user/system line, then its children's: "0m1.234s 0m0.567s".
  const childTimes = stdout.trim().split("\n").at(-1).split(" ").map((t) => {
    const m = /^(\d+)m([\d.]+)s$/.exec(t);
    return m ? (Number(m[1]) * 60 + Number(m[2])) * 1000 : NaN;
  });
  const latencies = (await readFile(logFile, "utf8"))
    .split("\n")
    .filter(Boolean)
    .map((line) => Number(line.split("\t")[2]) / 1000)
    .sort((a, b) => a - b);
  return {
    done: Number(counts[3]),
    succeeded: Number(counts[4]),
    failed: Number(counts[5]) + Number(counts[6]) + Number(counts[7]),
    perSecond: Number(finished[3]),
    elapsedSeconds: Number(finished[1]) / (finished[2] === "ms" ? 1000 : 1),
    tls: tls?.[1] ?? "unknown",
    cpuMs: childTimes[0] + childTimes[1],
    latencies,
    output: out,
  };
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
    ...["--workers", String(workers)],
  ];
  child = spawn(process.execPath, serverArgs, { stdio: ["ignore", "pipe", "inherit"] });
  // Logs go to a pipe that we drain (as a log shipper would); the "listening" line gives the ports, and with
  // --workers the workers' pids (their CPU is the server's too).
  const listening = await new Promise((resolve, reject) => {
    let buffered = "";
    child.stdout.on("data", (chunk) => {
      buffered += chunk.toString();
      for (let nl; (nl = buffered.indexOf("\n")) >= 0; ) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.includes('"listening"')) resolve(JSON.parse(line));
      }
      if (buffered.length > 1 << 20) buffered = "";
    });
    child.once("exit", (code) => reject(new Error(`meshtls-identity exited ${code}`)));
    setTimeout(() => reject(new Error("meshtls-identity did not log \"listening\" within 30 s")), 30_000).unref();
  });
  const address = listening.grpc;
  const workerPids = listening.workerPids ?? [];
  const serverPids = [child.pid, ...workerPids];
  if (workers > 1 && workerPids.length !== workers) throw new Error(`expected ${workers} worker pids, saw ${workerPids.length}`);

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

  // Raw rates first, while the server is idle: one thread, then every CPU at once.
  const rawMs = Math.min(3000, seconds * 1000);
  const raw = rawSignVerifyRate(rawMs);
  const rawAll = await rawSignVerifyRateAllThreads(cpus, rawMs);

  let calls;
  let elapsed;
  let latencies;
  let errors = 0;
  let loadCpuMs;
  let loadTls = "TLSv1.3 (node:http2, verified)";
  let serverCpuMs;
  if (client === "h2load") {
    for (const s of sessions) s.close();
    const bodyFile = path.join(dir, "certify-request.grpc");
    await writeFile(bodyFile, frames[0]);
    const runH2load = async (requests, logFile) => {
      const before = await certifyCounts(listening.admin);
      const cpuBefore = await serverProcessesCpuMs(serverPids);
      const result = await h2load({ address, bodyFile, requests, logFile });
      const cpuAfter = await serverProcessesCpuMs(serverPids);
      const after = await certifyCounts(listening.admin);
      const issued = after.ok - before.ok;
      const refused = after.refused - before.refused;
      // h2load sees HTTP 200 for any gRPC answer: the server's own count of leaves issued is what succeeded.
      if (issued !== result.done || refused !== 0 || result.failed !== 0 || result.succeeded !== result.done) {
        throw new Error(`h2load completed ${result.done} (${result.failed} failed) but the server issued ${issued} leaves and refused ${refused}:\n${result.output}`);
      }
      return { ...result, issued, serverCpuMs: cpuBefore === undefined ? undefined : cpuAfter - cpuBefore };
    };
    // Short runs (about a second) size the measured one: it is given a request count (h2load's -n), not a
    // duration, because with -D h2load leaves the requests in flight at the end uncounted while the server
    // completes them.
    let probe = await runH2load(Math.max(200, concurrency * 20), path.join(dir, "h2load-probe.log"));
    while (probe.elapsedSeconds < 0.8) probe = await runH2load(Math.ceil(probe.perSecond * 1.2), path.join(dir, "h2load-probe.log"));
    const measured = await runH2load(Math.max(concurrency * 20, Math.round(probe.perSecond * seconds)), path.join(dir, "h2load.log"));
    calls = measured.issued;
    elapsed = measured.elapsedSeconds;
    latencies = measured.latencies;
    loadCpuMs = measured.cpuMs;
    loadTls = `${measured.tls} (h2load, not verified; the warm-up was)`;
    serverCpuMs = measured.serverCpuMs;
  } else {
    const before = await certifyCounts(listening.admin);
    const serverCpuBefore = await serverProcessesCpuMs(serverPids);
    const clientCpuBefore = process.cpuUsage();
    latencies = [];
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
    elapsed = (performance.now() - started) / 1000;
    const serverCpuAfter = await serverProcessesCpuMs(serverPids);
    const clientCpu = process.cpuUsage(clientCpuBefore);
    const after = await certifyCounts(listening.admin);
    latencies.sort((a, b) => a - b);
    calls = latencies.length;
    if (after.ok - before.ok !== calls) throw new Error(`the client saw ${calls} leaves, the server counted ${after.ok - before.ok}`);
    loadCpuMs = (clientCpu.user + clientCpu.system) / 1000;
    serverCpuMs = serverCpuBefore === undefined ? undefined : serverCpuAfter - serverCpuBefore;
  }
  const rate = calls / elapsed;

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

  const perServerCpuSecond = serverCpuMs === undefined ? null : calls / (serverCpuMs / 1000);
  const result = {
    certifyPerSecond: Math.round(rate),
    workers,
    cpus,
    rawEcdsaP256SignVerifyPerSecond: Math.round(raw),
    ratio: Number((rate / raw).toFixed(3)),
    rawEcdsaP256SignVerifyPerSecondAllCpus: Math.round(rawAll),
    ratioAllCpus: Number((rate / rawAll).toFixed(3)),
    serverCpuMsPerCall: serverCpuMs === undefined ? null : Number((serverCpuMs / calls).toFixed(3)),
    certifyPerServerCpuSecond: perServerCpuSecond === null ? null : Math.round(perServerCpuSecond),
    ratioPerServerCpuSecond: perServerCpuSecond === null ? null : Number((perServerCpuSecond / raw).toFixed(3)),
    loadGeneratorCpuMsPerCall: Number((loadCpuMs / calls).toFixed(3)),
    p50Ms: Number(percentile(latencies, 50).toFixed(2)),
    p99Ms: Number(percentile(latencies, 99).toFixed(2)),
    handlerInProcessPerSecond: Math.round(handlerRate),
    handlerCpuMsPerCall: Number(((handlerCpu.user + handlerCpu.system) / 1000 / handled).toFixed(3)),
    calls,
    errors,
    client,
    concurrency,
    channels,
    seconds: Number(elapsed.toFixed(2)),
    transport: `gRPC over ${loadTls}, loopback`,
    serverLogLevel: values["log-level"],
  };
  const meets = (r) => (r >= 0.4 ? "meets the 0.4 aim" : "below the 0.4 aim");
  console.log(`Certify over gRPC (${result.transport}; ${concurrency} streams in flight on ${channels} connections; ${result.seconds}s; ${cpus} CPUs):`);
  console.log(`  Certify calls/s (wall clock)        ${result.certifyPerSecond}  (server: ${workers} worker${workers === 1 ? "" : "s"}; load generator: ${client}, same machine)`);
  console.log(`  raw ECDSA P-256 sign+verify/s       ${result.rawEcdsaP256SignVerifyPerSecond} on 1 thread; ${result.rawEcdsaP256SignVerifyPerSecondAllCpus} on ${cpus} threads at once (node:crypto, same run, server idle)`);
  console.log(`  ratio, against 1 thread             ${result.ratio}  (${meets(result.ratio)})`);
  console.log(`  ratio, against ${cpus} threads            ${result.ratioAllCpus}  (${meets(result.ratioAllCpus)})`);
  console.log(`  server CPU per call                 ${result.serverCpuMsPerCall} ms, all server processes  (${result.certifyPerServerCpuSecond} calls per server CPU second; raw pair ${(1000 / raw).toFixed(3)} ms)`);
  console.log(`  ratio per server CPU second         ${result.ratioPerServerCpuSecond}  (calls per server CPU second ÷ raw pairs per second on 1 thread)`);
  console.log(`  load generator CPU per call         ${result.loadGeneratorCpuMsPerCall} ms  (${client})`);
  console.log(`  latency p50 / p99                   ${result.p50Ms} ms / ${result.p99Ms} ms`);
  console.log(`  handler in-process (no gRPC, TLS)   ${result.handlerInProcessPerSecond}/s, ${result.handlerCpuMsPerCall} ms CPU per call`);
  console.log(`  errors                              ${errors}`);
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
