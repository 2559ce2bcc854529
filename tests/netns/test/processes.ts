// What the network-namespace tests share about the processes they run: where the built binaries are, the identities
// they present, and a follower of a process's JSON log lines.
import type { ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);

/** A workspace app's built entry point (`dist/main.js`). */
export const binary = (pkg: string): string => path.join(path.dirname(require.resolve(`${pkg}/package.json`)), "dist", "main.js");
/** The meshtls CLI. */
export const cli = binary("meshtls");
/** The Node running the tests. */
export const node = process.execPath;
/** Certificates and registries the tests start from. */
export const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures");
/** A ServiceAccount's mesh identity under the tests' trust domain. */
export const identityOf = (sa: string, ns = "default"): string => `${sa}.${ns}.serviceaccount.identity.meshtls.cluster.local`;
/** The identity the destination service presents. */
export const DESTINATION_NAME = identityOf("destination", "meshtls");

/** A process's JSON log lines so far, and a wait for one that matches (a `msg`, or a predicate on the line). */
export interface Followed {
  lines: Record<string, unknown>[];
  waitFor(match: string | ((line: Record<string, unknown>) => boolean), timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** Follows `child`'s stdout as JSON lines (a line that is not JSON is kept as its `msg`); `what` names it in errors. */
export function follow(child: ChildProcess, what: string): Followed {
  const lines: Record<string, unknown>[] = [];
  let text = "";
  let stderr = "";
  const waiters = new Set<() => void>();
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    text += chunk;
    const parts = text.split("\n");
    text = parts.pop() ?? "";
    for (const part of parts) {
      try {
        lines.push(JSON.parse(part) as Record<string, unknown>);
      } catch {
        lines.push({ msg: part });
      }
    }
    for (const waiter of waiters) waiter();
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  return {
    lines,
    waitFor: (match, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const matches = typeof match === "string" ? (line: Record<string, unknown>): boolean => line["msg"] === match : match;
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${what}: no ${typeof match === "string" ? `"${match}"` : "matching line"} in ${timeoutMs} ms; log ${JSON.stringify(lines.slice(-10))}; stderr ${stderr.slice(-2000)}`));
        }, timeoutMs);
        const check = (): void => {
          const found = lines.find(matches);
          if (found === undefined) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found);
        };
        waiters.add(check);
        check();
      }),
  };
}
