#!/usr/bin/env node
// Install step: builds native/orig_dst.c with node-gyp against the headers of
// the Node that runs this script, never downloading any (these machines reach
// no header server). Where the addon cannot be built (not Linux, no compiler,
// no headers) it says why in build/unavailable.json and exits 0, so installs
// keep working; the TypeScript wrapper reports that reason as
// ERR_ORIG_DST_UNAVAILABLE when transparent mode asks for the addon.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const buildDir = path.join(packageDir, "build");
const unavailableFile = path.join(buildDir, "unavailable.json");

function giveUp(reason) {
  mkdirSync(buildDir, { recursive: true });
  writeFileSync(unavailableFile, `${JSON.stringify({ reason, node: process.version, platform: process.platform }, null, 2)}\n`);
  console.warn(`@meshtls/orig-dst: addon not built: ${reason} (transparent mode will say so; other modes are unaffected)`);
  process.exit(0);
}

const hasHeaders = (dir) => existsSync(path.join(dir, "include", "node", "node_api.h")) && existsSync(path.join(dir, "include", "node", "common.gypi"));

/**
 * The running Node's headers: `<prefix>/include/node` for a system install
 * (/usr/bin/node → /usr), or inside the npm `node` package, whose binary
 * package `node-<platform>-<arch>` ships the release tarball's include/node.
 */
function findNodeDir() {
  const candidates = [];
  const exec = realpathSync(process.execPath);
  for (const binary of new Set([process.execPath, exec])) {
    const prefix = path.dirname(path.dirname(binary));
    candidates.push(prefix);
    const platformPackage = `node-${process.platform}-${process.arch}`;
    candidates.push(path.join(prefix, "node_modules", platformPackage), path.join(path.dirname(prefix), platformPackage));
  }
  // npm's nodedir setting last: it may name another Node's headers (N-API keeps those usable).
  if (process.env.npm_config_nodedir) candidates.push(process.env.npm_config_nodedir);
  return candidates.find(hasHeaders);
}

/** node-gyp as the package manager provides it (pnpm and npm both do), else npm's own copy. */
function findNodeGyp() {
  const fromEnv = process.env.npm_config_node_gyp;
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir !== "" && existsSync(path.join(dir, "node-gyp"))) return path.join(dir, "node-gyp");
  }
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    const npm = path.join(dir, "npm");
    if (dir === "" || !existsSync(npm)) continue;
    const gyp = path.resolve(path.dirname(realpathSync(npm)), "..", "node_modules", "node-gyp", "bin", "node-gyp.js");
    if (existsSync(gyp)) return gyp;
  }
  return undefined;
}

if (process.platform !== "linux") giveUp(`SO_ORIGINAL_DST is Linux only (this is ${process.platform})`);
rmSync(unavailableFile, { force: true });
const nodeDir = findNodeDir();
if (nodeDir === undefined) giveUp(`no headers (include/node/node_api.h) beside ${process.execPath}; set npm_config_nodedir to a Node source or headers folder`);
const nodeGyp = findNodeGyp();
if (nodeGyp === undefined) giveUp("node-gyp not found (neither from the package manager nor npm's own copy)");

const [command, args] = nodeGyp.endsWith(".js") ? [process.execPath, [nodeGyp]] : [nodeGyp, []];
const result = spawnSync(command, [...args, "rebuild", `--nodedir=${nodeDir}`], {
  cwd: packageDir,
  encoding: "utf8",
  // The node-gyp shims run `node`: make it the Node whose headers were chosen.
  env: { ...process.env, npm_config_nodedir: nodeDir, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ""}` },
});
if (result.status !== 0) {
  const output = `${result.stdout ?? ""}${result.stderr ?? ""}`.trim().split("\n").slice(-15).join("\n");
  giveUp(`node-gyp rebuild failed (${result.error?.message ?? `exit ${result.status}`}) with headers from ${nodeDir}:\n${output}`);
}
const built = path.join(buildDir, "Release", "orig_dst.node");
if (!existsSync(built)) giveUp(`node-gyp succeeded but ${built} is missing (${readdirSync(buildDir).join(", ")})`);
console.log(`@meshtls/orig-dst: built ${path.relative(packageDir, built)} for Node ${process.version} with headers from ${nodeDir}`);
