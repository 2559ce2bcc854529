#!/usr/bin/env node
// Benchmark: meshtls-destination --source kubernetes against the loopback
// fake API server holding S services × E endpoints (a Service, an
// EndpointSlice and E Running meshed Pods each), with N open Get streams on
// one service. Each change flips one endpoint's readiness in that service's
// EndpointSlice; the figure is the time from the change (the fake API
// server's apply) to the last stream's update, p50/p99 over the changes, and
// the destination's RSS. The same run then does the same with the file
// registry (the same services in a registry file, each change a rewrite of
// the file: its watcher debounces 25 ms) and prints both side by side.
// With --profiles P, the Kubernetes run is repeated with P GetProfile
// streams open besides the Get streams, each on its own target (half on
// other services' names, half on their pods' IPs), which no change concerns:
// what they add to each change is the cost of recomputing profiles.
//
//   node bench/slices.mjs [--services 5000] [--endpoints 10] [--streams 1000] [--changes 20] [--per-connection 500] [--profiles 0]
//
// Needs the built packages and app (pnpm turbo run build --filter meshtls-destination...).
// Loopback only; the whole run aborts after 15 minutes.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { fakeApiKubeconfig, startFakeApiServer } from "../dist/testing.js";

const { values } = parseArgs({
  options: {
    services: { type: "string", default: "5000" },
    endpoints: { type: "string", default: "10" },
    streams: { type: "string", default: "1000" },
    changes: { type: "string", default: "20" },
    "per-connection": { type: "string", default: "500" },
    profiles: { type: "string", default: "0" },
    only: { type: "string" },
  },
});
const S = Number(values.services);
const E = Number(values.endpoints);
const N = Number(values.streams);
const changes = Number(values.changes);
const perConnection = Number(values["per-connection"]);
const P = Number(values.profiles);
if (!(S >= 1 && S <= 65_000 && E >= 2 && E <= 250 && N >= 1 && changes >= 1)) throw new Error("--services 1..65000, --endpoints 2..250, --streams and --changes at least 1");
if (!(P >= 0 && P <= 2 * (S - 1))) throw new Error("--profiles 0..2 × (services - 1)");

const here = path.dirname(fileURLToPath(import.meta.url));
const mainJs = path.resolve(here, "../../../apps/destination/dist/main.js");
const deadline = setTimeout(() => {
  console.error("bench: 15 minute limit reached, aborting");
  process.exit(1);
}, 15 * 60_000);
deadline.unref();
process.on("uncaughtException", (error) => {
  console.error(error);
  process.exit(1);
});

const NS = "bench";
/** Destinations still running: killed when the bench exits, however it exits. */
const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const percentile = (list, p) => {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
};
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) / 1024;
const ipOf = (s, e) => `10.${(s >> 8) & 255}.${s & 255}.${e + 1}`;
const svcName = (s) => `svc-${s}`;

/** protobuf GetDestination { scheme = 1; path = 2; context_token = 3 }, framed for gRPC. */
function getFrame(authority, scheme = "k8s") {
  const field = (no, text) => {
    const bytes = Buffer.from(text);
    return Buffer.concat([Buffer.from([(no << 3) | 2, bytes.length]), bytes]);
  };
  const body = Buffer.concat([field(1, scheme), field(2, authority), field(3, JSON.stringify({ ns: NS }))]);
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  return frame;
}

/**
 * `count` streams of the gRPC `method` on bare node:http2 sessions (at most --per-connection each), stream i sending
 * `frameOf(i)`; each counts its whole gRPC messages (a 5-byte header, then its length: decoding is left out of the
 * figure) and notes when the last one was complete. Resolves when every stream has its first message (60 s at most).
 */
async function openGrpcStreams(port, method, count, frameOf, what) {
  const sessions = Array.from({ length: Math.ceil(count / perConnection) }, () => {
    const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 1 << 20 } });
    session.on("error", () => undefined);
    return session;
  });
  const counts = new Uint32Array(count);
  const lastSeen = new Float64Array(count);
  const streams = [];
  for (let i = 0; i < count; i++) {
    const stream = sessions[i % sessions.length].request({ ":method": "POST", ":path": method, "content-type": "application/grpc", te: "trailers" });
    let pending = Buffer.alloc(0);
    stream.on("data", (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        pending = pending.subarray(5 + pending.readUInt32BE(1));
        counts[i]++;
        lastSeen[i] = performance.now();
      }
    });
    stream.on("error", () => undefined);
    stream.end(frameOf(i));
    streams.push(stream);
    if (i % 200 === 199) await sleep(1);
  }
  const until = performance.now() + 60_000;
  while (counts.some((c) => c === 0)) {
    if (performance.now() > until) throw new Error(`${counts.filter((c) => c === 0).length} of ${count} ${what} within 60 s`);
    await sleep(20);
  }
  return {
    counts,
    lastSeen,
    close() {
      for (const s of streams) s.close(http2.constants.NGHTTP2_CANCEL);
      for (const s of sessions) s.close();
    },
  };
}

