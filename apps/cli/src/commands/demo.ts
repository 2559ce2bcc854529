import http from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { connectionsOf, certExpiry, certificatesObtained, denials, requestsOf, type ConnectionView, type RequestView, type WorkloadView } from "../demo/state.ts";
import { LocalMesh, type MeshBinaries, type Workload } from "../demo/mesh.ts";
import { describeExpiry, formatDurationMs } from "../duration.ts";
import { CliError, describeError } from "../errors.ts";
import { scrapeMetrics } from "../mesh/admin-client.ts";
import { collectEdges } from "../mesh/edges.ts";
import { startViz, type Viz } from "../mesh/viz-server.ts";
import type { ManagedProcess } from "../mesh/supervisor.ts";
import type { Output } from "../output.ts";
import { formatEdges } from "./edges.ts";

/**
 * Default leaf lifetime of the demo: 7 s, so that every workload refreshes
 * within a 20 s demo. What sets the refresh time: the identity service issues
 * notAfter = now + lifetime + skew (2 s in the demo), floored to the second;
 * a proxy refreshes after 70 % of the remaining life, at least 10 s, unless
 * the certificate would expire first, in which case after 70 % of it. So
 * 7 s leaves (just under 9 s remaining) refresh every ~6 s, and each
 * workload shows one within `--duration 20s`; 10 s leaves would refresh
 * only after 10 s (the clamp), 30 s leaves after ~22 s.
 */
export const DEFAULT_DEMO_LIFETIME_MS = 7_000;
/** Without --duration, the api policy is switched this long after the mesh is up: 20 s. */
export const DEFAULT_POLICY_SWITCH_AFTER_MS = 20_000;
/** Address of the unmeshed client. */
const UNMESHED_IP = "127.0.1.3";

export interface RunDemoOptions {
  /** Redraw a live view with ANSI codes; otherwise print plain lines. */
  tty: boolean;
  /** Run this long once the mesh is up, then stop. Default: until `signal` aborts. */
  durationMs?: number;
  /** Lifetime of workload certificates. Default 7 s (DEFAULT_DEMO_LIFETIME_MS). */
  lifetimeMs?: number;
  /** Keep the mesh folder after the demo (its path is printed). Default false. */
  keep?: boolean;
  /** Aborting stops the demo (the CLI aborts on SIGINT and SIGTERM). */
  signal?: AbortSignal;
  /** Where the mesh folder is made. Default `os.tmpdir()`. */
  tmpDir?: string;
  binaries?: MeshBinaries;
  /** Refresh interval of the view. Default 1 s. */
  refreshMs?: number;
}

export interface DemoResult {
  ok: boolean;
  /** Why the demo did not work, when `ok` is false. */
  problems: string[];
  /** Set when `signal` ended it. */
  aborted: boolean;
}

interface Tally {
  ok: number;
  failed: number;
  last: string;
}

/**
 * `meshtls demo`: a whole mesh on loopback in a temporary folder (anchor,
 * issuer, token signer, registry; the identity and destination services;
 * workloads `web` and `api`, each an app with its own proxy and 127.0.1.x
 * address; `web` calls `api` through its proxy every 500 ms), a live view of
 * each workload's identity and certificate expiry and of each connection's TLS
 * state and peer identity from the proxies' own /metrics, certificate
 * refreshes as they happen, and an unmeshed client on 127.0.1.3 that is let
 * through until `api`'s policy is switched to `all-authenticated` and
 * refused after. The switch is an edit of the registry file, which the
 * destination service's policy controller streams to api's proxy (WatchPort):
 * no restart, so web's calls never fail. Every process runs in
 * its own process group; all are stopped and the folder removed at the end.
 */
