#!/usr/bin/env node
/* global process, console, fetch */
/* eslint-disable no-console -- a benchmark prints its table */
// The two-hop benchmark: client → (proxy A) → (proxy B) → app, several ways in
// one run on this machine: direct (no proxies), meshtls-proxy (HTTP-aware:
// pooled mesh connections) entered by a route and as the HTTP proxy
// (HTTP_PROXY: absolute-URI requests), a naive node:tls pair, an nginx stream pair doing
// the same mTLS per connection, and an nginx HTTP pair (upstream keep-alive,
// mTLS between the two nginx), all with certificates from the same issuer.
// The app is an nginx HTTP server (1 KiB body, a 256 MiB file), so that the
// proxies are the only difference. Needs: built apps (pnpm build), nginx with
// the stream module, wrk, curl, openssl. Usage: pnpm --filter meshtls-proxy bench
import { execFile, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync, openSync, closeSync, ftruncateSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { exportPrivateKey, generateKeyPair, importPrivateKey, issueLeaf, pemEncode, toDer } from "@meshtls/pki";
import { inNamespace, removeTransparentPair, startTransparentPair, transparentUnavailable } from "./transparent-pair.mjs";
import { freePort, podEnv } from "./processes.mjs";
import { sleep, waitFor } from "./wait.mjs";

const run = promisify(execFile);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const bins = {
  cli: path.join(repoRoot, "apps/cli/dist/main.js"),
  identity: path.join(repoRoot, "apps/identity/dist/main.js"),
  destination: path.join(repoRoot, "apps/destination/dist/main.js"),
  // BENCH_PROXY_BIN: another build of meshtls-proxy (before/after comparisons in interleaved runs).
  proxy: process.env.BENCH_PROXY_BIN ?? path.join(repoRoot, "apps/proxy/dist/main.js"),
};
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 10);
const OPEN_CONNECTIONS = Number(process.env.BENCH_OPEN_CONNECTIONS ?? 1000);
const BULK_MIB = Number(process.env.BENCH_BULK_MIB ?? 256);
/**
 * BENCH_ROUNDS: how many times every path is measured, the paths interleaved and their order rotated each round; the
 * tables show each figure's median over the rounds, and every round's own ratios are printed (this machine's speed
 * drifts by 10–20 % within minutes, so one path measured minutes after another compares drift as much as code).
 * RSS with open connections is measured in the first round only.
 */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 1));
/** Comma-separated subset of keepalive,bulk,fresh (new connections) to measure. */
const PHASES = (process.env.BENCH_PHASES ?? "keepalive,bulk,fresh").split(",");
/** BENCH_CPU_PROF=DIR writes each meshtls proxy's and naive pair process's V8 CPU profile there on exit. */
const cpuProfArgs = (name) => (process.env.BENCH_CPU_PROF ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_CPU_PROF, "--cpu-prof-name", `${name}.cpuprofile`] : []);
/** Comma-separated subset of direct,meshtls,meshtlsh2,httpproxy,opaque,opaquex25519,naive,nodehttp,nginx,nginxhttp,transparent to run (meshtlsh2 = the same proxies to a service with the h2 hint: one multiplexed mTLS HTTP/2 connection; nodehttp = bench/node-http-pair.mjs, the bare Node floor) (ratios need meshtls, nginx and nginxhttp; httpproxy = the same proxies through A's HTTP proxy listener, wrk with bench/http-proxy.lua; opaque = the same proxies to the app's opaque port through an `,opaque` route, opaquex25519 = the same through a second pair with --tls-groups X25519; naive = bench/naive-pair.mjs; naiveresume = the same with client-side session resumption and one secure context, node:tls's floor for new connections; transparent = bench/transparent-pair.mjs, root only, skipped otherwise, its ratios against httpproxy and meshtls). */
const PATHS = (process.env.BENCH_PATHS ?? "direct,meshtls,meshtlsh2,httpproxy,opaque,opaquex25519,naive,naiveresume,nodehttp,nginx,nginxhttp,transparent").split(",");
const HTTP_PROXY_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), "http-proxy.lua");
/** BENCH_PROXY_NODE_ARGS: node flags for the meshtls proxies and the naive pair (experiments, e.g. --trace-gc). */
const nodeArgs = () => ["--import", GC_COUNT, ...(process.env.BENCH_PROXY_NODE_ARGS ? process.env.BENCH_PROXY_NODE_ARGS.split(" ") : [])];
/** Preloaded into the meshtls proxies and the naive pair alike: V8 collections by kind, written on SIGUSR2 (bench/gc-count.mjs). */
const GC_COUNT = path.join(path.dirname(fileURLToPath(import.meta.url)), "gc-count.mjs");
const identityOf = (sa) => `${sa}.default.serviceaccount.identity.meshtls.cluster.local`;
const children = [];

/** The opaque path against the naive node:tls pair (like for like: bytes, no detection) and the nginx stream pair. */
function opaqueRatios(results, log = console.log) {
  const { opaque: o, opaquex25519: ox, naive: v, naiveresume: vr, naivestreams: vs, nginx: n } = results;
  if (o === undefined || (v === undefined && n === undefined)) return;
  const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
  const ratio = (a, b, f) => (a === undefined || b === undefined ? "    n/a" : fmt(f(a) / f(b)).padStart(7));
  log("\nopaque ÷ naive node pair             opaque   (aim)");
  log(`  keep-alive req/s                 ${ratio(o, v, (r) => r.keepAlive.rps)}   [≥ 1.0]`);
  log(`  CPU/request, keep-alive          ${ratio(o, v, (r) => r.cpu.usPerRequest)}   [≤ 1.05]`);
  log(`  bulk MB/s                        ${ratio(o, v, (r) => r.bulkMBps)}   [≥ 0.9]`);
  log(`  CPU/bulk MiB                     ${ratio(o, v, (r) => r.cpu.msPerBulkMiB)}   [≤ 1.05]`);
  log(`  full GCs, keep-alive phase       opaque ${fmt(o.fullGcs.keepalive, 0)}, naive ${v === undefined ? "n/a" : fmt(v.fullGcs.keepalive, 0)}   [opaque ≤ naive]`);
  if (vs !== undefined) {
    // The same naive pair in processes whose node stream code also served HTTP/1, HTTP/2 and pipelines (bench/exercise-streams.mjs).
    log(`  naivestreams ÷ naive: keep-alive req/s ${ratio(vs, v, (r) => r.keepAlive.rps)}, CPU/request ${ratio(vs, v, (r) => r.cpu.usPerRequest)}, CPU/bulk MiB ${ratio(vs, v, (r) => r.cpu.msPerBulkMiB)}`);
    log(`  opaque ÷ naivestreams: keep-alive req/s ${ratio(o, vs, (r) => r.keepAlive.rps)}, CPU/request ${ratio(o, vs, (r) => r.cpu.usPerRequest)}, bulk MB/s ${ratio(o, vs, (r) => r.bulkMBps)}, CPU/bulk MiB ${ratio(o, vs, (r) => r.cpu.msPerBulkMiB)}`);
  }
  log("opaque ÷ nginx stream pair (nginx: OpenSSL 3.0, X25519)");
  log(`  new conns/s, X25519MLKEM768      ${ratio(o, n, (r) => r.connsPerS)}`);
  log(`  new conns/s, X25519              ${ratio(ox, n, (r) => r.connsPerS)}   [≥ 1.0]  (opaquex25519: --tls-groups X25519 on both proxies)`);
  log(`  CPU/new conn, X25519MLKEM768     ${ratio(o, n, (r) => r.cpu.usPerNewConn)}`);
  log(`  CPU/new conn, X25519             ${ratio(ox, n, (r) => r.cpu.usPerNewConn)}`);
  log(`  node:tls floor: naive pair, resuming, new conns/s ${ratio(vr, n, (r) => r.connsPerS)}, CPU/new conn ${ratio(vr, n, (r) => r.cpu.usPerNewConn)}  (X25519; opaquex25519 ÷ it: ${ratio(ox, vr, (r) => r.connsPerS)})`);
  log(`  p99 latency, keep-alive          ${ratio(o, n, (r) => r.keepAlive.p99)}   [≤ 2]`);
}

