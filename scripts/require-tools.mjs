#!/usr/bin/env node
// The one list of the operating system's tools that the tests use as real peers
// or need to build their fixtures. `pnpm run check` and `pnpm test` run this
// before any test, so the README's test command sets up a fresh machine itself:
// as root with apt-get (Debian, Ubuntu) it installs what is missing; otherwise
// it names the packages and stops. Plain JavaScript, no dependencies.
import { execFileSync, spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import path from "node:path";

/** [command or absolute path, Debian package, why]. */
const TOOLS = [
  ["openssl", "openssl", "interop peer: openssl verify, req, s_client, s_server"],
  ["curl", "curl", "an unmodified HTTP client through the mesh"],
  ["tcpdump", "tcpdump", "captures that prove mesh traffic is encrypted"],
  ["iptables", "iptables", "transparent mode: meshtls init's nat rules in network namespaces"],
  ["ip", "iproute2", "transparent mode: pods as network namespaces"],
  ["setpriv", "util-linux", "transparent mode: proxies under their own UID"],
  ["/usr/bin/chromium", "chromium", "meshtls viz's browser test (playwright-core)"],
];

const found = (command) => {
  if (command.startsWith("/")) {
    try {
      accessSync(command, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  }
  return (process.env.PATH ?? "").split(path.delimiter).some((dir) => {
    try {
      accessSync(path.join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
};

const missing = TOOLS.filter(([command]) => !found(command));
if (missing.length === 0) process.exit(0);

const packages = [...new Set(missing.map(([, pkg]) => pkg))];
for (const [command, pkg, why] of missing) console.error(`require-tools: ${command} is missing (Debian package ${pkg}): ${why}`);
const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
if (!isRoot || !found("apt-get")) {
  console.error(`require-tools: install them and run again, e.g. sudo apt-get install -y ${packages.join(" ")}`);
  process.exit(1);
}
console.error(`require-tools: installing ${packages.join(" ")} with apt-get`);
const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env });
const install = spawnSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...packages], { stdio: "inherit", env });
if (install.status !== 0) {
  console.error(`require-tools: apt-get install ${packages.join(" ")} failed (exit ${install.status})`);
  process.exit(1);
}
const still = TOOLS.filter(([command]) => !found(command));
if (still.length > 0) {
  console.error(`require-tools: still missing after the install: ${still.map(([command]) => command).join(", ")}`);
  process.exit(1);
}