export async function runDemo(options: RunDemoOptions, output: Output): Promise<DemoResult> {
  const startedAt = Date.now();
  const dir = await mkdtemp(path.join(options.tmpDir ?? os.tmpdir(), "meshtls-demo-"));
  const lifetimeMs = options.lifetimeMs ?? DEFAULT_DEMO_LIFETIME_MS;
  const refreshMs = options.refreshMs ?? 1_000;
  const events: string[] = [];
  const problems: string[] = [];
  const stamp = (): string => `[${((Date.now() - startedAt) / 1000).toFixed(1).padStart(5)}s]`;
  const event = (text: string): void => {
    const line = `${stamp()} ${text}`;
    events.push(line);
    if (events.length > 12) events.shift();
    if (!options.tty || !live) output.out(line);
  };
  let mesh: LocalMesh | undefined;
  let viz: Viz | undefined;
  let live = false;
  let fatal: string | undefined;
  let stopping = false;
  const watchExit = (proc: ManagedProcess): void => {
    event(`started ${proc.name} (pid ${proc.pid})`);
    void proc.exited.then((code) => {
      if (!proc.stopping && !stopping && fatal === undefined) {
        fatal = `${proc.name} exited unexpectedly (${code}); its last output:\n${proc.lastLines().slice(-8).map((l) => `    ${l}`).join("\n")}`;
      }
    });
  };

  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      timer = setTimeout(resolve, ms);
      wake = resolve;
    });
  const onAbort = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    wake?.();
  };
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const aborted = (): boolean => options.signal?.aborted === true;

  if (options.tty) output.out("\x1b[?25l"); // hide the cursor while redrawing
  event(options.durationMs === undefined ? "starting a mesh on loopback (Ctrl-C stops it and removes everything)" : `starting a mesh on loopback for ${formatDurationMs(options.durationMs)} once it is up`);
  try {
    event(`mesh folder: ${dir}`);
    mesh = await LocalMesh.create({ dir, leafLifetimeMs: lifetimeMs, onStart: watchExit, ...(options.binaries === undefined ? {} : { binaries: options.binaries }) });
    event("created a trust anchor and an issuer (ECDSA P-256), a token signer and a registry");
    const identity = await step(mesh.startIdentity(), options.signal);
    event(`identity service on ${identity.grpcAddress}, serving as ${identity.serverName}; leaves live ${formatDurationMs(lifetimeMs)}`);
    await step(mesh.startDestination(), options.signal);
    event(`destination service on ${mesh.destination!.grpcAddress}, registry ${path.basename(mesh.registryFile)}`);
    const api = await step(mesh.startWorkload({ name: "api", ip: "127.0.1.2" }), options.signal);
    event(`api: app on ${api.ip}:${api.appPort}, proxy inbound ${api.inbound}, identity ${api.identity}`);
    const web = await step(mesh.startWorkload({ name: "web", ip: "127.0.1.1", calls: "api" }), options.signal);
    event(`web: app on ${web.ip}:${web.appPort}, proxy outbound ${web.outbound}, identity ${web.identity}; web calls http://api.default.svc.cluster.local/ through it`);
    viz = await step(startViz({ listen: "127.0.0.1:0", admins: [api.admin, web.admin], registry: [], intervalMs: 1_000 }), options.signal);
    event(`viz: open ${viz.url} to watch the mesh as a graph, with live tap (meshtls viz, served while the demo runs)`);

    const readyAt = Date.now();
    const endAt = options.durationMs === undefined ? Infinity : readyAt + options.durationMs;
    const switchAt = options.durationMs === undefined ? readyAt + DEFAULT_POLICY_SWITCH_AFTER_MS : readyAt + Math.max(3_000, options.durationMs / 2);
    const webCalls: Tally = { ok: 0, failed: 0, last: "" };
    const unmeshed = { allowed: 0, refused: 0, last: "" };
    let switched = false;
    let refusedAfterSwitch = false;
    let mtlsSeen = false;
    let unmeshedAllowedSeen = false;
    const expirySeen = new Map<string, number>();
    const views = new Map<string, WorkloadView>();
    let connections: ConnectionView[] = [];
    let requests: RequestView[] = [];
    let denied = 0;
    let lastPlainSnapshot = 0;
    if (options.tty) {
      live = true;
      output.out("\x1b[2J");
    }

    const followCalls = (app: ManagedProcess): void => {
      app.onLine((line) => {
        if (line.msg !== "call") return;
        if (line.ok === true) {
          webCalls.ok++;
          webCalls.last = `HTTP ${String(line.status)} "${String(line.body)}"`;
        } else {
          webCalls.failed++;
          webCalls.last = `failed: ${String(line.error ?? `HTTP ${String(line.status)} ${String(line.proxyError ?? "")}`)}`;
        }
      });
    };
    followCalls(web.app);

    const scrape = async (w: Workload): Promise<void> => {
      let samples;
      try {
        samples = await scrapeMetrics({ address: w.admin, timeoutMs: 2_000 });
      } catch (error) {
        event(`${w.name}: cannot read its proxy's metrics: ${describeError(error)}`);
        return;
      }
      const expires = certExpiry(samples);
      const obtained = certificatesObtained(samples);
      views.set(w.name, { name: w.name, ip: w.ip, identity: w.identity, policy: w.policy, ...(expires === undefined ? {} : { certExpiresAt: expires }), certificates: obtained, ready: expires !== undefined });
      const previous = expirySeen.get(w.name);
      if (expires !== undefined && previous !== expires.getTime()) {
        expirySeen.set(w.name, expires.getTime());
        event(
          previous === undefined
            ? `${w.name}: certificate for ${w.identity}, ${describeExpiry(expires, new Date())} (at ${expires.toISOString()})`
            : `${w.name}: certificate refreshed (#${obtained}), new one ${describeExpiry(expires, new Date())} (at ${expires.toISOString()})`,
        );
      }
      connections = [...connections.filter((c) => c.workload !== w.name), ...connectionsOf(w.name, samples)];
      requests = [...requests.filter((r) => r.workload !== w.name), ...requestsOf(w.name, samples)];
      if (w.name === "api") denied = denials(samples);
    };

    const probeUnmeshed = async (w: Workload): Promise<void> => {
      const result = await plainGet(w.inbound, UNMESHED_IP);
      if (result.ok) {
        unmeshed.allowed++;
        unmeshed.last = `allowed: ${result.detail}`;
        if (!unmeshedAllowedSeen) {
          unmeshedAllowedSeen = true;
          event(`unmeshed client ${UNMESHED_IP} -> api ${w.inbound} (plaintext): allowed under ${w.policy}: ${result.detail}`);
        }
      } else {
        unmeshed.refused++;
        unmeshed.last = `refused: ${result.detail}`;
        if (switched && !refusedAfterSwitch) {
          refusedAfterSwitch = true;
          event(`unmeshed client ${UNMESHED_IP} -> api: REFUSED under ${w.policy} (${result.detail})`);
        }
      }
    };

    while (!aborted() && fatal === undefined && Date.now() < endAt) {
      // Probe, then scrape: the metrics then include this probe's denial, so
      // "N refused" and "api policy denials N" count the same connections.
      await probeUnmeshed(mesh.workloads.get("api")!);
      await Promise.all([...mesh.workloads.values()].map(scrape));
      const webSaw = connections.find((c) => c.workload === "web" && c.direction === "outbound" && c.tls === "tls=true" && c.peer === `server_id=${api.identity}`);
      const apiSaw = connections.find((c) => c.workload === "api" && c.direction === "inbound" && c.tls === "tls=true" && c.peer === `client_id=${web.identity}`);
      if (!mtlsSeen && webSaw !== undefined && apiSaw !== undefined) {
        mtlsSeen = true;
        event(`mTLS between web and api: web's proxy counts outbound tls=true server_id=${api.identity}; api's proxy counts inbound tls=true client_id=${web.identity}`);
      }
      if (!switched && Date.now() >= switchAt && Date.now() < endAt) {
        switched = true;
        const apiNow = mesh.workloads.get("api")!;
        event(`switching api's inbound policy to all-authenticated: defaultPolicy of workload api in ${path.basename(mesh.registryFile)}, streamed to api's proxy (pid ${apiNow.proxy.pid}, not restarted) by the policy controller`);
        await mesh.setPolicy("api", "all-authenticated");
        continue;
      }
      if (options.tty) {
        output.out(`\x1b[H${render({ startedAt, dir, endAt, views, connections, requests, webCalls, unmeshed, denied, events }).map((l) => `${l}\x1b[K`).join("\n")}\x1b[J`);
      } else if (Date.now() - lastPlainSnapshot >= 5_000) {
        lastPlainSnapshot = Date.now();
        for (const line of snapshot(views, connections, requests, webCalls, unmeshed, denied)) output.out(`${stamp()} ${line}`);
      }
      await sleep(refreshMs);
    }

    if (fatal !== undefined) throw new CliError("ERR_MESH", fatal);
    // A probe made after the last scrape (the loop ends on a switch or the deadline) is counted in the summary too.
    if (!aborted()) await Promise.all([...mesh.workloads.values()].map(scrape));
    if (!mtlsSeen) problems.push("no mTLS connection between web and api was seen in the proxies' metrics");
    if (switched && !refusedAfterSwitch && !aborted()) problems.push("the unmeshed client was not refused after api's policy became all-authenticated");
    if (switched && refusedAfterSwitch && denied === 0) problems.push("api's proxy counted no policy denial (inbound_tcp_authz_deny_total) for the refused unmeshed client");
    if (options.tty) output.out("\x1b[2J\x1b[H");
    output.out("Summary");
    for (const line of snapshot(views, connections, requests, webCalls, unmeshed, denied)) output.out(`  ${line}`);
    if (viz !== undefined) output.out(`  viz: ${viz.url} (meshtls viz; served while the demo ran)`);
    if (!aborted()) {
      // The edges as `meshtls edges` prints them, from the same proxies.
      const report = await collectEdges({ admins: [...mesh.workloads.values()].map((w) => w.admin), windowMs: 0, timeoutMs: 2_000 });
      output.out("  edges (meshtls edges):");
      for (const line of formatEdges(report, false).split("\n")) output.out(`    ${line}`);
    }
    output.out(problems.length === 0 ? `Result: the mesh worked${aborted() ? " (stopped early)" : ""}` : `Result: FAILED: ${problems.join("; ")}`);
    return { ok: problems.length === 0, problems, aborted: aborted() };
  } catch (error) {
    if (aborted() && !(error instanceof CliError && fatal !== undefined)) {
      output.out("stopped while a component was starting");
      return { ok: true, problems: [], aborted: true };
    }
    throw error;
  } finally {
    stopping = true;
    options.signal?.removeEventListener("abort", onAbort);
    if (timer !== undefined) clearTimeout(timer);
    if (options.tty) output.out("\x1b[?25h");
    await viz?.close();
    await mesh?.stop();
    if (options.keep === true) {
      output.out(`mesh folder kept: ${dir}`);
    } else {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

/** Awaits `work`, or rejects as soon as `signal` aborts (the caller then stops everything). */
function step<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work;
  if (signal.aborted) return Promise.reject(new CliError("ERR_MESH", "stopped"));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(new CliError("ERR_MESH", "stopped"));
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error as Error);
      },
    );
  });
}