/** Every process this bench starts, the proxies, the naive pairs and bare node alike, gets a pod's environment (bench/processes.mjs). */
const childEnv = podEnv(process.env.MALLOC_ARENA_MAX ?? "2");

function start(name, command, args) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: childEnv });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  // BENCH_LOG_DIR=DIR keeps each process's whole output there (with BENCH_PROXY_NODE_ARGS=--trace-gc, the GC log).
  if (process.env.BENCH_LOG_DIR) child.on("exit", () => writeFileSync(path.join(process.env.BENCH_LOG_DIR, `${name}.log`), out));
  child.on("exit", (code, signal) => {
    if (!stopping) console.error(`${name} exited early (${code ?? signal}):\n${out.slice(-2000)}`);
  });
  children.push(child);
  return { child, output: () => out };
}
let stopping = false;

async function issue(dir, identity, prefix) {
  const issuerCert = toDer(readFileSync(path.join(dir, "issuer.crt"), "utf8"), "CERTIFICATE");
  const issuerKey = await importPrivateKey(readFileSync(path.join(dir, "issuer.key"), "utf8"));
  const keyPair = await generateKeyPair();
  const leaf = await issueLeaf({ issuer: { certificate: issuerCert, privateKey: issuerKey.privateKey }, publicKey: keyPair.publicKey, identity });
  writeFileSync(`${prefix}.crt`, pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuerCert));
  writeFileSync(`${prefix}.key`, await exportPrivateKey(keyPair.privateKey));
}

function rssKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}
const CLOCK_TICKS = 100;
/** Runs `fn` and returns its result with the CPU seconds `pids` used meanwhile. */
async function withCpu(pids, fn) {
  const before = pids.map(cpuSeconds);
  const result = await fn();
  const each = pids.map((pid, i) => cpuSeconds(pid) - before[i]);
  return { result, cpu: each.reduce((a, b) => a + b, 0), each };
}

/** BENCH_PERF=DIR records `perf record -g` of the proxy processes during each phase into DIR/<path>-<phase>.data. */
let perfPath = "";
async function withPerf(phaseName, pids, fn) {
  if (process.env.BENCH_STRACE && pids.length > 0) {
    // BENCH_STRACE=DIR: syscall counts of each proxy process during each phase (slows the proxies: counts only).
    const tracers = pids.map((pid) => spawn("strace", ["-c", "-f", "-o", path.join(process.env.BENCH_STRACE, `${perfPath}-${phaseName}-${pid}.txt`), "-p", String(pid)], { stdio: "ignore" }));
    await sleep(300);
    try {
      return await fn();
    } finally {
      for (const t of tracers) t.kill("SIGINT");
      await Promise.all(tracers.map((t) => new Promise((r) => t.once("exit", r))));
    }
  }
  if (!process.env.BENCH_PERF || pids.length === 0) return fn();
  const out = path.join(process.env.BENCH_PERF, `${perfPath}-${phaseName}.data`);
  const perf = spawn("perf", ["record", "-g", "-F", "999", "-o", out, "-p", pids.join(",")], { stdio: "ignore" });
  await sleep(300);
  try {
    return await fn();
  } finally {
    perf.kill("SIGINT");
    await new Promise((r) => perf.once("exit", r));
  }
}

/** Heap used and external memory of each meshtls proxy, from its admin /metrics (prom-client default metrics). */
async function heapFigures(admins) {
  if (admins === undefined) return undefined;
  return Promise.all(
    admins.map(async (port) => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const value = (name) => Number(new RegExp(`^${name} ([0-9.e+]+)`, "m").exec(text)?.[1]);
      return { heapUsed: value("nodejs_heap_size_used_bytes"), external: value("nodejs_external_memory_bytes") };
    }),
  );
}

/** Runs `fn` (a withCpu) and adds the full GCs the processes `procs` ran meanwhile (NaN without procs: nginx, the app). */
async function withGc(procs, fn) {
  if (procs === undefined) return { ...(await fn()), gcs: NaN };
  const before = await majorGcs(procs);
  const out = await fn();
  const after = await majorGcs(procs);
  return { ...out, gcs: after.reduce((sum, n, i) => sum + n - before[i], 0) };
}

/** Full mark-compacts so far in each of `procs` (started with gc-count.mjs preloaded): the count each writes on SIGUSR2. */
async function majorGcs(procs) {
  return Promise.all(
    procs.map(async (p) => {
      const seen = p.output().length;
      p.child.kill("SIGUSR2");
      let line;
      await waitFor("a GC count", () => (line = /\{"benchGc":(\{[^}]*\})\}/.exec(p.output().slice(seen))) !== null, 5000);
      return JSON.parse(line[1]).major;
    }),
  );
}

async function nginxPids(pidFile) {
  const master = Number(readFileSync(pidFile, "utf8").trim());
  const { stdout } = await run("pgrep", ["-P", String(master)]);
  return [master, ...stdout.trim().split("\n").filter(Boolean).map(Number)];
}

const STREAM_MODULE = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/lib64/nginx/modules/ngx_stream_module.so"].find(existsSync);
function nginxConf(dir, name, body, { stream = false } = {}) {
  const file = path.join(dir, `${name}.conf`);
  writeFileSync(
    file,
    [
      stream && STREAM_MODULE ? `load_module ${STREAM_MODULE};` : "",
      "daemon off;",
      "worker_processes 1;",
      "worker_rlimit_nofile 16384;",
      `pid ${path.join(dir, `${name}.pid`)};`,
      `error_log ${path.join(dir, `${name}.err`)} warn;`,
      "events { worker_connections 8192; }",
      body,
    ].join("\n"),
  );
  return file;
}

