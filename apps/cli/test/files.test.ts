import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliError } from "../src/errors.ts";
import { readInputFile, writeFilesAtomically } from "../src/files.ts";
import { makeTempDir } from "./helpers.ts";

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
});
afterAll(async () => {
  await cleanup();
});

describe("writeFilesAtomically", () => {
  it("writes with exact modes, creating the folder", async () => {
    const out = path.join(dir, "a", "b");
    await writeFilesAtomically({ dir: out, files: [{ name: "k", contents: "secret", mode: 0o600 }, { name: "c", contents: "public", mode: 0o644 }] });
    expect((await stat(path.join(out, "k"))).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(out, "c"))).mode & 0o777).toBe(0o644);
    expect(await readFile(path.join(out, "k"), "utf8")).toBe("secret");
    expect((await readdir(out)).sort()).toEqual(["c", "k"]);
  });

  it("fails with ERR_IO and leaves no temporary file when the target cannot be replaced", async () => {
    const out = path.join(dir, "blocked");
    await mkdir(path.join(out, "k"), { recursive: true }); // a directory where the file should go
    const error = await writeFilesAtomically({ dir: out, force: true, files: [{ name: "k", contents: "x", mode: 0o600 }] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).code).toBe("ERR_IO");
    expect(await readdir(out)).toEqual(["k"]);
  });

  it("fails with ERR_IO when the folder is a file", async () => {
    const file = path.join(dir, "plain");
    await writeFile(file, "");
    await expect(writeFilesAtomically({ dir: file, files: [{ name: "k", contents: "x", mode: 0o600 }] })).rejects.toMatchObject({ code: "ERR_IO" });
  });
});

describe("readInputFile", () => {
  it("refuses files over 1 MiB with ERR_INPUT", async () => {
    const big = path.join(dir, "big");
    await writeFile(big, Buffer.alloc(1024 * 1024 + 1));
    await expect(readInputFile(big, "file")).rejects.toMatchObject({ code: "ERR_INPUT" });
  });
});
