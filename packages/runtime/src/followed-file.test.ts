import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
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
});