/** How a path's clients reach it: as is, or through an HTTP proxy (absolute-URI requests for `proxyAuthority`). */
const viaProxy = (target) =>
  target.proxyAuthority === undefined
    ? { wrkArgs: [], curlArgs: (urlPath) => [`http://${target.host}:${target.port}${urlPath}`], env: process.env, requestTarget: (urlPath) => urlPath }
    : {
        wrkArgs: ["-s", HTTP_PROXY_SCRIPT],
        curlArgs: (urlPath) => ["-x", `http://${target.host}:${target.port}`, `http://${target.proxyAuthority}${urlPath}`],
        env: { ...process.env, BENCH_PROXY_AUTHORITY: target.proxyAuthority },
        requestTarget: (urlPath) => `http://${target.proxyAuthority}${urlPath}`,
      };

async function wrk(url, extra = [], ns = undefined, via = viaProxy({})) {
  const { stdout } = await run(...inNamespace(ns, "wrk", ["-t2", "-c16", `-d${DURATION_S}s`, "--latency", ...via.wrkArgs, ...extra, url]), { timeout: (DURATION_S + 30) * 1000, env: via.env });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]);
  const toMs = (v, unit) => Number(v) * ({ us: 0.001, ms: 1, s: 1000 }[unit] ?? NaN);
  const p = (q) => {
    const m = new RegExp(`\\s${q}%\\s+([\\d.]+)(us|ms|s)`).exec(stdout);
    return m ? toMs(m[1], m[2]) : NaN;
  };
  const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(stdout)?.[0] ?? "";
  return { rps, p50: p(50), p99: p(99), errors };
}

