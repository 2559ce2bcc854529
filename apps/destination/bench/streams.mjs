#!/usr/bin/env node
// Benchmark: N concurrent Destination.Get streams on one meshtls-destination
// process. Prints, per N, the time from a registry file change to the last
// stream seeing it (p50/p99 over several changes; every stream's own latency
// too) and the server's memory per stream (RSS delta from /proc/<pid>/status,
// and V8 heap delta from its /metrics).
//
//   node bench/streams.mjs [--streams 1000,10000] [--changes 10] [--per-connection 500] [--client grpc-js|raw]
//
// --client grpc-js (default) reads the streams with @grpc/grpc-js clients, as a
// proxy would; --client raw reads them with bare node:http2 streams that only
// note when bytes arrive, which takes the client's decoding out of the figure.
//
// Needs the built app (pnpm --filter meshtls-destination build). Loopback only,
// bounded: the whole run aborts after 10 minutes.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { credentials } from "@grpc/grpc-js";
import http2 from "node:http2";
import { DestinationClient, GetDestination } from "@meshtls/api";

const { values } = parseArgs({
  options: {
    streams: { type: "string", default: "1000,10000" },
    changes: { type: "string", default: "10" },
    "per-connection": { type: "string", default: "500" },
    client: { type: "string", default: "grpc-js" },
  },
});
const sizes = values.streams.split(",").map(Number);
const changes = Number(values.changes);
const perConnection = Number(values["per-connection"]);
const clientKind = values.client;
if (clientKind !== "grpc-js" && clientKind !== "raw") throw new Error("--client is grpc-js or raw");

/** A minimal gRPC client over node:http2 that reports when each stream receives bytes. */
function rawClient(port) {
  const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 1 << 20 } });
  session.on("error", () => undefined);
  return {
    get(request) {
      const body = GetDestination.encode(request).finish();
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32BE(body.length, 1);
      Buffer.from(body).copy(frame, 5);
      const stream = session.request({ ":method": "POST", ":path": "/io.linkerd.proxy.destination.Destination/Get", "content-type": "application/grpc", te: "trailers" });
      stream.end(frame);
      stream.on("error", () => undefined);
      return {
        on(event, listener) {
          if (event === "data") stream.on("data", () => listener());
          return this;
        },
        once(event, listener) {
          if (event === "data") stream.once("data", () => listener());
          return this;
        },
        cancel: () => stream.close(http2.constants.NGHTTP2_CANCEL),
      };
    },
    close: () => session.close(),
  };
}
const appDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const mainJs = path.join(appDir, "dist", "main.js");
const deadline = setTimeout(() => {
  console.error("bench: 10 minute limit reached, aborting");
  process.exit(1);
}, 10 * 60_000);
deadline.unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
};
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
const registryText = (ips) =>
  `services:\n  - name: api\n    namespace: default\n    ports: [{ port: 80, targetPort: 8080 }]\n    endpoints:\n${ips
    .map((ip) => `      - { address: ${ip}, serviceAccount: api }\n`)
    .join("")}`;

