import { spawn } from "node:child_process";
import { TransparentError } from "./errors.ts";
import type { ProbeDialer } from "./redirect-check.ts";

/** Options of {@link spawnProbeDialer}. */
export interface SpawnProbeDialerOptions {
  /** The user the probe runs as: one `meshtls init` does not exclude from the redirect (not the proxy's). Default 65534. */
  uid?: number;
  /** Its group. Default 65534. */
  gid?: number;
  /** The Node binary that runs the probe. Default `process.execPath`. */
  node?: string;
}

// Dials, writes the token and a newline, and exits 0 on the first byte of an answer; else prints the error's code and exits 1.
const PROBE = `const [host, port, token, ms] = process.argv.slice(1);
const fail = (code) => { process.stdout.write(String(code)); process.exit(1); };
const socket = require("node:net").connect({ host, port: Number(port) });
socket.setTimeout(Number(ms), () => fail("ETIMEDOUT"));
socket.on("connect", () => socket.write(token + "\\n"));
socket.on("data", () => process.exit(0));
socket.on("end", () => fail("ECONNRESET"));
socket.on("error", (error) => fail(error.code ?? error.message));`;

/**
 * A {@link ProbeDialer} that dials from a short-lived child process running
 * as another user: the proxy's own connections are never redirected (its UID
 * is excluded), so its probe must come from a user the workload could be.
 * Starting a process as another user needs `CAP_SETUID` and `CAP_SETGID`;
 * without them each dial rejects with `ERR_REDIRECT_CHECK_UNAVAILABLE`.
 */
export function spawnProbeDialer(options: SpawnProbeDialerOptions = {}): ProbeDialer {
  const uid = options.uid ?? 65_534;
  const gid = options.gid ?? 65_534;
  const node = options.node ?? process.execPath;
  const unavailable = (cause: unknown): TransparentError =>
    new TransparentError("ERR_REDIRECT_CHECK_UNAVAILABLE", `cannot start the redirect probe as ${uid}:${gid} (it needs CAP_SETUID and CAP_SETGID): ${(cause as Error).message}`, { cause });
  return (probe, token, timeoutMs) =>
    new Promise((resolve, reject) => {
      let child;
      try {
        child = spawn(node, ["-e", PROBE, probe.host, String(probe.port), token, String(timeoutMs)], { uid, gid, stdio: ["ignore", "pipe", "ignore"] });
      } catch (error) {
        reject(unavailable(error));
        return;
      }
      let output = "";
      const kill = setTimeout(() => child.kill("SIGKILL"), timeoutMs + 2000);
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
      child.on("error", (error) => {
        clearTimeout(kill);
        reject(unavailable(error));
      });
      child.on("close", (code) => {
        clearTimeout(kill);
        if (code === 0) resolve();
        else reject(Object.assign(new Error(`probe: ${output || `exit ${code ?? "by signal"}`}`), { code: output || "ETIMEDOUT" }));
      });
    });
}
