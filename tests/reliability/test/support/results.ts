// One row per fault case: the steady traffic's figures while it happened, and whether the promise held.
import { appendFileSync } from "node:fs";
import { expect, inject } from "vitest";
import type { TableRow } from "./table.ts";
import type { TrafficSummary } from "./traffic.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** JSON-lines file the rows are appended to; global-setup prints them as one table. */
    reliabilityResultsFile: string;
  }
}

/** A fault case's row: the table's columns (what had to hold in `expected`, failure results in `note`). */
export type Row = TableRow;

/** Writes the row (so failing rows reach the table too), then asserts that it holds. */
export function record(row: Omit<Row, "note"> & { note?: string }, summary?: TrafficSummary): void {
  const failures = summary === undefined ? "" : Object.entries(summary.failures).map(([result, n]) => `${n}× ${result}`).join(", ");
  const full: Row = { ...row, note: [failures, row.note].filter((s) => s !== undefined && s !== "").join("; ") };
  appendFileSync(inject("reliabilityResultsFile"), `${JSON.stringify(full)}\n`);
  expect(full.holds, `${full.case}: expected ${full.expected}; got ${full.failed}/${full.sent} failed, longest failure window ${full.longestFailureMs} ms; ${full.note}`).toBe(true);
}

/** A row's figures from a traffic summary. */
export const figures = (summary: TrafficSummary): Pick<Row, "sent" | "failed" | "longestFailureMs"> => ({
  sent: summary.sent,
  failed: summary.failed,
  longestFailureMs: summary.longestFailureMs,
});