async function startServer(file) {
  const child = spawn(process.execPath, [mainJs, "--registry", file, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let buffer = "";
  const listening = await new Promise((resolve, reject) => {
    child.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
    child.stdout.setEncoding("utf8").on("data", (chunk) => {
      buffer += chunk;
      const line = buffer.split("\n").find((l) => l.includes('"msg":"listening"'));
      if (line) resolve(JSON.parse(line));
    });
  });
  child.stdout.resume();
  const port = (addr) => Number(String(addr).split(":").pop());
  return { child, grpcPort: port(listening.grpcAddress), adminPort: port(listening.adminAddress) };
}

async function metric(adminPort, name) {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
}
const heapUsedBytes = (adminPort) => metric(adminPort, "nodejs_heap_size_used_bytes");
// Server-side time to compute a change and write it to every stream (its own histogram).
const fanoutSeconds = (adminPort) => metric(adminPort, "destination_registry_change_fanout_seconds_sum");

async function run(n) {
  const dir = mkdtempSync(path.join(tmpdir(), "meshtls-destination-bench-"));
  const file = path.join(dir, "registry.yaml");
  const base = ["127.0.1.1", "127.0.1.2", "127.0.1.3"];
  writeFileSync(file, registryText(base));
  const server = await startServer(file);
  const connections = Math.ceil(n / perConnection);
  // One HTTP/2 connection per client (a local subchannel pool each), as many proxies would have.
  const clients = Array.from({ length: connections }, () =>
    clientKind === "raw"
      ? rawClient(server.grpcPort)
      : new DestinationClient(`127.0.0.1:${server.grpcPort}`, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }),
  );
  // Warm up: connections established, one stream each and closed.
  await Promise.all(
    clients.map(
      (c) =>
        new Promise((resolve, reject) => {
          const call = c.get({ scheme: "k8s", path: "api.default.svc.cluster.local:80", contextToken: "" });
          call.once("data", () => {
            call.cancel();
            resolve();
          });
          call.on("error", (e) => (e.code === 1 ? undefined : reject(e)));
        }),
    ),
  );
  await sleep(500);
  const rssBefore = rssKiB(server.child.pid);
  const heapBefore = await heapUsedBytes(server.adminPort);

  const lastSeen = new Float64Array(n);
  const counts = new Uint32Array(n);
  const calls = [];
  const openStarted = performance.now();
  for (let i = 0; i < n; i++) {
    const call = clients[i % connections].get({ scheme: "k8s", path: "api.default.svc.cluster.local:80", contextToken: '{"ns":"default"}' });
    call.on("data", () => {
      counts[i]++;
      lastSeen[i] = performance.now();
    });
    call.on("error", (e) => {
      if (e.code !== 1) console.error(`stream ${i}: ${e.message}`);
    });
    calls.push(call);
    if (i % 1000 === 999) await sleep(1);
  }
  while (counts.some((c) => c === 0)) await sleep(20);
  const openMs = performance.now() - openStarted;
  await sleep(1000);
  const rssAfter = rssKiB(server.child.pid);
  const heapAfter = await heapUsedBytes(server.adminPort);

  const lastStream = [];
  const everyStream = [];
  const serverFanout = [];
  for (let c = 0; c < changes; c++) {
    const expected = Array.from(counts);
    const fanoutBefore = await fanoutSeconds(server.adminPort);
    const ips = c % 2 === 0 ? [...base, `127.0.1.${10 + c}`] : base;
    writeFileSync(`${file}.tmp`, registryText(ips));
    const t0 = performance.now();
    renameSync(`${file}.tmp`, file);
    const waitUntil = t0 + 30_000;
    while (counts.some((v, i) => v === expected[i]) && performance.now() < waitUntil) await sleep(2);
    const missing = counts.filter((v, i) => v === expected[i]).length;
    if (missing > 0) throw new Error(`${missing} of ${n} streams did not see change ${c} within 30 s`);
    let max = 0;
    for (let i = 0; i < n; i++) {
      const ms = lastSeen[i] - t0;
      everyStream.push(ms);
      if (ms > max) max = ms;
    }
    lastStream.push(max);
    await sleep(300);
    serverFanout.push(((await fanoutSeconds(server.adminPort)) - fanoutBefore) * 1000);
  }

  for (const call of calls) call.cancel();
  for (const c of clients) c.close();
  server.child.kill("SIGTERM");
  await new Promise((r) => server.child.once("exit", r));
  rmSync(dir, { recursive: true, force: true });
  const fmt = (v) => v.toFixed(1);
  console.log(
    [
      `streams=${n} (${connections} connections, ${clientKind} client)`,
      `opened in ${(openMs / 1000).toFixed(2)} s`,
      `change -> last stream: p50 ${fmt(percentile(lastStream, 50))} ms, p99 ${fmt(percentile(lastStream, 99))} ms (max ${fmt(Math.max(...lastStream))}, ${changes} changes)`,
      `change -> each stream: p50 ${fmt(percentile(everyStream, 50))} ms, p99 ${fmt(percentile(everyStream, 99))} ms`,
      `server fan-out (compute + write to all streams): p50 ${fmt(percentile(serverFanout, 50))} ms, p99 ${fmt(percentile(serverFanout, 99))} ms`,
      `server memory per stream: RSS ${fmt(((rssAfter - rssBefore) * 1024) / n / 1024)} KiB (RSS ${Math.round(rssBefore / 1024)} -> ${Math.round(rssAfter / 1024)} MiB), V8 heap ${fmt((heapAfter - heapBefore) / n / 1024)} KiB`,
    ].join("\n  "),
  );
}

console.log(`meshtls-destination Get streams benchmark (node ${process.version}, includes the file-watch debounce of 25 ms)`);
for (const n of sizes) await run(n);
process.exit(0);
