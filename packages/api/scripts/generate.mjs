#!/usr/bin/env node
// Regenerates src/gen from proto/ with buf (from @bufbuild/buf) and the
// ts-proto plugin from node_modules; no network access is needed.
//   node scripts/generate.mjs            -> writes src/gen (replacing it)
//   node scripts/generate.mjs --out DIR  -> writes DIR/src/gen (used by the staleness test)
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
// @bufbuild/buf exposes the platform binary through its bin/buf launcher.
const bufBin = path.join(path.dirname(require.resolve("@bufbuild/buf/package.json")), "bin", "buf");

const outIndex = process.argv.indexOf("--out");
const outBase = outIndex >= 0 ? path.resolve(process.argv[outIndex + 1] ?? "") : packageDir;
if (outIndex >= 0 && !process.argv[outIndex + 1]) {
  console.error("usage: generate.mjs [--out DIR]");
  process.exit(2);
}

rmSync(path.join(outBase, "src", "gen"), { recursive: true, force: true });
const result = spawnSync(process.execPath, [bufBin, "generate", "--output", outBase], {
  cwd: packageDir,
  stdio: "inherit",
});
if (result.status !== 0) {
  console.error(`buf generate failed (status ${result.status ?? result.signal})`);
  process.exit(1);
}
