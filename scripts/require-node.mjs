#!/usr/bin/env node
// The root scripts that run code (check, test, demo) start here: it names the
// Node that runs them, so that a log shows it, and stops at once when that Node
// is older than package.json's engines.node, saying how to get the right one
// without installing anything. Plain JavaScript that any old Node runs.
import { readFileSync } from "node:fs";

const { engines } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const range = /^>=\s*(\d+)\.(\d+)(?:\.(\d+))?$/.exec(engines.node);
if (range === null) {
  console.error(`require-node: package.json's engines.node must read ">=MAJOR.MINOR[.PATCH]", not ${JSON.stringify(engines.node)}`);
  process.exit(1);
}
const minimum = range.slice(1).map((part) => Number(part ?? 0));
const running = process.versions.node.split(".").map(Number);
const difference = running.map((part, i) => part - minimum[i]).find((d) => d !== 0) ?? 0;

console.log(`node ${process.version} (OpenSSL ${process.versions.openssl}) ${process.execPath}`);
if (difference < 0) {
  const script = process.env.npm_lifecycle_event ?? "check";
  console.error(
    `meshtls needs Node ${engines.node}, this is ${process.version}. npx puts one first on PATH for the command:\n` +
      `  npx -y -p node@${minimum.join(".")} -p pnpm@12.4.2 -c 'pnpm install --frozen-lockfile && pnpm run ${script}'`,
  );
  process.exit(1);
}
