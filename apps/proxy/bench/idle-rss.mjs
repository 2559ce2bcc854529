#!/usr/bin/env node
/* global process, console, fetch */
/* eslint-disable no-console -- a benchmark prints its figures */
// The quick check of issue #11 (a sidecar's idle RSS within 20 MiB of bare Node 24): starts
// a control plane (identity, destination from apps/*/dist) and IDLE_N (3) meshtls proxies
// with the flags bench/run.mjs gives its proxy A, one after another, and a bare `node -e`
// listener; once the last is ready it waits IDLE_SETTLE_MS (500, as run.mjs) and prints each
// RSS and the median proxy's excess over bare node, then again at each of IDLE_LATER_S
// (seconds after ready, e.g. "10,60"; none by default). IDLE_PROXY_BINS=a.js,b.js compares
// builds in one run (each started IDLE_N times, interleaved); IDLE_NODE_ARGS adds node flags to the
// proxies (experiments, e.g. --trace-gc); IDLE_LOG_DIR=DIR keeps each process's output there; IDLE_MALLOC_ARENA_MAX
// (default 2, the proxy image's) is every process's MALLOC_ARENA_MAX. Needs built apps (pnpm build).
// Usage: node apps/proxy/bench/idle-rss.mjs
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort, podEnv } from "./processes.mjs";
import { sleep, waitFor } from "./wait.mjs";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const bin = (app) => path.join(repoRoot, `apps/${app}/dist/main.js`);
const proxyBins = (process.env.IDLE_PROXY_BINS ?? bin("proxy")).split(",").map((p) => path.resolve(p));
const N = Number(process.env.IDLE_N ?? 3);
const SETTLE_MS = Number(process.env.IDLE_SETTLE_MS ?? 500);
const LATER_S = (process.env.IDLE_LATER_S ?? "").split(",").filter(Boolean).map(Number);
/** As run.mjs: its proxies are started with bench/gc-count.mjs preloaded. */
const nodeArgs = ["--import", path.join(here, "gc-count.mjs"), ...(process.env.IDLE_NODE_ARGS ?? "").split(" ").filter(Boolean)];
const node = process.execPath;
const children = [];
// A pod's environment (bench/processes.mjs); IDLE_MALLOC_ARENA_MAX overrides the image's MALLOC_ARENA_MAX=2, "" unsets it.
const childEnv = podEnv(process.env.IDLE_MALLOC_ARENA_MAX ?? "2");

function start(name, command, args) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: childEnv });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  if (process.env.IDLE_LOG_DIR) child.on("exit", () => writeFileSync(path.join(process.env.IDLE_LOG_DIR, `${name}-${child.pid}.log`), out));
  child.on("exit", (code, signal) => {
    if (!stopping) console.error(`${name} exited early (${code ?? signal}):\n${out.slice(-2000)}`);
  });
  children.push(child);
  return { child, output: () => out };
}
let stopping = false;

function rssKiB(pid) {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? NaN);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const mib = (kib) => (kib / 1024).toFixed(1);

async function listeningLine(p) {
  await waitFor("listening", () => p.output().includes('"msg":"listening"'));
  return JSON.parse(p.output().split("\n").find((l) => l.includes('"msg":"listening"')));
}

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "meshtls-idle-rss-"));
  await run(node, [bin("cli"), "certs", "create", "--out", dir]);
  await run(node, [bin("cli"), "token", "keygen", "--out", dir]);
  const { stdout: token } = await run(node, [bin("cli"), "token", "mint", "--key", path.join(dir, "token-signer.key"), "--namespace", "default", "--service-account", "a"]);
  writeFileSync(path.join(dir, "a.token"), token.trim());
  const registry = path.join(dir, "registry.yaml");
  writeFileSync(registry, "services:\n  - name: web\n    ports: [{ port: 80, targetPort: 8080 }]\n    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: 4143 }]\n");

  const idLine = await listeningLine(start("identity", node, [bin("identity"), "--trust-anchors", path.join(dir, "ca.crt"), "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"), "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]));
  const destLine = await listeningLine(start("destination", node, [bin("destination"), "--registry", registry, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"]));

  // Proxy A's flags in run.mjs (a workload, three routes, the destination in plaintext).
  const proxy = async (proxyBin) => {
    const ip = "127.0.1.1";
    const admin = await freePort("127.0.0.1");
    const route = async (target) => `${ip}:${await freePort(ip)}=${target}`;
    const p = start("proxy", node, [
      ...nodeArgs,
      proxyBin, "--identity", "a.default.serviceaccount.identity.meshtls.cluster.local", "--token-file", path.join(dir, "a.token"), "--trust-anchors", path.join(dir, "ca.crt"),
      "--identity-addr", idLine.grpc, "--identity-name", idLine.serverName, "--destination-addr", destLine.grpcAddress, "--destination-insecure-plaintext",
      "--context-token", '{"ns":"default"}', "--inbound", `${ip}:${await freePort(ip)}`, "--outbound", `${ip}:${await freePort(ip)}`, "--admin", `127.0.0.1:${admin}`,
      "--outbound-bind", ip, "--log-level", "warn", "--workload", `${ip}:1`,
      "--route", await route("web.default.svc.cluster.local:80"), "--route", await route("web-h2.default.svc.cluster.local:80"), "--route", `${await route("web-opaque.default.svc.cluster.local:80")},opaque`,
    ]);
    await waitFor("proxy ready", async () => (await fetch(`http://127.0.0.1:${admin}/ready`)).status === 200);
    return { bin: proxyBin, pid: p.child.pid };
  };
  const proxies = [];
  for (let i = 0; i < N; i++) for (const b of proxyBins) proxies.push(await proxy(b));

  // Bare Node 24 listening on a port, nothing loaded: run.mjs's floor.
  const bare = spawn(node, ["-e", "require('node:net').createServer().listen(0, '127.0.0.1', () => console.log('listening'))"], { stdio: ["ignore", "pipe", "ignore"], env: childEnv });
  children.push(bare);
  await new Promise((resolve) => bare.stdout.once("data", resolve));
  const readyAt = Date.now();

  const report = (label) => {
    const bareKiB = rssKiB(bare.pid);
    console.log(`${label}: bare node ${bareKiB} KiB`);
    for (const b of proxyBins) {
      const rss = proxies.filter((p) => p.bin === b).map((p) => rssKiB(p.pid));
      const name = proxyBins.length > 1 ? ` ${path.relative(process.cwd(), b)}` : "";
      console.log(`  proxies${name}: ${rss.join(", ")} KiB; median − bare ${mib(median(rss) - bareKiB)} MiB (max ${mib(Math.max(...rss) - bareKiB)})   [≤ 20]`);
    }
  };
  await sleep(SETTLE_MS);
  report(`after ready + ${SETTLE_MS} ms`);
  for (const s of LATER_S) {
    await sleep(readyAt + s * 1000 - Date.now());
    report(`after ready + ${s} s`);
  }
  stopping = true;
  for (const c of children) c.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}

// Interrupted: its children go with it.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    stopping = true;
    for (const c of children) c.kill("SIGKILL");
    process.exit(1);
  });
}

main().catch((error) => {
  console.error(error);
  stopping = true;
  for (const c of children) c.kill("SIGKILL");
  process.exit(1);
});
