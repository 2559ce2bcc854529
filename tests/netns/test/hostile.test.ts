// The transparent outbound listener under attack from its own pod (issue #15): an application gone bad whose
// connections `meshtls init`'s rules redirect to the proxy, each with a real original destination — malformed
// HTTP that protocol detection reads, clients that trickle a request head, a connection flood past the
// listener's cap, and connections to 1,000 destinations of the application's choosing. After each, an unmodified
// curl from the pod still gets its answer through the proxy, and the proxy is alive. The rows are printed as a
// table like the hostile suite's (tests/hostile). Pod A (10.77.0.31) runs the control plane on its loopback
// (excluded from redirection), `meshtls init` and `meshtls-proxy --transparent` as UID 2102; pod C (10.77.0.33)
// is a plain HTTP server outside the mesh.
import { execFileSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { proxyArgs, startControlPlane, writeMeshFiles } from "./control-plane.ts";
import { createPods, listNamespaces, sweepNamespaces } from "./pods.ts";
import type { Pod, Pods } from "./pods.ts";
import { cli, fixtures, node } from "./processes.ts";

const PREFIX = "mtls-nh-";
const PROXY_UID = 2102;
const A_IP = "10.77.0.31";
const C_IP = "10.77.0.33";
/** The transparent listener's cap for this test (--max-outbound-connections). */
const CAP = 100;

interface Row {
  attack: string;
  result: string;
  expected: string;
  holds: boolean;
}

/** Waits for a JSON log line whose `msg` is `msg` on `child`'s stdout. */
function waitForMsg(child: ChildProcess, msg: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let text = "";
    let stderr = "";
    const timer = setTimeout(() => reject(new Error(`no "${msg}" in ${timeoutMs} ms: ${text.slice(-2000)} ${stderr.slice(-2000)}`)), timeoutMs);
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      text += chunk;
      for (const line of text.split("\n")) {
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          if (parsed["msg"] === msg) {
            clearTimeout(timer);
            resolve(parsed);
          }
        } catch {
          // a partial line
        }
      }
    });
  });
}

