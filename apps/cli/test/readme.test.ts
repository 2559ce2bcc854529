import { chmod, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { appRoot, cliBin, makeTempDir, run } from "./helpers.ts";

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
});
afterAll(async () => {
  await cleanup();
});

it("the README's opening example runs as written", async () => {
  const readme = await readFile(path.join(appRoot, "README.md"), "utf8");
  const script = /```sh\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(script).toBeDefined();
  // `meshtls` on PATH is the built binary, as after `npm i -g` or `pnpm link`.
  const binDir = path.join(dir, "bin");
  const work = path.join(dir, "work");
  await run("mkdir", ["-p", binDir, work]);
  await writeFile(path.join(binDir, "meshtls"), `#!/bin/sh\nexec "${process.execPath}" "${cliBin}" "$@"\n`);
  await chmod(path.join(binDir, "meshtls"), 0o755);
  // No BASH_ENV: a startup file of the machine must not run inside the example.
  const { BASH_ENV: _bashEnv, ENV: _env, ...env } = process.env;
  const result = await run("bash", ["--noprofile", "--norc", "-euo", "pipefail", "-c", script!], {
    cwd: work,
    env: { ...env, PATH: `${binDir}:${process.env.PATH ?? ""}` },
    timeoutMs: 30_000,
  });
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/issuer\.crt: certificate/);
  expect(result.stdout).toMatch(/Subject: +CN=identity\.meshtls\.cluster\.local/);
  expect(result.stdout.trim().split("\n").at(-1)).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+$/);
});
