import { startDashboard } from "../mesh/dashboard-server.ts";
import type { Output } from "../output.ts";
import { resolveEdgeSources, type EdgeSourceOptions } from "./edges.ts";

export interface DashboardOptions extends EdgeSourceOptions {
  listen: string;
  intervalMs: number;
  timeoutMs?: number;
  /** Aborting stops the server (the CLI aborts on SIGINT and SIGTERM). */
  signal: AbortSignal;
}

/** `meshtls dashboard`: serves the live view until `signal` aborts; prints its URL (and a `listening` JSON line for scripts). */
export async function runDashboard(options: DashboardOptions, output: Output): Promise<void> {
  const { admins, registry } = await resolveEdgeSources(options);
  const dashboard = await startDashboard({ listen: options.listen, admins, registry, intervalMs: options.intervalMs, ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) });
  output.out(`meshtls dashboard: ${dashboard.url} (${admins.length} prox${admins.length === 1 ? "y" : "ies"}, every ${options.intervalMs} ms; Ctrl-C to stop)`);
  output.err(JSON.stringify({ msg: "listening", url: dashboard.url, address: dashboard.address }));
  if (!options.signal.aborted) await new Promise((resolve) => options.signal.addEventListener("abort", resolve, { once: true }));
  await dashboard.close();
}
