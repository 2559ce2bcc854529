import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import type { TapLine } from "../src/commands/tap.ts";
import { defaultBinaries, LocalMesh, type MeshBinaries, type Workload } from "../src/demo/mesh.ts";
import { startProcess, type ManagedProcess } from "../src/mesh/supervisor.ts";
import { appRoot, cliBin, makeTempDir, run } from "./helpers.ts";

/** The app binaries as the CLI finds them, and the built workload app (tests import src/, so not beside it). */
export function testBinaries(): MeshBinaries {
  return { ...defaultBinaries(), workloadApp: path.join(appRoot, "dist", "workload-app.js") };
}

/**
 * A temp folder with a local mesh in it (leaves of `leafLifetimeMs`, 120 s unless given) whose identity and destination
 * services run. The caller stops `mesh`, then calls `cleanup` (the folder); if the services fail to start, both are done here.
 */
export async function startLocalMesh(options: { leafLifetimeMs?: number } = {}): Promise<{ dir: string; mesh: LocalMesh; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await makeTempDir();
  const mesh = await LocalMesh.create({ dir: path.join(dir, "mesh"), leafLifetimeMs: options.leafLifetimeMs ?? 120_000, binaries: testBinaries() });
  try {
    await mesh.startIdentity();
    await mesh.startDestination();
  } catch (error) {
    await mesh.stop();
    await cleanup();
    throw error;
  }
  return { dir, mesh, cleanup };
}

/** A plaintext HTTP client outside the mesh, from `ip`: GETs `target` ("host:port") every 150 ms on a new connection; logs "started". */
export function startUnmeshedClient(ip: string, target: string): ManagedProcess {
  const script = `
    const http = require("node:http");
    const [host, port] = process.argv[1].split(":");
    console.log(JSON.stringify({ msg: "started" }));
    setInterval(() => {
      http.get({ host, port: Number(port), path: "/", agent: false, localAddress: process.argv[2] }, (res) => res.resume()).on("error", () => {});
    }, 150);`;
  return startProcess({ name: "unmeshed client", file: process.execPath, args: ["-e", script, target, ip] });
}

/** Whether a process with this pid exists (ps, not a signal, so zombies of others do not count as ours). */
export function alive(pid: number): boolean {
  try {
    const out = execFileSync("ps", ["-o", "pid=,stat=", "-p", String(pid)], { encoding: "utf8" }).trim();
    return out !== "" && !/\bZ/.test(out.split(/\s+/)[1] ?? "");
  } catch {
    return false; // ps exits 1 when there is no such process
  }
}

/** Command lines of every process that mentions `text`. */
export function processesMentioning(text: string): string[] {
  const out = execFileSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" });
  return out.split("\n").filter((line) => line.includes(text) && !line.includes("ps -eo"));
}

/** Polls `probe` every `intervalMs` until it returns a value that is not undefined, or throws after `timeoutMs`. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 500): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A running `meshtls tap -o json`: its event lines as they arrive, its stderr (JSON logs) by line. */
export interface TapProcess {
  child: ChildProcess;
  lines: TapLine[];
  stderr: string[];
  exited: Promise<number | null>;
}

/** Starts `meshtls tap … -o json` and waits until `streams` proxies' streams are open (a "tapping" log line each). */
export async function startTap(args: string[], streams: number): Promise<TapProcess> {
  const child = spawn(process.execPath, [cliBin, "tap", ...args, "-o", "json"], { stdio: ["ignore", "pipe", "pipe"] });
  const tap: TapProcess = { child, lines: [], stderr: [], exited: new Promise((resolve) => child.once("exit", (code) => resolve(code))) };
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk;
    const lines = out.split("\n");
    out = lines.pop() ?? "";
    for (const line of lines) if (line !== "") tap.lines.push(JSON.parse(line) as TapLine);
  });
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => tap.stderr.push(...chunk.split("\n").filter((l) => l !== "")));
  await eventually("tap streams open", async () => (tap.stderr.filter((l) => l.includes('"tapping"')).length >= streams ? true : undefined), 20_000, 50);
  return tap;
}

/** One curl GET of `url` through `workload`'s outbound proxy, as an application would make it: the HTTP status and how long it took. */
export async function curlThrough(workload: Workload, url: string): Promise<{ status: string; ms: number }> {
  const started = performance.now();
  const result = await run("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-x", `http://${workload.outbound}`, url], { timeoutMs: 15_000 });
  return { status: result.stdout.trim(), ms: performance.now() - started };
}