/** N Get streams on `authority`. */
function openStreams(port, authority) {
  const frame = getFrame(authority);
  return openGrpcStreams(port, "/io.linkerd.proxy.destination.Destination/Get", N, () => frame, "streams got no first update");
}

/** P GetProfile streams, each on its own target: services 1.. by name, then their first pods by IP. Resolves when each has its profile. */
async function openProfiles(port) {
  const authorityOf = (i) => {
    const s = 1 + (i >> 1);
    return i % 2 === 0 ? `${svcName(s)}.${NS}.svc.cluster.local:80` : `${ipOf(s, 0)}:8080`;
  };
  const streams = await openGrpcStreams(port, "/io.linkerd.proxy.destination.Destination/GetProfile", P, (i) => getFrame(authorityOf(i), ""), "GetProfile streams got no profile");
  return {
    /** Profiles received after the first ones (none expected: no change concerns them). */
    extra: () => streams.counts.reduce((a, c) => a + c - 1, 0),
    close: streams.close,
  };
}

async function startDestination(args) {
  const child = spawn(process.execPath, [mainJs, ...args, "--listen", "127.0.0.1:0", "--policy-addr", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { PATH: process.env.PATH ?? "", HOME: tmpdir() },
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  let buffer = "";
  const lines = [];
  child.stdout.setEncoding("utf8").on("data", (chunk) => {
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.startsWith("{")) lines.push(JSON.parse(line));
    }
  });
  const waitLog = async (msg, ms) => {
    const until = performance.now() + ms;
    for (;;) {
      const line = lines.find((l) => l.msg === msg);
      if (line) return line;
      if (child.exitCode !== null) throw new Error(`meshtls-destination exited with ${child.exitCode}`);
      if (performance.now() > until) throw new Error(`no "${msg}" from meshtls-destination within ${ms} ms; its log: ${lines.slice(-5).map((l) => JSON.stringify(l)).join("\n")}`);
      await sleep(20);
    }
  };
  const listening = await waitLog("listening", Number(process.env.K2_WAIT ?? 120_000));
  const port = (addr) => Number(String(addr).split(":").pop());
  return { child, lines, waitLog, grpcPort: port(listening.grpcAddress), adminPort: port(listening.adminAddress) };
}

async function fanoutMs(adminPort) {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  return Number(/^destination_registry_change_fanout_seconds_sum (\S+)$/m.exec(text)?.[1]) * 1000;
}

/** Opens the streams (and `profiles` GetProfile streams), makes `changes` changes with `change(c)` and measures each one's latency to the last stream. */
async function measure(name, server, startedAt, change, profiles = 0) {
  const readyMs = performance.now() - startedAt;
  const profileStreams = profiles > 0 ? await openProfiles(server.grpcPort) : undefined;
  const streams = await openStreams(server.grpcPort, `${svcName(0)}.${NS}.svc.cluster.local:80`);
  await sleep(1000);
  const rss = rssMiB(server.child.pid);
  const lastStream = [];
  const serverSide = [];
  for (let c = 0; c < changes; c++) {
    const expected = Array.from(streams.counts);
    const before = await fanoutMs(server.adminPort);
    const t0 = performance.now();
    change(c);
    const until = t0 + 60_000;
    while (streams.counts.some((v, i) => v === expected[i])) {
      if (performance.now() > until) throw new Error(`${name}: ${streams.counts.filter((v, i) => v === expected[i]).length} of ${N} streams missed change ${c}`);
      await sleep(1);
    }
    let max = 0;
    for (let i = 0; i < N; i++) max = Math.max(max, streams.lastSeen[i] - t0);
    lastStream.push(max);
    await sleep(200);
    serverSide.push((await fanoutMs(server.adminPort)) - before);
  }
  const rssAfter = rssMiB(server.child.pid);
  const extraProfiles = profileStreams?.extra() ?? 0;
  profileStreams?.close();
  if (extraProfiles > 0) console.log(`${name}: ${extraProfiles} profiles were re-sent though no change concerned them`);
  streams.close();
  server.child.kill("SIGTERM");
  await new Promise((r) => (server.child.exitCode !== null ? r() : server.child.once("exit", r)));
  return { name, readyMs, rss, rssAfter, p50: percentile(lastStream, 50), p99: percentile(lastStream, 99), max: Math.max(...lastStream), serverP50: percentile(serverSide, 50), serverP99: percentile(serverSide, 99) };
}

