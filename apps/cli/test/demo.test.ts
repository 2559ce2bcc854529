import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { cliBin, run, runCli } from "./helpers.ts";
import { alive, processesMentioning } from "./mesh-helpers.ts";

const API = "api.default.serviceaccount.identity.meshtls.cluster.local";
const WEB = "web.default.serviceaccount.identity.meshtls.cluster.local";

/** The mesh folder and the pids the demo reported starting. */
function started(stdout: string): { dir: string; pids: number[] } {
  const dir = /mesh folder: (\S+)/.exec(stdout)?.[1];
  if (dir === undefined) throw new Error(`no mesh folder in:\n${stdout}`);
  const pids = [...stdout.matchAll(/started .+? \(pid (\d+)\)/g)].map((m) => Number(m[1]));
  return { dir, pids };
}

describe("meshtls demo (real processes on loopback)", () => {
  it("--no-tty --duration 20s: mTLS between web and api from the proxies' metrics, the unmeshed client refused after the live policy switch (no restart, 0 failed calls), exit 0, nothing left behind", async () => {
    const result = await runCli(["demo", "--no-tty", "--duration", "20s"], { timeoutMs: 150_000 });
    const { dir, pids } = started(result.stdout);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    // Both identities with tls=true, as each proxy counts the other's side.
    expect(result.stdout).toContain(`tls=true server_id=${API}`);
    expect(result.stdout).toContain(`tls=true client_id=${WEB}`);
    expect(result.stdout).toMatch(new RegExp(`workload web +127\\.0\\.1\\.1 +${WEB.replaceAll(".", "\\.")} +cert expires in \\d+s`));
    // mTLS'd traffic visible within 60 s of start.
    const seenAt = /\[ *([\d.]+)s\] mTLS between web and api/.exec(result.stdout)?.[1];
    expect(seenAt).toBeDefined();
    expect(Number(seenAt)).toBeLessThan(60);
    expect(result.stdout).toMatch(/unmeshed client 127\.0\.1\.3 -> api .*allowed under all-unauthenticated: HTTP 200 "hello from api"/);
    expect(result.stdout).toMatch(/unmeshed client 127\.0\.1\.3 -> api: REFUSED under all-authenticated/);
    expect(result.stdout).toMatch(/api policy denials [1-9]/);
    // Every refusal of the unmeshed client is one denial api's proxy counted: the summary's two counts agree.
    const summary = /Summary\n[^]*?unmeshed 127\.0\.1\.3 -> api: \d+ allowed, (\d+) refused, api policy denials (\d+)/.exec(result.stdout);
    expect(summary, result.stdout).not.toBeNull();
    expect(summary![2]).toBe(summary![1]);
    expect(result.stdout).toMatch(/Result: the mesh worked/);
    // Certificate refreshes are visible within the 20 s: at least one per workload (default 7 s leaves refresh every ~6 s).
    expect(result.stdout).toMatch(/leaves live 7s/);
    expect(result.stdout).toMatch(/\] web: certificate refreshed \(#[2-9]\), new one expires in \d+s/);
    expect(result.stdout).toMatch(/\] api: certificate refreshed \(#[2-9]\), new one expires in \d+s/);
    // The policy switch comes at about half of --duration, counted from the mesh being up (web started last).
    const at = (pattern: RegExp): number => Number(pattern.exec(result.stdout)?.[1] ?? Number.NaN);
    const upAt = at(/\[ *([\d.]+)s\] web: app on /);
    const switchAt = at(/\[ *([\d.]+)s\] switching api's inbound policy to all-authenticated/);
    const refusedAt = at(/\[ *([\d.]+)s\] unmeshed client 127\.0\.1\.3 -> api: REFUSED/);
    expect(switchAt - upAt).toBeGreaterThanOrEqual(9.8);
    expect(switchAt - upAt).toBeLessThan(15);
    expect(refusedAt - upAt).toBeLessThan(20);
    // The switch is a registry edit streamed to api's proxy: no process is restarted, and web's calls (mTLS, still allowed) never fail.
    expect(result.stdout).toMatch(/switching api's inbound policy to all-authenticated: defaultPolicy of workload api in registry\.yaml, streamed to api's proxy \(pid \d+, not restarted\)/);
    const apiProxyPid = Number(/started api proxy \(pid (\d+)\)/.exec(result.stdout)?.[1]);
    expect(result.stdout).toContain(`api's proxy (pid ${apiProxyPid}, not restarted)`);
    const calls = /Summary\n[^]*?traffic web -> api: (\d+) ok, (\d+) failed/.exec(result.stdout);
    expect(calls, result.stdout).not.toBeNull();
    expect(Number(calls![1])).toBeGreaterThan(10);
    expect(calls![2], result.stdout).toBe("0");
    // Per-request figures from the proxies' response_total and response_latency_ms: every call web made succeeded.
    const outbound = /Summary\n[^]*?requests web +outbound +(\d+) responses, success ([\d.]+)%, latency p50 [\d.]+ ms, p99 [\d.]+ ms/.exec(result.stdout);
    expect(outbound, result.stdout).not.toBeNull();
    expect(Number(outbound![1])).toBeGreaterThanOrEqual(Number(calls![1]));
    expect(outbound![2]).toBe("100.0");
    expect(result.stdout).toMatch(/requests api +inbound +\d+ responses, success [\d.]+%, latency p50 [\d.]+ ms/);
    // The viz URL while it runs and in the summary, and the edge table as `meshtls edges` prints it.
    expect(result.stdout).toMatch(/\] viz: open http:\/\/127\.0\.0\.1:\d+\/ to watch the mesh as a graph/);
    expect(result.stdout).toMatch(/Summary\n[^]*?  viz: http:\/\/127\.0\.0\.1:\d+\/ \(meshtls viz; served while the demo ran\)/);
    expect(result.stdout).toMatch(new RegExp(`Summary\\n[^]*?edges \\(meshtls edges\\):\\n +SRC +DST[^]*?default/web +default/api +${WEB.replaceAll(".", "\\.")} +${API.replaceAll(".", "\\.")} +SECURED ✓`));
    expect(result.stdout).toMatch(/\(unmeshed\) +default\/api +- +\S+ +no_tls_from_remote/);
    // identity, destination, two proxies, two apps: nothing restarted.
    expect(pids.length).toBe(6);
    expect(pids.filter(alive)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect(processesMentioning(dir)).toEqual([]);
  }, 180_000);

  it("SIGINT while the mesh is starting: exit 130, nothing left behind", async () => {
    const child = spawn(process.execPath, [cliBin, "demo", "--no-tty"], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    try {
      const until = Date.now() + 30_000;
      while (!stdout.includes("started api proxy") && Date.now() < until && child.exitCode === null) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const { dir, pids } = started(stdout);
      child.kill("SIGINT");
      const started0 = Date.now();
      expect(await exited).toBe(130);
      expect(Date.now() - started0).toBeLessThan(15_000);
      const { pids: all } = started(stdout);
      expect(all.length).toBeGreaterThanOrEqual(pids.length);
      expect(all.filter(alive)).toEqual([]);
      expect(existsSync(dir)).toBe(false);
      expect(processesMentioning(dir)).toEqual([]);
    } finally {
      clearTimeout(killer);
      child.kill("SIGKILL");
    }
  }, 90_000);

  it("a TTY gets the live view (ANSI redraw) with the same facts, and certificate refreshes as they happen", async () => {
    // script(1) gives the demo a pseudo-terminal as stdout. 10 s leaves (+2 s skew): each proxy refreshes after 10 s (the lower clamp).
    const result = await run("script", ["-qfec", `"${process.execPath}" "${cliBin}" demo --duration 14s --lifetime 10s`, "/dev/null"], { timeoutMs: 120_000 });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/web: certificate refreshed \(#2\), new one expires in \d+s/);
    expect(result.stdout).toContain("\x1b[H");
    expect(result.stdout).toContain("Connections (tcp_open_total by TLS state, from the proxies; counted since each proxy started)");
    expect(result.stdout).toContain(`tls=true server_id=${API}`);
    expect(result.stdout).toMatch(/Result: the mesh worked/);
    const dir = /mesh folder:? (\/\S+?)(\x1b|\s)/.exec(result.stdout)?.[1];
    expect(dir).toBeDefined();
    expect(existsSync(dir!)).toBe(false);
  }, 150_000);

  it.each([
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const)("%s mid-run stops every process and removes the mesh folder", async (signal, exitCode) => {
    const child = spawn(process.execPath, [cliBin, "demo", "--no-tty"], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const killer = setTimeout(() => child.kill("SIGKILL"), 150_000);
    try {
      const until = Date.now() + 90_000;
      while (!stdout.includes("mTLS between web and api") && Date.now() < until && child.exitCode === null) {
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      expect(stdout).toContain("mTLS between web and api");
      const { dir, pids } = started(stdout);
      expect(pids.length).toBe(6);
      expect(pids.every(alive)).toBe(true);
      child.kill(signal);
      expect(await exited).toBe(exitCode);
      expect(stderr).toBe("");
      expect(stdout).toMatch(/Result: the mesh worked \(stopped early\)/);
      expect(pids.filter(alive)).toEqual([]);
      expect(existsSync(dir)).toBe(false);
      expect(processesMentioning(dir)).toEqual([]);
    } finally {
      clearTimeout(killer);
      child.kill("SIGKILL");
    }
  }, 180_000);
});
