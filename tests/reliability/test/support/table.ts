// The suite's one table: case → requests sent, failed, longest failure window, RSS before/after.

export interface TableRow {
  case: string;
  sent: number;
  failed: number;
  longestFailureMs: number;
  rssBeforeKiB: number;
  rssAfterKiB: number;
  expected: string;
  holds: boolean;
  note: string;
}

const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;

export function formatTable(title: string, rows: readonly TableRow[]): string {
  const header = ["case", "sent", "failed", "longest failure window", "RSS before → after", "expected", "holds", "note"];
  const body = rows.map((r) => [
    r.case,
    String(r.sent),
    String(r.failed),
    r.longestFailureMs === 0 ? "0" : `${(r.longestFailureMs / 1000).toFixed(2)} s`,
    `${mib(r.rssBeforeKiB)} → ${mib(r.rssAfterKiB)}`,
    r.expected,
    r.holds ? "yes" : "NO",
    r.note.replace(/\s+/g, " ").slice(0, 240),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => (cells[i] ?? "").length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  const failed = rows.filter((r) => !r.holds).length;
  return [`# ${title}: ${rows.length} cases, ${rows.length - failed} held, ${failed} did not`, "", line(header), line(widths.map((w) => "-".repeat(w))), ...body.map(line), ""].join("\n");
}
