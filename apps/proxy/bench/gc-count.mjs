/* global process */
// Preloaded (`node --import ./gc-count.mjs …`) into every Node process of the
// proxy bench, meshtls and the naive pair alike: counts V8's collections by
// kind from perf_hooks 'gc' entries and, on SIGUSR2, writes one line
// `{"benchGc":{"major":N,"minor":N,"incremental":N,"weak":N}}` to stderr.
// `major` is a full mark-compact (what `--trace-gc` prints as Mark-Compact).
import { constants, PerformanceObserver } from "node:perf_hooks";

const counts = { major: 0, minor: 0, incremental: 0, weak: 0 };
const kinds = {
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weak",
};
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const kind = kinds[entry.detail?.kind];
    if (kind !== undefined) counts[kind] += 1;
  }
}).observe({ entryTypes: ["gc"] });
process.on("SIGUSR2", () => process.stderr.write(`${JSON.stringify({ benchGc: counts })}\n`));