/** A plaintext HTTP GET from `localAddress`, as an unmeshed client would send it. */
function plainGet(address: string, localAddress: string): Promise<{ ok: boolean; detail: string }> {
  const colon = address.lastIndexOf(":");
  return new Promise((resolve) => {
    const req = http.get({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), path: "/", localAddress, agent: false, timeout: 2_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        if (body.length < 200) body += chunk;
      });
      res.on("end", () => resolve({ ok: res.statusCode === 200, detail: `HTTP ${res.statusCode} "${body.trim()}"` }));
      res.on("error", (error) => resolve({ ok: false, detail: error.message }));
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 2 s")));
    req.on("error", (error: NodeJS.ErrnoException) => resolve({ ok: false, detail: `connection closed by the proxy (${error.code ?? error.message})` }));
  });
}

function workloadLine(v: WorkloadView): string {
  const cert = v.certExpiresAt === undefined ? "no certificate yet" : `cert ${describeExpiry(v.certExpiresAt, new Date())}`;
  return `${v.name.padEnd(4)} ${v.ip.padEnd(10)} ${v.identity}  ${cert}, ${v.certificates} issued, policy ${v.policy}`;
}

function connectionLine(c: ConnectionView): string {
  const arrow = c.direction === "outbound" ? "->" : "<-";
  return `${c.workload.padEnd(4)} ${arrow} ${c.direction.padEnd(8)} ${c.tls} ${c.peer}  opened ${c.opened}`;
}