const podOf = (s, e) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name: `${svcName(s)}-${e}`, namespace: NS, labels: { app: svcName(s), "linkerd.io/control-plane-ns": "meshtls" } },
  spec: { serviceAccountName: svcName(s), containers: [{ name: "app", ports: [{ name: "http", containerPort: 8080 }] }] },
  status: { phase: "Running", podIP: ipOf(s, e), podIPs: [{ ip: ipOf(s, e) }] },
});
const sliceOf = (s, notReady = -1) => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: { name: `${svcName(s)}-x`, namespace: NS, labels: { "kubernetes.io/service-name": svcName(s) } },
  addressType: "IPv4",
  ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  endpoints: Array.from({ length: E }, (_, e) => ({ addresses: [ipOf(s, e)], conditions: { ready: e !== notReady }, targetRef: { kind: "Pod", namespace: NS, name: `${svcName(s)}-${e}` } })),
});

async function kubernetesRun(dir, profiles = 0) {
  const api = await startFakeApiServer({ bearerToken: "bench-token", historyLimit: 100_000 });
  try {
    api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
    for (let s = 0; s < S; s++) {
      api.apply({ apiVersion: "v1", kind: "Service", metadata: { name: svcName(s), namespace: NS }, spec: { clusterIP: `10.250.${(s >> 8) & 255}.${s & 255}`, ports: [{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }] } });
      for (let e = 0; e < E; e++) api.apply(podOf(s, e));
      api.apply(sliceOf(s));
    }
    const kubeconfig = path.join(dir, "kubeconfig");
    writeFileSync(
      kubeconfig,
      fakeApiKubeconfig(api.url, "bench-token"),
    );
    const startedAt = performance.now();
    const server = await startDestination(["--source", "kubernetes", "--kubeconfig", kubeconfig]);
    await server.waitLog("Kubernetes resources listed", 300_000);
    // Change c: endpoint (c % E) of service 0 not ready, then ready again, alternately.
    const name = profiles > 0 ? `kube+${profiles}prof` : "kubernetes";
    return await measure(name, server, startedAt, (c) => api.apply(sliceOf(0, c % 2 === 0 ? c % E : -1)), profiles);
  } finally {
    await api.close();
  }
}

function registryText(without = -1) {
  const out = ["services:"];
  for (let s = 0; s < S; s++) {
    out.push(`  - name: ${svcName(s)}`, `    namespace: ${NS}`, "    ports: [{ port: 80, targetPort: 8080 }]", "    endpoints:");
    for (let e = 0; e < E; e++) if (!(s === 0 && e === without)) out.push(`      - { address: ${ipOf(s, e)}, serviceAccount: ${svcName(s)} }`);
  }
  return `${out.join("\n")}\n`;
}

async function fileRun(dir) {
  const file = path.join(dir, "registry.yaml");
  writeFileSync(file, registryText());
  const texts = Array.from({ length: E }, (_, e) => registryText(e));
  const full = registryText();
  const startedAt = performance.now();
  const server = await startDestination(["--registry", file]);
  return measure("file", server, startedAt, (c) => {
    writeFileSync(`${file}.tmp`, c % 2 === 0 ? texts[c % E] : full);
    renameSync(`${file}.tmp`, file);
  });
}

const dir = mkdtempSync(path.join(tmpdir(), "meshtls-kube-bench-"));
try {
  console.log(`meshtls-destination: ${S} services × ${E} endpoints, ${N} Get streams on one service, ${changes} changes${P > 0 ? `, ${P} GetProfile streams on other targets` : ""} (node ${process.version})`);
  const results = [];
  if (values.only !== "file") results.push(await kubernetesRun(dir));
  if (values.only !== "file" && P > 0) results.push(await kubernetesRun(dir, P));
  if (values.only !== "kubernetes") results.push(await fileRun(dir));
  const f = (v) => v.toFixed(1).padStart(8);
  console.log(`${"source".padEnd(16)}${"ready s".padStart(9)}${"p50 ms".padStart(9)}${"p99 ms".padStart(9)}${"max ms".padStart(9)}${"srv p50".padStart(9)}${"srv p99".padStart(9)}${"RSS MiB".padStart(9)}${"RSS end".padStart(9)}`);
  for (const r of results) console.log(`${r.name.padEnd(16)} ${f(r.readyMs / 1000)} ${f(r.p50)} ${f(r.p99)} ${f(r.max)} ${f(r.serverP50)} ${f(r.serverP99)} ${f(r.rss)} ${f(r.rssAfter)}`);
  console.log("p50/p99/max: change → last stream's update; srv: the destination's own compute + write (destination_registry_change_fanout_seconds); RSS with the streams open, and after the changes");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
