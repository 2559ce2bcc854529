import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function listFiles(dir: string, prefix = ""): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((entry) =>
      entry.isDirectory() ? listFiles(path.join(dir, entry.name), `${prefix}${entry.name}/`) : [`${prefix}${entry.name}`],
    )
    .sort();
}

describe("generated code", () => {
  const outDir = mkdtempSync(path.join(tmpdir(), "meshtls-api-gen-"));
  afterAll(() => rmSync(outDir, { recursive: true, force: true }));

  it("is what scripts/generate.mjs produces from proto/ (src/gen is not stale)", () => {
    const result = spawnSync(process.execPath, [path.join(packageDir, "scripts", "generate.mjs"), "--out", outDir], {
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(result.status, result.stderr).toBe(0);
    const committed = path.join(packageDir, "src", "gen");
    const fresh = path.join(outDir, "src", "gen");
    expect(listFiles(fresh)).toEqual(listFiles(committed));
    for (const file of listFiles(fresh)) {
      expect(readFileSync(path.join(committed, file), "utf8"), `src/gen/${file} is stale: run pnpm generate`).toBe(
        readFileSync(path.join(fresh, file), "utf8"),
      );
    }
  });
});
