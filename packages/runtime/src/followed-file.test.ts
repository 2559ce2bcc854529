import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createFollowedFile, FileRefused } from "./followed-file.ts";
import type { FileRefusal, FollowedFileResult } from "./followed-file.ts";

const quiet = { info() {}, warn() {}, error() {}, debug() {} };

describe("createFollowedFile", () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  function follow(text: string, pollIntervalMs = 0) {
    const dir = mkdtempSync(path.join(tmpdir(), "meshtls-followed-"));
    const file = path.join(dir, "value.txt");
    writeFileSync(file, text);
    const refusals: FileRefusal<number, "unreadable" | "too_large" | "not_a_number">[] = [];
    const checks: FollowedFileResult<number, string>["result"][] = [];
    const followed = createFollowedFile<number, "unreadable" | "too_large" | "not_a_number">({
      file,
      what: "value",
      noun: "value",
      maxBytes: 16,
      pollIntervalMs,
      parse: (bytes) => {
        const n = Number(bytes.toString("utf8"));
        if (!Number.isFinite(n)) throw new FileRefused("not_a_number", "not a number");
        return n;
      },
      otherRejection: "not_a_number",
      describe: (n) => ({ n }),
      size: () => 1,
      logRefusal: (refusal) => refusals.push(refusal),
      onCheck: (result) => checks.push(result.result),
      logger: quiet,
    });
    cleanups.push(() => followed.close(), () => rmSync(dir, { recursive: true, force: true }));
    return { file, followed, refusals, checks };
  }

  it("a refused content read again stays refused and is reported once; back to the content in use is unchanged", async () => {
    const { file, followed, refusals, checks } = follow("1");
    expect(await followed.start()).toEqual({ result: "loaded", value: 1 });
    writeFileSync(file, "x");
    expect(await followed.reload()).toMatchObject({ result: "rejected", rejection: "not_a_number" });
    expect(await followed.reload()).toMatchObject({ result: "rejected", rejection: "not_a_number" });
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatchObject({ rejection: "not_a_number", current: 1 });
    writeFileSync(file, "x".repeat(17));
    expect(await followed.reload()).toMatchObject({ result: "rejected", rejection: "too_large" });
    writeFileSync(file, "1");
    expect(await followed.reload()).toEqual({ result: "unchanged" });
    expect(followed.current()).toBe(1);
    expect(checks).toEqual(["loaded", "rejected", "rejected", "rejected", "unchanged"]);
  });

  it("polls every pollIntervalMs; 0 leaves only file events", async () => {
    const polled = follow("1", 50);
    await polled.followed.start();
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(polled.checks.length).toBeGreaterThan(2);
    const eventsOnly = follow("1", 0);
    await eventsOnly.followed.start();
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(eventsOnly.checks).toEqual(["loaded"]);
  });

  it("reads up to the bound exactly (a file at maxBytes loads, one byte more is too_large); a missing file is unreadable", async () => {
    const { file, followed, refusals } = follow("1".padStart(16, "0"));
    expect(await followed.start()).toEqual({ result: "loaded", value: 1 });
    writeFileSync(file, "2".padStart(17, "0"));
    expect(await followed.reload()).toMatchObject({ result: "rejected", rejection: "too_large" });
    unlinkSync(file);
    expect(await followed.reload()).toMatchObject({ result: "rejected", rejection: "unreadable" });
    expect(refusals.map((r) => r.rejection)).toEqual(["too_large", "unreadable"]);
    expect(followed.current()).toBe(1);
  });

  it("reads without libuv's thread pool: a process that only follows a file starts no libuv-worker thread", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "meshtls-followed-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, "big.txt");
    // Larger than one 16 KiB piece, so the read loops.
    writeFileSync(file, "x".repeat(40_000));
    const script = `
      import { readdirSync, readFileSync } from "node:fs";
      const { createFollowedFile } = await import(${JSON.stringify(new URL("./followed-file.ts", import.meta.url).href)});
      const logger = { info() {}, warn() {}, error() {}, debug() {} };
      const followed = createFollowedFile({ file: ${JSON.stringify(file)}, what: "big", noun: "file", maxBytes: 1 << 20, pollIntervalMs: 20,
        parse: (bytes) => bytes.length, otherRejection: "bad", describe: () => ({}), size: () => 1, logger });
      const first = await followed.start();
      await new Promise((resolve) => setTimeout(resolve, 200));
      await followed.reload();
      followed.close();
      const threads = readdirSync("/proc/self/task").map((t) => readFileSync("/proc/self/task/" + t + "/comm", "utf8").trim());
      console.log(JSON.stringify({ first, threads }));
    `;
    // --experimental-transform-types: FileRefused has parameter properties, which plain type stripping refuses.
    const out = JSON.parse(execFileSync(process.execPath, ["--experimental-transform-types", "--no-warnings", "--input-type=module", "-e", script], { encoding: "utf8" }));
    expect(out.first).toEqual({ result: "loaded", value: 40_000 });
    expect(out.threads).toContain("MainThread");
    expect(out.threads).not.toContain("libuv-worker");
  });
});