async function bulk(curlArgs, ns = undefined) {
  const speeds = [];
  for (let i = 0; i < 3; i++) {
    const { stdout } = await run(...inNamespace(ns, "curl", ["-sS", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", ...curlArgs]), { timeout: 120_000 });
    const [speed, size] = stdout.trim().split(" ").map(Number);
    if (size !== BULK_MIB * 1024 * 1024) throw new Error(`bulk download through ${curlArgs.join(" ")} got ${size} bytes`);
    speeds.push(speed / 1e6);
  }
  speeds.sort((x, y) => x - y);
  return speeds[1];
}

/** Opens `n` keep-alive connections, each with one answered request, and holds them. */
async function openMany(host, port, n, requestTarget = "/1k") {
  const sockets = [];
  const request = `GET ${requestTarget} HTTP/1.1\r\nhost: bench\r\n\r\n`;
  for (let i = 0; i < n; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, () =>
        new Promise((resolve, reject) => {
          const s = net.connect(port, host, () => s.write(request));
          s.once("data", () => resolve(undefined));
          s.once("error", reject);
          sockets.push(s);
        }),
      ),
    );
  }
  return sockets;
}

async function main() {
  const install = { wrk: "apt-get install wrk", curl: "apt-get install curl", nginx: "apt-get install nginx-light libnginx-mod-stream", openssl: "apt-get install openssl" };
  for (const tool of ["wrk", "curl", "nginx", "openssl"]) {
    await run("sh", ["-c", `command -v ${tool}`]).catch(() => {
      throw new Error(`${tool} is required (Debian/Ubuntu: ${install[tool]})`);
    });
  }
  if (STREAM_MODULE === undefined && PATHS.includes("nginx")) throw new Error("nginx's stream module is required for the nginx stream pair (Debian/Ubuntu: apt-get install libnginx-mod-stream), or leave nginx out of BENCH_PATHS");
  const dir = mkdtempSync(path.join(os.tmpdir(), "meshtls-bench-"));
  chmodSync(dir, 0o755); // nginx workers run unprivileged and read the bulk file
  const node = process.execPath;
  await run(node, [bins.cli, "certs", "create", "--out", dir]);
  await run(node, [bins.cli, "token", "keygen", "--out", dir]);
  for (const sa of ["a", "b"]) {
    const { stdout } = await run(node, [bins.cli, "token", "mint", "--key", path.join(dir, "token-signer.key"), "--namespace", "default", "--service-account", sa]);
    writeFileSync(path.join(dir, `${sa}.token`), stdout.trim());
  }

  // The app: nginx HTTP on 127.0.1.2 with a 1 KiB answer and a bulk file.
  const appPort = await freePort("127.0.1.2");
  const big = path.join(dir, "big.bin");
  const fd = openSync(big, "w");
  ftruncateSync(fd, BULK_MIB * 1024 * 1024);
  closeSync(fd);
  chmodSync(big, 0o644);
  const oneKiB = "x".repeat(1024);
  // appOpaquePort: the same server on a port B's policy marks opaque (the opaque path: no HTTP detection on either proxy).
  const appOpaquePort = await freePort("127.0.1.2");
  const appConf = nginxConf(dir, "app", `http { access_log off; keepalive_requests 1000000; server { listen 127.0.1.2:${appPort} reuseport; listen 127.0.1.2:${appOpaquePort} reuseport; location = /1k { default_type text/plain; return 200 "${oneKiB}"; } location = /big { alias ${big}; } } }`);
  start("app nginx", "nginx", ["-c", appConf, "-p", dir]);

  // Control plane and meshtls proxies.
  const identity = start("identity", node, [bins.identity, "--trust-anchors", path.join(dir, "ca.crt"), "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"), "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
  await waitFor("identity", () => identity.output().includes('"msg":"listening"'));
  const idLine = JSON.parse(identity.output().split("\n").find((l) => l.includes('"msg":"listening"')));
  const bInbound = await freePort("127.0.1.2");
  const registry = path.join(dir, "registry.yaml");
  // web-h2: the same endpoint with Linkerd's protocol hints (h2: one multiplexed mTLS HTTP/2 connection, the real mesh path); its
  // address is B's inbound, which forwards to its workload (no redirect here). `web` has no hint: HTTP/1 keep-alive pools.
  writeFileSync(registry, `services:\n  - name: web\n    ports: [{ port: 80, targetPort: ${appPort} }]\n    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: ${bInbound} }]\n  - name: web-h2\n    ports: [{ port: 80, targetPort: ${bInbound} }]\n    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: ${bInbound}, protocolHints: {} }]\n`);
  const routeH2Port = await freePort("127.0.1.1");
  // web-opaque: the same workload's opaque port; A reaches it through an `,opaque` route (bytes, the transport header to B's inbound).
  const bInboundX25519 = await freePort("127.0.1.3");
  const opaqueService = (name, address, inboundPort) => `  - name: ${name}\n    ports: [{ port: 80, targetPort: ${appOpaquePort} }]\n    endpoints: [{ address: ${address}, serviceAccount: b, inboundPort: ${inboundPort} }]\n`;
  writeFileSync(registry, opaqueService("web-opaque", "127.0.1.2", bInbound) + opaqueService("web-opaque-x25519", "127.0.1.3", bInboundX25519), { flag: "a" });
  const destination = start("destination", node, [bins.destination, "--registry", registry, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"]);
  await waitFor("destination", () => destination.output().includes('"msg":"listening"'));
  const destLine = JSON.parse(destination.output().split("\n").find((l) => l.includes('"msg":"listening"')));
  const routePort = await freePort("127.0.1.1");
  const proxy = async (name, ip, inbound, extra, sa = name) => {
    const admin = await freePort("127.0.0.1");
    const outbound = await freePort(ip);
    const p = start(`proxy-${name}`, node, [
      ...nodeArgs(),
      ...cpuProfArgs(`proxy-${name}`),
      bins.proxy, "--identity", identityOf(sa), "--token-file", path.join(dir, `${sa}.token`), "--trust-anchors", path.join(dir, "ca.crt"),
      "--identity-addr", idLine.grpc, "--identity-name", idLine.serverName, "--destination-addr", destLine.grpcAddress, "--destination-insecure-plaintext",
      "--context-token", '{"ns":"default"}', "--inbound", `${ip}:${inbound}`, "--outbound", `${ip}:${outbound}`, "--admin", `127.0.0.1:${admin}`,
      // No --outbound-bind: a pod's proxy never binds (only the one-host demo does); node binds with port 0, and the
      // kernel's search for a free port among the TIME_WAITs of earlier runs cost 1–2.7 ms of system time per new
      // connection here, alternating from run to run (nginx's proxy_bind sets IP_BIND_ADDRESS_NO_PORT; node cannot).
      "--log-level", "warn", ...extra,
    ]);
    await waitFor(`proxy ${name} ready`, async () => (await fetch(`http://127.0.0.1:${admin}/ready`)).status === 200);
    return { ...p, admin, outbound };
  };
  const proxyB = await proxy("b", "127.0.1.2", bInbound, ["--workload", `127.0.1.2:${appPort}`, "--opaque-ports", String(appOpaquePort)]);
  const opaqueRoutePort = await freePort("127.0.1.1");
  const proxyA = await proxy("a", "127.0.1.1", await freePort("127.0.1.1"), ["--workload", "127.0.1.1:1", "--route", `127.0.1.1:${routePort}=web.default.svc.cluster.local:80`, "--route", `127.0.1.1:${routeH2Port}=web-h2.default.svc.cluster.local:80`, "--route", `127.0.1.1:${opaqueRoutePort}=web-opaque.default.svc.cluster.local:80,opaque`]);

  // opaquex25519: the opaque path through a second pair offering X25519 alone (--tls-groups), for new connections against nginx's OpenSSL 3.0.
  const x25519Route = await freePort("127.0.1.1");
  const [proxyBx, proxyAx] = PATHS.includes("opaquex25519")
    ? [
        await proxy("bx", "127.0.1.3", bInboundX25519, ["--workload", `127.0.1.2:${appPort}`, "--opaque-ports", String(appOpaquePort), "--tls-groups", "X25519"], "b"),
        await proxy("ax", "127.0.1.1", await freePort("127.0.1.1"), ["--workload", "127.0.1.1:1", "--route", `127.0.1.1:${x25519Route}=web-opaque-x25519.default.svc.cluster.local:80,opaque`, "--tls-groups", "X25519"], "a"),
      ]
    : [];

  // Bare Node 24 listening on a port, nothing loaded: the floor under the proxies' idle RSS, measured as they are (ready, then 500 ms).
  const bare = spawn(node, ["-e", "require('node:net').createServer().listen(0, '127.0.0.1', () => console.log('listening'))"], { stdio: ["ignore", "pipe", "ignore"], env: childEnv });
  await new Promise((resolve) => bare.stdout.once("data", resolve));
  await sleep(500);
  const startRss = { A: rssKiB(proxyA.child.pid), B: rssKiB(proxyB.child.pid), bare: rssKiB(bare.pid) };
  bare.kill("SIGTERM");
  console.error(`# meshtls proxies' RSS after start, before any traffic: A ${startRss.A} KiB, B ${startRss.B} KiB; bare node ${startRss.bare} KiB`);

  // The nginx stream pair, same mTLS: TLS 1.3, client certificate, chain to the anchor, server name = B's identity.
  await issue(dir, identityOf("a"), path.join(dir, "a"));
  await issue(dir, identityOf("b"), path.join(dir, "b"));
  const nginxB = await freePort("127.0.1.2");
  const nginxA = await freePort("127.0.1.1");
  const ca = path.join(dir, "ca.crt");
  const confB = nginxConf(dir, "nginx-b", `stream { server { listen 127.0.1.2:${nginxB} ssl; ssl_protocols TLSv1.3; ssl_certificate ${dir}/b.crt; ssl_certificate_key ${dir}/b.key; ssl_client_certificate ${ca}; ssl_verify_client on; proxy_pass 127.0.1.2:${appPort}; } }`, { stream: true });
  const confA = nginxConf(dir, "nginx-a", `stream { server { listen 127.0.1.1:${nginxA}; proxy_pass 127.0.1.2:${nginxB}; proxy_bind 127.0.1.1; proxy_ssl on; proxy_ssl_protocols TLSv1.3; proxy_ssl_certificate ${dir}/a.crt; proxy_ssl_certificate_key ${dir}/a.key; proxy_ssl_trusted_certificate ${ca}; proxy_ssl_verify on; proxy_ssl_verify_depth 3; proxy_ssl_name ${identityOf("b")}; proxy_ssl_server_name on; } }`, { stream: true });
  start("nginx-b", "nginx", ["-c", confB, "-p", dir]);
  start("nginx-a", "nginx", ["-c", confA, "-p", dir]);
  await waitFor("nginx pair", async () => (await fetch(`http://127.0.1.1:${nginxA}/1k`)).status === 200);

  // The nginx HTTP pair: A keeps a pool of mTLS connections to B (upstream keepalive, TLS 1.3, client
  // certificate, B's identity verified), B keeps a pool to the app: what an HTTP-aware mesh saves.
  const nginxHttpB = await freePort("127.0.1.2");
  const nginxHttpA = await freePort("127.0.1.1");
  const keepUpstream = "proxy_http_version 1.1; proxy_set_header Connection \"\";";
  const confHttpB = nginxConf(dir, "nginx-http-b", `http { access_log off; keepalive_requests 1000000; upstream app { server 127.0.1.2:${appPort}; keepalive 64; } server { listen 127.0.1.2:${nginxHttpB} ssl; ssl_protocols TLSv1.3; ssl_certificate ${dir}/b.crt; ssl_certificate_key ${dir}/b.key; ssl_client_certificate ${ca}; ssl_verify_client on; location / { proxy_pass http://app; ${keepUpstream} } } }`);
  const confHttpA = nginxConf(dir, "nginx-http-a", `http { access_log off; keepalive_requests 1000000; upstream b { server 127.0.1.2:${nginxHttpB}; keepalive 64; } server { listen 127.0.1.1:${nginxHttpA}; location / { proxy_pass https://b; ${keepUpstream} proxy_bind 127.0.1.1; proxy_ssl_protocols TLSv1.3; proxy_ssl_certificate ${dir}/a.crt; proxy_ssl_certificate_key ${dir}/a.key; proxy_ssl_trusted_certificate ${ca}; proxy_ssl_verify on; proxy_ssl_verify_depth 3; proxy_ssl_name ${identityOf("b")}; proxy_ssl_server_name on; proxy_ssl_session_reuse on; } } }`);
  start("nginx-http-b", "nginx", ["-c", confHttpB, "-p", dir]);
  start("nginx-http-a", "nginx", ["-c", confHttpA, "-p", dir]);
  await waitFor("nginx HTTP pair", async () => (await fetch(`http://127.0.1.1:${nginxHttpA}/1k`)).status === 200);

  // The naive Node pair: node:tls piped both ways, the same certificates, nothing else (bench/naive-pair.mjs).
  const naivePair = path.join(path.dirname(fileURLToPath(import.meta.url)), "naive-pair.mjs");
  const naiveB = await freePort("127.0.1.2");
  const naiveA = await freePort("127.0.1.1");
  const naiveProcB = start("naive-b", node, [...nodeArgs(), ...cpuProfArgs("naive-b"), naivePair, "server", "127.0.1.2", String(naiveB), "127.0.1.2", String(appPort), "-", `${dir}/b.crt`, `${dir}/b.key`, ca]);
  const naiveProcA = start("naive-a", node, [...nodeArgs(), ...cpuProfArgs("naive-a"), naivePair, "client", "127.0.1.1", String(naiveA), "127.0.1.2", String(naiveB), identityOf("b"), `${dir}/a.crt`, `${dir}/a.key`, ca]);
  await waitFor("naive node pair", async () => (await fetch(`http://127.0.1.1:${naiveA}/1k`)).status === 200);
  // The same pair, its client offering the last TLS session (as nginx's stream proxy and meshtls do): node:tls's floor for new connections.
  const [naiveResumeB, naiveResumeA] = [await freePort("127.0.1.2"), await freePort("127.0.1.1")];
  const naiveResumeProcs = [
    start("naiveresume-b", node, [...nodeArgs(), ...cpuProfArgs("naiveresume-b"), naivePair, "server", "127.0.1.2", String(naiveResumeB), "127.0.1.2", String(appPort), "-", `${dir}/b.crt`, `${dir}/b.key`, ca]),
    start("naiveresume-a", node, [...nodeArgs(), ...cpuProfArgs("naiveresume-a"), naivePair, "client-resume", "127.0.1.1", String(naiveResumeA), "127.0.1.2", String(naiveResumeB), identityOf("b"), `${dir}/a.crt`, `${dir}/a.key`, ca]),
  ];
  await waitFor("naive node pair, resuming", async () => (await fetch(`http://127.0.1.1:${naiveResumeA}/1k`)).status === 200);
  // The naive pair again, in processes whose node stream code first served HTTP/1, HTTP/2 and pipelines (bench/exercise-streams.mjs).
  const exercise = path.join(path.dirname(fileURLToPath(import.meta.url)), "exercise-streams.mjs");
  const [naiveStreamsB, naiveStreamsA] = [await freePort("127.0.1.2"), await freePort("127.0.1.1")];
  const naiveStreamsProcs = PATHS.includes("naivestreams")
    ? [
        start("naivestreams-b", node, [...nodeArgs(), "--import", exercise, naivePair, "server", "127.0.1.2", String(naiveStreamsB), "127.0.1.2", String(appPort), "-", `${dir}/b.crt`, `${dir}/b.key`, ca]),
        start("naivestreams-a", node, [...nodeArgs(), "--import", exercise, naivePair, "client", "127.0.1.1", String(naiveStreamsA), "127.0.1.2", String(naiveStreamsB), identityOf("b"), `${dir}/a.crt`, `${dir}/a.key`, ca]),
      ]
    : [];
  if (naiveStreamsProcs.length > 0) await waitFor("naive node pair, streams exercised", async () => (await fetch(`http://127.0.1.1:${naiveStreamsA}/1k`)).status === 200, 60_000);
  await waitFor("meshtls pair", async () => (await fetch(`http://127.0.1.1:${routePort}/1k`)).status === 200);
  const webAuthority = "web.default.svc.cluster.local:80";
  await waitFor("meshtls HTTP proxy", async () => (await run("curl", viaProxy({ host: "127.0.1.1", port: proxyA.outbound, proxyAuthority: webAuthority }).curlArgs("/1k"))).stdout === oneKiB);

  // The bare Node floor (bench/node-http-pair.mjs): node:http → one mTLS http2 session → http2 server → keep-alive agent to the app.
  const nodeHttpPair = path.join(path.dirname(fileURLToPath(import.meta.url)), "node-http-pair.mjs");
  const [nodeHttpB, nodeHttpA] = [await freePort("127.0.1.2"), await freePort("127.0.1.1")];
  const nodeHttpProcs = [start("nodehttp-b", node, [...nodeArgs(), nodeHttpPair, "server", "127.0.1.2", String(nodeHttpB), "127.0.1.2", String(appPort), "-", `${dir}/b.crt`, `${dir}/b.key`, ca]), start("nodehttp-a", node, [...nodeArgs(), nodeHttpPair, "client", "127.0.1.1", String(nodeHttpA), "127.0.1.2", String(nodeHttpB), identityOf("b"), `${dir}/a.crt`, `${dir}/a.key`, ca])];
  await waitFor("bare Node HTTP pair", async () => (await fetch(`http://127.0.1.1:${nodeHttpA}/1k`)).status === 200);
  await waitFor("meshtls h2 route", async () => (await fetch(`http://127.0.1.1:${routeH2Port}/1k`)).status === 200);
  const paths = {
    direct: { host: "127.0.1.2", port: appPort, pids: async () => [] },
    meshtls: { host: "127.0.1.1", port: routePort, pids: async () => [proxyA.child.pid, proxyB.child.pid], admins: [proxyA.admin, proxyB.admin], procs: [proxyA, proxyB] },
    // The same proxies, the route to web-h2: HTTP/1 upgraded to HTTP/2 on one mesh connection, downgraded by B.
    meshtlsh2: { host: "127.0.1.1", port: routeH2Port, pids: async () => [proxyA.child.pid, proxyB.child.pid], admins: [proxyA.admin, proxyB.admin], procs: [proxyA, proxyB] },
    nodehttp: { host: "127.0.1.1", port: nodeHttpA, pids: async () => nodeHttpProcs.map((p) => p.child.pid), procs: nodeHttpProcs },
    // The same proxies, A reached as the application's HTTP_PROXY: absolute-URI requests to the same service.
    httpproxy: { host: "127.0.1.1", port: proxyA.outbound, proxyAuthority: webAuthority, pids: async () => [proxyA.child.pid, proxyB.child.pid], admins: [proxyA.admin, proxyB.admin], procs: [proxyA, proxyB] },
    naive: { host: "127.0.1.1", port: naiveA, pids: async () => [naiveProcA.child.pid, naiveProcB.child.pid], procs: [naiveProcA, naiveProcB] },
    naiveresume: { host: "127.0.1.1", port: naiveResumeA, pids: async () => naiveResumeProcs.map((p) => p.child.pid), procs: naiveResumeProcs },
    naivestreams: { host: "127.0.1.1", port: naiveStreamsA, pids: async () => naiveStreamsProcs.map((p) => p.child.pid), procs: naiveStreamsProcs },
    // The same proxies to the app's opaque port: bytes both ways, no HTTP detection, one mesh connection per client connection.
    opaque: { host: "127.0.1.1", port: opaqueRoutePort, pids: async () => [proxyA.child.pid, proxyB.child.pid], admins: [proxyA.admin, proxyB.admin], procs: [proxyA, proxyB] },
    ...(proxyAx === undefined ? {} : { opaquex25519: { host: "127.0.1.1", port: x25519Route, pids: async () => [proxyAx.child.pid, proxyBx.child.pid], admins: [proxyAx.admin, proxyBx.admin], procs: [proxyAx, proxyBx] } }),
    nginx: { host: "127.0.1.1", port: nginxA, pids: async () => [...(await nginxPids(path.join(dir, "nginx-a.pid"))), ...(await nginxPids(path.join(dir, "nginx-b.pid")))] },
    nginxhttp: { host: "127.0.1.1", port: nginxHttpA, pids: async () => [...(await nginxPids(path.join(dir, "nginx-http-a.pid"))), ...(await nginxPids(path.join(dir, "nginx-http-b.pid")))] },
  };
  // Mesh connections proxy A opened (its outbound dst legs), from its /metrics.
  const meshOpened = async () => {
    const text = await (await fetch(`http://127.0.0.1:${proxyA.admin}/metrics`)).text();
    let sum = 0;
    for (const line of text.split("\n")) if (line.startsWith("tcp_open_total{") && line.includes('direction="outbound"') && line.includes('peer="dst"')) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    return sum;
  };
  // The transparent path (bench/transparent-pair.mjs): the client in a network namespace dials the app's address unmodified.
  const noTransparent = PATHS.includes("transparent") ? transparentUnavailable() : "not in BENCH_PATHS";
  if (noTransparent === undefined) {
    paths.transparent = (await startTransparentPair({ dir, node, bins, oneKiB, big, nginxConf, start, nodeArgs })).target;
  } else if (PATHS.includes("transparent")) console.error(`# transparent: skipped, ${noTransparent}`);
  for (const name of PATHS) {
    if (paths[name] === undefined && name !== "transparent") throw new Error(`BENCH_PATHS: unknown path ${name} (direct, meshtls, meshtlsh2, httpproxy, opaque, opaquex25519, naive, naiveresume, naivestreams, nodehttp, nginx, nginxhttp, transparent)`);
  }
  const measured = PATHS.filter((name) => name !== "transparent" || noTransparent === undefined);
  /** One round: every path once, in BENCH_PATHS order rotated by the round (order effects cancel over rounds). */
  const rounds = [];
  for (let round = 0; round < ROUNDS; round++) {
    const order = measured.map((_, i) => measured[(i + round) % measured.length]);
    const results = {};
    for (const name of order) results[name] = await measurePath(name, round === 0);
    rounds.push(results);
    if (ROUNDS > 1) {
      console.error(`# round ${round + 1} of ${ROUNDS} (${order.join(", ")}):`);
      opaqueRatios(results, console.error);
    }
  }
  const results = Object.fromEntries(measured.map((name) => [name, medianOf(rounds.map((r) => r[name]))]));
  if (ROUNDS > 1) console.log(`\nmedians of ${ROUNDS} rounds, paths interleaved (every round's ratios above, on stderr)`);
  async function measurePath(name, withRss) {
    const target = paths[name];
    const base = `http://${target.host}:${target.port}`;
    const via = viaProxy(target);
    console.error(`# ${name}: warm-up, wrk, bulk, new connections, RSS`);
    await run(...inNamespace(target.ns, "wrk", ["-t2", "-c16", "-d2s", ...via.wrkArgs, `${base}/1k`]), { env: via.env });
    // New connections warm their own code paths (accept, handshake, detection, connect): without it the first
    // path measured after start paid for its JIT in the new-connection phase.
    if (PHASES.includes("fresh")) await run(...inNamespace(target.ns, "wrk", ["-t2", "-c16", "-d2s", "-H", "Connection: close", ...via.wrkArgs, `${base}/1k`]), { env: via.env });
    const pids = await target.pids();
    perfPath = name;
    // CPU used by the proxy processes per unit of work: steadier than wall-clock rates on a shared machine.
    const skipped = { rps: NaN, p50: NaN, p99: NaN, errors: "" };
    // Full mark-compacts in the path's Node processes during each phase (gc-count.mjs): a per-chunk allocation shows here first.
    const fullGcs = { keepalive: NaN, bulk: NaN, fresh: NaN };
    const phase = (name, fn, none) =>
      PHASES.includes(name) ? withGc(target.procs, () => withCpu(pids, () => withPerf(name, pids, fn))).then((r) => ((fullGcs[name] = r.gcs), r)) : Promise.resolve({ result: none, cpu: NaN });
    const { result: keepAlive, cpu: keepAliveCpuS } = await phase("keepalive", () => wrk(`${base}/1k`, [], target.ns, via), skipped);
    const { result: bulkMBps, cpu: bulkCpuS } = await phase("bulk", () => bulk(via.curlArgs("/big"), target.ns), NaN);
    const meshBefore = name === "meshtls" || name === "meshtlsh2" ? await meshOpened() : NaN;
    const { result: fresh, cpu: freshCpuS, each: freshEach } = await phase("fresh", () => wrk(`${base}/1k`, ["-H", "Connection: close"], target.ns, via), skipped);
    // Which side a new connection costs: each process's CPU per connection (A, B for the Node pairs).
    if (freshEach !== undefined && fresh.rps > 0) console.error(`# ${name} CPU per new conn by process: ${freshEach.map((s) => `${((s * 1e6) / (fresh.rps * DURATION_S)).toFixed(0)} µs`).join(", ")}`);
    const meshConnections = name === "meshtls" || name === "meshtlsh2" ? (await meshOpened()) - meshBefore : NaN;
    const cpu = {
      usPerRequest: (keepAliveCpuS * 1e6) / (keepAlive.rps * DURATION_S),
      msPerBulkMiB: (bulkCpuS * 1000) / (3 * BULK_MIB),
      usPerNewConn: (freshCpuS * 1e6) / (fresh.rps * DURATION_S),
    };
    if (!withRss) return { keepAlive, bulkMBps, connsPerS: fresh.rps, freshP99: fresh.p99, meshConnections, freshRequests: fresh.rps * DURATION_S, connErrors: fresh.errors, cpu, fullGcs, pids };
    await sleep(1000);
    const idle = pids.map(rssKiB);
    const heapIdle = await heapFigures(target.admins);
    // The transparent path's client is in a namespace this process is not in: no open-connection figure.
    const sockets = target.ns === undefined ? await openMany(target.host, target.port, OPEN_CONNECTIONS, via.requestTarget("/1k")) : [];
    await sleep(1000);
    const loaded = pids.map(rssKiB);
    const heapLoaded = await heapFigures(target.admins);
    if (heapIdle !== undefined && heapLoaded !== undefined) {
      // Where an open connection's memory is: the JS heap (sockets, streams, closures) or outside it (OpenSSL, node's buffers).
      const per = (k, i) => ((heapLoaded[i][k] - heapIdle[i][k]) / 1024 / OPEN_CONNECTIONS).toFixed(1);
      console.error(`# ${name} per open connection: ${heapIdle.map((_, i) => `${"AB"[i]} heap used ${per("heapUsed", i)} KiB, external ${per("external", i)} KiB`).join("; ")}`);
    }
    for (const s of sockets) s.destroy();
    return { keepAlive, bulkMBps, connsPerS: fresh.rps, freshP99: fresh.p99, meshConnections, freshRequests: fresh.rps * DURATION_S, connErrors: fresh.errors, cpu, fullGcs, pids, idle, loaded };
  }

  // Per proxy: meshtls = [A, B]; nginx = [A master, A worker, B master, B worker].
  const proxyRss = (r, name) => {
    if (name === "opaque" || name === "opaquex25519") return proxyRss(r, "meshtls");
    if (["meshtls", "meshtlsh2", "httpproxy", "naive", "naiveresume", "naivestreams", "nodehttp"].includes(name)) return [{ proxy: "A", idle: r.idle[0], loaded: r.loaded[0] }, { proxy: "B", idle: r.idle[1], loaded: r.loaded[1] }];
    if (name === "nginx" || name === "nginxhttp") {
      const half = r.pids.length / 2;
      const sum = (xs, from, to) => xs.slice(from, to).reduce((a, b) => a + b, 0);
      return [
        { proxy: "A", idle: sum(r.idle, 0, half), loaded: sum(r.loaded, 0, half) },
        { proxy: "B", idle: sum(r.idle, half, r.pids.length), loaded: sum(r.loaded, half, r.pids.length) },
      ];
    }
    return [];
  };
  const fmt = (v, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : "n/a");
  console.log(`\nmeshtls bench: ${os.cpus().length} CPUs, node ${process.versions.node}, ${DURATION_S}s wrk runs (2 threads, 16 connections), 1 KiB responses, ${BULK_MIB} MiB bulk, ${OPEN_CONNECTIONS} open connections\n`);
  console.log("path        | req/s    | p50 ms | p99 ms | bulk MB/s | new conns/s | RSS idle → loaded per proxy (KiB), per open conn");
  for (const [name, r] of Object.entries(results)) {
    const rss = proxyRss(r, name)
      .map((p) => `${p.proxy} ${p.idle} → ${p.loaded} (${fmt(((p.loaded - p.idle) * 1024) / OPEN_CONNECTIONS / 1024, 1)} KiB/conn)`)
      .join("; ");
    console.log(`${name.padEnd(11)} | ${fmt(r.keepAlive.rps).padStart(8)} | ${fmt(r.keepAlive.p50, 2).padStart(6)} | ${fmt(r.keepAlive.p99, 2).padStart(6)} | ${fmt(r.bulkMBps).padStart(9)} | ${fmt(r.connsPerS).padStart(11)} | ${rss || "-"}${r.keepAlive.errors || r.connErrors ? `  [${r.keepAlive.errors} ${r.connErrors}]` : ""}`);
  }
  const overBare = (kib) => fmt((kib - startRss.bare) / 1024, 1);
  console.log(`\nmeshtls proxies' RSS after start, before traffic: A ${startRss.A} KiB, B ${startRss.B} KiB; bare node (listening, nothing loaded) ${startRss.bare} KiB`);
  console.log(`proxy idle RSS − bare node RSS: A ${overBare(startRss.A)} MiB, B ${overBare(startRss.B)} MiB   [≤ 20]`);
  console.log("\nproxy CPU (all proxy processes, user + system) per unit of work:");
  console.log("path        | µs/request | ms/bulk MiB | µs/new conn | full GCs keep-alive / bulk / new conns");
  for (const [name, r] of Object.entries(results)) {
    if (name === "direct") continue;
    const gcs = Object.values(r.fullGcs).every((x) => Number.isNaN(x)) ? "-" : `${fmt(r.fullGcs.keepalive)} / ${fmt(r.fullGcs.bulk)} / ${fmt(r.fullGcs.fresh)}`;
    console.log(`${name.padEnd(11)} | ${fmt(r.cpu.usPerRequest, 1).padStart(10)} | ${fmt(r.cpu.msPerBulkMiB, 2).padStart(11)} | ${fmt(r.cpu.usPerNewConn, 0).padStart(11)} | ${gcs}`);
  }
  opaqueRatios(results);
  const m = results.meshtls;
  const n = results.nginx;
  const h = results.nginxhttp;
  if (m !== undefined && h !== undefined) {
    // The HTTP issue's aims: against the nginx HTTP pair, and the new-connection workload against the stream pair.
    console.log("\nmeshtls ÷ nginx HTTP pair (upstream keep-alive)     meshtls   (aim)");
    console.log(`  keep-alive req/s                                   ${fmt(m.keepAlive.rps / h.keepAlive.rps, 2).padStart(7)}   [≥ 0.8]`);
    console.log(`  new-connection req/s                               ${fmt(m.connsPerS / h.connsPerS, 2).padStart(7)}   [≥ 1.0]`);
    console.log(`  p99 latency, keep-alive                            ${fmt(m.keepAlive.p99 / h.keepAlive.p99, 2).padStart(7)}   [≤ 2]`);
    console.log(`  p99 latency, new connections                       ${fmt(m.freshP99 / h.freshP99, 2).padStart(7)}   [≤ 2]`);
    console.log(`  CPU/request, keep-alive                            ${fmt(m.cpu.usPerRequest / h.cpu.usPerRequest, 2).padStart(7)}`);
    console.log(`  CPU/request, new connections                       ${fmt(m.cpu.usPerNewConn / h.cpu.usPerNewConn, 2).padStart(7)}`);
    if (n !== undefined) console.log(`meshtls ÷ nginx stream pair, new-connection req/s    ${fmt(m.connsPerS / n.connsPerS, 2).padStart(7)}   [≥ 3]`);
    console.log(`mesh connections A opened for ${fmt(m.freshRequests)} new-connection requests: ${fmt(m.meshConnections)}`);
  }
  const t = results.transparent;
  const hp = results.httpproxy;
  if (t !== undefined && (hp !== undefined || m !== undefined)) {
    // Transparent mode beside the same proxy software entered as the HTTP_PROXY and as a route (a local port per service).
    const ratio = (base, f) => (base === undefined ? "    n/a" : fmt(f(t) / f(base), 2).padStart(7));
    const row = (label, f) => console.log(`  ${label.padEnd(30)} ${ratio(hp, f)}   ${ratio(m, f)}`);
    console.log("\ntransparent ÷                    httpproxy   meshtls (route)");
    row("keep-alive req/s", (r) => r.keepAlive.rps);
    row("bulk MB/s", (r) => r.bulkMBps);
    row("new-connection req/s", (r) => r.connsPerS);
    row("p99 latency, keep-alive", (r) => r.keepAlive.p99);
    row("CPU/request, keep-alive", (r) => r.cpu.usPerRequest);
    row("CPU/request, new connections", (r) => r.cpu.usPerNewConn);
  }
  // The HTTP aims against the real mesh path and the bare Node floor: how far meshtls is from what Node itself costs, and the floor from nginx.
  const [h2, nodeFloor] = [results.meshtlsh2, results.nodehttp];
  if (h !== undefined && (h2 !== undefined || nodeFloor !== undefined)) {
    const col = (r, f) => (r === undefined ? "    n/a" : fmt(f(r), 2).padStart(7));
    const line = (label, f, base) => console.log(`  ${label.padEnd(26)} ${col(m, (r) => f(r) / f(h))}  ${col(h2, (r) => f(r) / f(h))}   ${col(nodeFloor, (r) => f(r) / f(h))}   ${col(h2 === undefined ? undefined : nodeFloor, (r) => f(h2) / f(r))}   ${base}`);
    console.log("\n÷ nginx HTTP pair             meshtls  meshtlsh2  node floor   meshtlsh2 ÷ floor   (aim ÷ nginx HTTP)");
    line("keep-alive req/s", (r) => r.keepAlive.rps, "[≥ 0.8]");
    line("new-connection req/s", (r) => r.connsPerS, "[≥ 1.0]");
    line("p99 latency, keep-alive", (r) => r.keepAlive.p99, "[≤ 2]");
    line("CPU/request, keep-alive", (r) => r.cpu.usPerRequest, "");
    line("CPU/request, new conns", (r) => r.cpu.usPerNewConn, "");
    if (h2 !== undefined) console.log(`  mesh connections A opened for ${fmt(h2.freshRequests)} new-connection requests on meshtlsh2: ${fmt(h2.meshConnections)}`);
    if (n !== undefined && m !== undefined) console.log(`  new-connection req/s ÷ nginx stream pair: meshtls ${fmt(m.connsPerS / n.connsPerS, 2)}, meshtlsh2 ${h2 === undefined ? "n/a" : fmt(h2.connsPerS / n.connsPerS, 2)}, node floor ${nodeFloor === undefined ? "n/a" : fmt(nodeFloor.connsPerS / n.connsPerS, 2)}   [≥ 3]`);
  }
  if (m === undefined || n === undefined) return;
  const perConn = (r, name) => Math.max(...proxyRss(r, name).map((p) => (p.loaded - p.idle) / OPEN_CONNECTIONS));
  // The naive Node pair beside meshtls: what node:tls alone reaches on this machine in the same run.
  const v = results.naive;
  const both = (f, d = 2) => `${fmt(f(m), d).padStart(7)}   ${v === undefined ? "    n/a" : fmt(f(v), d).padStart(7)}`;
  console.log("\n÷ nginx            meshtls   naive node pair   (meshtls target)");
  console.log(`  requests/s      ${both((r) => r.keepAlive.rps / n.keepAlive.rps)}           [≥ 0.8]`);
  console.log(`  bulk MB/s       ${both((r) => r.bulkMBps / n.bulkMBps)}           [≥ 0.9]`);
  console.log(`  new conns/s     ${both((r) => r.connsPerS / n.connsPerS)}           [≥ 0.8]`);
  console.log(`  p99 latency     ${both((r) => r.keepAlive.p99 / n.keepAlive.p99)}           [≤ 2]`);
  console.log(`  CPU/request     ${both((r) => r.cpu.usPerRequest / n.cpu.usPerRequest)}`);
  console.log(`  CPU/bulk MiB    ${both((r) => r.cpu.msPerBulkMiB / n.cpu.msPerBulkMiB)}`);
  console.log(`  CPU/new conn    ${both((r) => r.cpu.usPerNewConn / n.cpu.usPerNewConn)}`);
  console.log(`  KiB per open connection (worst proxy): meshtls ${fmt(perConn(m, "meshtls"), 1)}, naive ${v === undefined ? "n/a" : fmt(perConn(v, "naive"), 1)}, nginx ${fmt(perConn(n, "nginx"), 1)}  [meshtls < 40]`);
  // What node:tls alone holds per idle mTLS connection (bench/tls-floor.mjs, after a full GC): the floor under any Node proxy's figure.
  const floorScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "tls-floor.mjs");
  const { stdout: floorOut } = await run(node, ["--expose-gc", floorScript, `${dir}/b.crt`, `${dir}/b.key`, `${dir}/a.crt`, `${dir}/a.key`, ca, String(OPEN_CONNECTIONS)], { timeout: 120_000 });
  const floor = JSON.parse(floorOut.trim().split("\n").pop());
  console.log(`  node:tls alone, per idle mTLS connection after a full GC: server ${fmt(floor.serverKiBPerConn, 1)} KiB, client ${fmt(floor.clientKiBPerConn, 1)} KiB`);
  writeFileSync(path.join(dir, "results.json"), JSON.stringify(results, null, 2));
  console.log(`\nraw results: ${path.join(dir, "results.json")}`);
}

main()
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(async () => {
    stopping = true;
    // SIGTERM: nginx masters take their workers down with them.
    for (const child of children) child.kill("SIGTERM");
    await Promise.race([Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once("exit", r))))), sleep(10_000)]);
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (transparentUnavailable() === undefined) removeTransparentPair();
    process.exit(process.exitCode ?? 0);
  });

/** Each numeric figure's median over the rounds' results of one path (nested objects alike); other values from the first round. */
function medianOf(list) {
  const first = list[0];
  if (typeof first === "number") {
    const xs = list.filter(Number.isFinite).sort((a, b) => a - b);
    if (xs.length === 0) return NaN;
    const mid = Math.floor(xs.length / 2);
    return xs.length % 2 === 1 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
  }
  if (first === null || typeof first !== "object" || Array.isArray(first)) return first;
  return Object.fromEntries(Object.keys(first).map((key) => [key, medianOf(list.map((r) => r[key]))]));
}