function requestLine(r: RequestView): string {
  const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(1)} ms` : "n/a");
  return `${r.workload.padEnd(4)} ${r.direction.padEnd(8)} ${r.responses} responses, success ${(100 * r.successRate).toFixed(1)}%, latency p50 ${ms(r.p50Ms)}, p99 ${ms(r.p99Ms)}`;
}

function snapshot(
  views: Map<string, WorkloadView>,
  connections: ConnectionView[],
  requests: RequestView[],
  webCalls: Tally,
  unmeshed: { allowed: number; refused: number; last: string },
  denied: number,
): string[] {
  return [
    ...[...views.values()].map((v) => `workload ${workloadLine(v)}`),
    ...connections.map((c) => `connection ${connectionLine(c)}`),
    ...requests.map((r) => `requests ${requestLine(r)}`),
    `traffic web -> api: ${webCalls.ok} ok, ${webCalls.failed} failed${webCalls.last === "" ? "" : ` (last: ${webCalls.last})`}`,
    `traffic unmeshed ${UNMESHED_IP} -> api: ${unmeshed.allowed} allowed, ${unmeshed.refused} refused, api policy denials ${denied}${unmeshed.last === "" ? "" : ` (last: ${unmeshed.last})`}`,
  ];
}

function render(s: {
  startedAt: number;
  dir: string;
  endAt: number;
  views: Map<string, WorkloadView>;
  connections: ConnectionView[];
  requests: RequestView[];
  webCalls: Tally;
  unmeshed: { allowed: number; refused: number; last: string };
  denied: number;
  events: string[];
}): string[] {
  const bold = (t: string): string => `\x1b[1m${t}\x1b[0m`;
  const green = (t: string): string => `\x1b[32m${t}\x1b[0m`;
  const red = (t: string): string => `\x1b[31m${t}\x1b[0m`;
  const elapsed = formatDurationMs(Date.now() - s.startedAt);
  const left = Number.isFinite(s.endAt) ? `, ${formatDurationMs(Math.max(0, s.endAt - Date.now()))} left` : ", Ctrl-C to stop";
  return [
    bold(`meshtls demo`) + ` (${elapsed}${left}) mesh folder ${s.dir}`,
    "",
    bold("Workloads (identity and certificate from each proxy's /metrics)"),
    ...[...s.views.values()].map((v) => `  ${workloadLine(v)}`),
    "",
    bold("Connections (tcp_open_total by TLS state, from the proxies; counted since each proxy started)"),
    ...s.connections.map((c) => `  ${c.tls === "tls=true" ? green(connectionLine(c)) : connectionLine(c)}`),
    "",
    bold("Requests (response_total and response_latency_ms, from the proxies)"),
    ...s.requests.map((r) => `  ${r.successRate < 1 ? red(requestLine(r)) : requestLine(r)}`),
    "",
    bold("Traffic"),
    `  web -> api: ${s.webCalls.ok} ok, ${s.webCalls.failed} failed  ${s.webCalls.last}`,
    `  unmeshed ${UNMESHED_IP} -> api: ${s.unmeshed.allowed} allowed, ${s.unmeshed.refused > 0 ? red(`${s.unmeshed.refused} refused`) : "0 refused"}, policy denials ${s.denied}  ${s.unmeshed.last}`,
    "",
    bold("Events"),
    ...s.events.map((e) => `  ${e}`),
  ];
}