describe("meshtls-proxy --transparent: the redirected outbound listener under attack", () => {
  let mesh: Pods | undefined;
  let dir: string;
  let proxy: ChildProcess;
  const rows: Row[] = [];

  const a = (): Pod => mesh!.pods["a"]!;
  /** What the hostile application saw (one JSON line from fixtures/hostile-client.ts, run as root: redirected). */
  const hostile = (...args: string[]): Record<string, number | string | boolean> =>
    JSON.parse(a().exec(node, [path.join(fixtures, "hostile-client.ts"), ...args], { timeoutMs: 120_000 })) as Record<string, number | string | boolean>;
  const metrics = (): string => a().exec("curl", ["-s", "--max-time", "10", "http://127.0.0.1:4191/metrics"]);
  const sum = (text: string, name: string, ...fragments: string[]): number =>
    text
      .split("\n")
      .filter((line) => line.startsWith(`${name}{`) && fragments.every((f) => line.includes(f)))
      .reduce((total, line) => total + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
  const rssKiB = (): number => {
    const status = execFileSync("cat", [`/proc/${String(proxy.pid)}/status`], { encoding: "utf8" });
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
  };
  /** Still serving: an unmodified curl from A reaches C through the proxy (redirected, plaintext: C is outside the mesh). */
  const serving = (): boolean => {
    try {
      return a().exec("curl", ["-sS", "--max-time", "15", `http://${C_IP}:8080/`]) === `hello from c peer=${A_IP}\n`;
    } catch {
      return false;
    }
  };
  /** Runs one attack, records its row (alive and serving checked after it), and asserts it. */
  const row = (attack: string, expected: string, run: () => { result: string; ok: boolean }): void => {
    let outcome: { result: string; ok: boolean };
    try {
      outcome = run();
    } catch (error) {
      outcome = { result: `attack error: ${(error as Error).message.slice(0, 200)}`, ok: false };
    }
    const alive = proxy.exitCode === null && proxy.signalCode === null;
    const stillServing = alive && serving();
    rows.push({ attack, result: outcome.result, expected, holds: outcome.ok && alive && stillServing });
    expect(alive, `${attack}: the proxy died`).toBe(true);
    expect(stillServing, `${attack}: a curl through the proxy no longer works`).toBe(true);
    expect(outcome.ok, `${attack}: expected ${expected}; saw ${outcome.result}`).toBe(true);
  };

  beforeAll(async () => {
    sweepNamespaces(PREFIX);
    dir = await mkdtemp(path.join(os.tmpdir(), "meshtls-netns-hostile-"));
    await chmod(dir, 0o755);
    // The proxy's UID cannot execute the Node under /root (mode 700): a copy it may run.
    const proxyNode = path.join(dir, "node");
    await copyFile(node, proxyNode);
    await chmod(proxyNode, 0o755);
    await writeMeshFiles(dir, { serviceAccounts: ["a"], proxyUid: PROXY_UID, destinationLeaf: false });
    await writeFile(path.join(dir, "registry.yaml"), "services: []\n");
    mesh = createPods(PREFIX, [
      { name: "a", ip: A_IP },
      { name: "c", ip: C_IP },
    ]);
    const c = mesh.pods["c"]!;
    a().exec(node, [cli, "init", "--proxy-uid", String(PROXY_UID)]);
    const server = c.spawn(node, [path.join(fixtures, "http-server.ts"), "8080", "hello from c"]);
    await new Promise<void>((resolve) => server.stdout?.once("data", () => resolve()));
    // The control plane on A's loopback, which the rules never redirect.
    const controlPlane = await startControlPlane(a(), dir, { listenIp: "127.0.0.1", identityPort: 8181, destinationPort: 8186, destinationPlaintext: true });
    proxy = a().spawn(proxyNode, proxyArgs(a(), controlPlane, ["--detect-timeout", "2s", "--max-outbound-connections", String(CAP)]), { uid: PROXY_UID, gid: PROXY_UID });
    await waitForMsg(proxy, "first certificate obtained: ready", 60_000);
    if (!serving()) throw new Error("a curl from A to C does not work before any attack");
  });

  afterAll(async () => {
    mesh?.destroy();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    if (rows.length > 0) {
      const lines = rows.map((r) => `| transparent outbound (redirected) | ${r.attack} | ${r.result} | ${r.holds ? "yes" : `NO (expected ${r.expected})`} |`);
      process.stdout.write(`\n| listener | attack | result | holds |\n| --- | --- | --- | --- |\n${lines.join("\n")}\n`);
    }
  });

  const hex = (text: string): string => Buffer.from(text, "latin1").toString("hex");
  const malformed: [string, string][] = [
    ["a request line with NUL bytes", hex("GET /\u0000\u0000 HTTP/1.1\r\nHost: c\r\n\r\n")],
    ["a 100 KiB header", "big-header:100"],
    ["an absolute URI naming the proxy's admin", hex("GET http://127.0.0.1:4191/shutdown HTTP/1.1\r\nHost: 127.0.0.1:4191\r\n\r\n")],
    ["4 KiB of binary junk", randomBytes(4096).toString("hex")],
  ];
  for (const [name, bytes] of malformed) {
    it(`${name}, redirected to ${C_IP}:8080`, () => {
      row(name, "a 4xx, C's own answer or a hang-up, within 15 s; never the proxy's admin", () => {
        const seen = hostile("send", `${C_IP}:8080`, bytes);
        const answer = String(seen["answer"]);
        const fromC = String(seen["body"]).startsWith("hello from c");
        // C's own answer may come on a kept-alive connection: that is the request reaching where it was going.
        const ok = fromC || (seen["closed"] === true && (answer === "" || /^HTTP\/1\.[01] 4\d\d/.test(answer)));
        return { result: `${seen["closed"] === true ? `closed after ${String(seen["ms"])} ms` : "left open"}; ${answer === "" ? "no answer" : answer}${fromC ? " (C's answer)" : ""}`, ok };
      });
    });
  }

  it("50 clients trickling a request head (1 B/s) for 12 s while a curl goes through", () => {
    row("50 clients trickling a request head", "detection gives up after --detect-timeout (2 s) and forwards them as bytes (counted as connections to C); a curl served meanwhile", () => {
      const before = sum(metrics(), "tcp_open_total", 'direction="outbound"', 'peer="dst"', `target_addr="${C_IP}:8080"`);
      const trickler = a().spawn(node, [path.join(fixtures, "hostile-client.ts"), "trickle", `${C_IP}:8080`, "50", "12000"]);
      execFileSync("sleep", ["5"]);
      const servedMeanwhile = serving();
      const forwarded = sum(metrics(), "tcp_open_total", 'direction="outbound"', 'peer="dst"', `target_addr="${C_IP}:8080"`) - before;
      trickler.kill("SIGKILL");
      return { result: `${forwarded} connections to C after 5 s (curl's included); curl ${servedMeanwhile ? "served" : "NOT served"} meanwhile`, ok: servedMeanwhile && forwarded >= 50 };
    });
  });

  it(`${CAP * 3} idle connections against the listener's cap of ${CAP}`, () => {
    row(`${CAP * 3} idle connections (cap ${CAP})`, `beyond the cap closed at once and counted in tcp_connections_refused_total{listener="transparent"}`, () => {
      const before = sum(metrics(), "tcp_connections_refused_total", 'listener="transparent"');
      const seen = hostile("hold", `${C_IP}:8080`, String(CAP * 3));
      const counted = sum(metrics(), "tcp_connections_refused_total", 'listener="transparent"') - before;
      return { result: `${String(seen["opened"])} opened, ${String(seen["closed"])} closed at once; refused_total +${counted}`, ok: Number(seen["closed"]) >= CAP * 2 * 0.9 && counted >= CAP * 2 * 0.9 };
    });
  });

  it("1,000 destinations of the application's choosing (ports nothing listens on)", () => {
    // The outbound target_addr label is the original destination: what the pod's own application dials. Uncapped it
    // cost ~590 B of /metrics (5 series) per destination; capped like the inbound one: 100 distinct values per
    // proxy, then `overflow` (earlier rows' destinations hold some of the 100).
    const cap = 100;
    const expected = `every connection refused or closed, the proxy answering; at most ${cap} of the 1,000 named in /metrics, the rest counted under target_addr="overflow"; /metrics +${cap} KiB at most, RSS +128 MiB at most`;
    row("1,000 distinct original destinations (outbound target_addr capped)", expected, () => {
      const text = metrics();
      const rss = rssKiB();
      const seen = hostile("spread", C_IP, "20000", "1000");
      const after = metrics();
      const grownRss = rssKiB() - rss;
      const named = new Set([...after.matchAll(new RegExp(`target_addr="${C_IP.replaceAll(".", "\\.")}:(2\\d{4})"`, "g"))].map((m) => m[1]));
      const overflow = after.split("\n").some((line) => line.includes('target_addr="overflow"'));
      const grownBytes = after.length - text.length;
      return {
        result: `${String(seen["done"])} done; /metrics ${text.length} → ${after.length} B (+${grownBytes}), ${named.size} of the 1,000 named, overflow ${overflow ? "present" : "absent"}; RSS +${(grownRss / 1024).toFixed(1)} MiB`,
        ok: Number(seen["done"]) === 1000 && named.size <= cap && overflow && grownBytes <= cap * 1024 && grownRss <= 128 * 1024,
      };
    });
  });

  it("removes every namespace it made", () => {
    mesh!.destroy();
    expect(listNamespaces(PREFIX)).toEqual([]);
  });
});
