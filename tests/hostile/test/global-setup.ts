import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { bins } from "./support/processes.ts";
import type { Row } from "./support/results.ts";

const reportDir = path.resolve(import.meta.dirname, "../.tmp");
/** The table, also written here after every run. */
export const reportFile = path.join(reportDir, "hostile-report.md");

/** Refuses to run against missing binaries; collects the rows of every file and prints one table at the end. */
export default function setup(project: TestProject): () => void {
  for (const bin of Object.values(bins)) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run "pnpm turbo run build --filter=@meshtls/hostile-suite..." first`);
  }
  mkdirSync(reportDir, { recursive: true });
  const rowsFile = path.join(reportDir, `rows-${process.pid}.jsonl`);
  writeFileSync(rowsFile, "");
  project.provide("hostileResultsFile", rowsFile);
  return () => {
    const rows = existsSync(rowsFile) && statSync(rowsFile).size > 0
      ? readFileSync(rowsFile, "utf8").trim().split("\n").map((line) => JSON.parse(line) as Row)
      : [];
    rmSync(rowsFile, { force: true });
    const table = formatTable(rows);
    writeFileSync(reportFile, table);
    // Printed from the main process so it shows in CI output beside vitest's summary.
    process.stdout.write(`\n${table}\n(table written to ${reportFile})\n`);
  };
}

function formatTable(rows: Row[]): string {
  const header = ["listener", "attack", "result", "holds", "alive", "serving", "RSS delta"];
  const body = rows.map((r) => [
    r.listener,
    r.attack,
    r.result.replace(/\s+/g, " ").slice(0, 120),
    r.ok && r.alive && r.serving ? "yes" : `NO (expected ${r.expected})`,
    r.alive ? "yes" : "NO",
    r.serving ? "yes" : "NO",
    `${r.rssDeltaKiB >= 0 ? "+" : ""}${(r.rssDeltaKiB / 1024).toFixed(1)} MiB`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => (cells[i] ?? "").length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  const failed = rows.filter((r) => !(r.ok && r.alive && r.serving)).length;
  return [
    `# Hostile-client suite: ${rows.length} attacks, ${rows.length - failed} held, ${failed} did not`,
    "",
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...body.map(line),
    "",
  ].join("\n");
}
