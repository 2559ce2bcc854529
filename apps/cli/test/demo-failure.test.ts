import { mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runDemo } from "../src/commands/demo.ts";
import { CliError } from "../src/errors.ts";
import { createMemoryOutput } from "../src/output.ts";
import { makeTempDir } from "./helpers.ts";
import { alive, testBinaries } from "./mesh-helpers.ts";

describe("meshtls demo when a component fails to start", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
  });
  afterAll(async () => {
    await cleanup();
  });

  it("the real proxy refusing its configuration: ERR_MESH naming it with its last log lines; nothing left behind", async () => {
    // The real meshtls-proxy, given an inbound address it must refuse (the last flag wins).
    const real = testBinaries().proxy;
    const wrapper = path.join(dir, "broken-proxy.mjs");
    await writeFile(wrapper, `process.argv.push("--inbound", "not-an-address");\nawait import(${JSON.stringify(real)});\n`);
    const parent = path.join(dir, "tmp");
    await mkdir(parent);
    const output = createMemoryOutput();
    const error = await runDemo({ tty: false, durationMs: 5_000, tmpDir: parent, binaries: { ...testBinaries(), proxy: wrapper } }, output).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).code).toBe("ERR_MESH");
    expect((error as CliError).message).toMatch(/^api proxy exited \(2\) before reporting that it is listening; its last output:\n.*meshtls-proxy: --inbound: "not-an-address" is not host:port/);
    const pids = output.stdout.join("\n").matchAll(/started .+? \(pid (\d+)\)/g);
    const started = [...pids].map((m) => Number(m[1]));
    expect(started.length).toBe(3); // identity, destination, api's proxy
    expect(started.filter(alive)).toEqual([]);
    expect(await readdir(parent)).toEqual([]);
  }, 90_000);
});
