import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { bins } from "@meshtls/hostile-suite/test/support/processes.ts";
import type { Row } from "./support/results.ts";
import { formatTable } from "./support/table.ts";

const reportDir = path.resolve(import.meta.dirname, "../.tmp");
/** The table, also written here after every run. */
export const reportFile = path.join(reportDir, "faults-report.md");

/** Refuses to run against missing binaries; collects the rows of every file and prints one table at the end. */
export default function setup(project: TestProject): () => void {
  for (const bin of Object.values(bins)) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run "pnpm turbo run build --filter=@meshtls/reliability-suite..." first`);
  }
  mkdirSync(reportDir, { recursive: true });
  const rowsFile = path.join(reportDir, `rows-${process.pid}.jsonl`);
  writeFileSync(rowsFile, "");
  project.provide("reliabilityResultsFile", rowsFile);
  return () => {
    const rows = existsSync(rowsFile) && statSync(rowsFile).size > 0 ? readFileSync(rowsFile, "utf8").trim().split("\n").map((line) => JSON.parse(line) as Row) : [];
    rmSync(rowsFile, { force: true });
    const table = formatTable("Reliability suite", rows);
    writeFileSync(reportFile, table);
    // Printed from the main process so it shows in CI output beside vitest's summary.
    process.stdout.write(`\n${table}\n(table written to ${reportFile})\n`);
  };
}
