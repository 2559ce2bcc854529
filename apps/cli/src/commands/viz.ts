import { startViz } from "../mesh/viz-server.ts";
import type { Output } from "../output.ts";
import { resolveEdgeSources, type EdgeSourceOptions } from "./edges.ts";

export interface VizOptions extends EdgeSourceOptions {
  listen: string;
  intervalMs: number;
  timeoutMs?: number;
  /** Aborting stops the server (the CLI aborts on SIGINT and SIGTERM). */
  signal: AbortSignal;
}

/** `meshtls viz` (alias `dashboard`): serves the live view until `signal` aborts; prints its URL (and a `listening` JSON line for scripts). */
export async function runViz(options: VizOptions, output: Output): Promise<void> {
  const { admins, registry } = await resolveEdgeSources(options);
  const viz = await startViz({ listen: options.listen, admins, registry, intervalMs: options.intervalMs, ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) });
  output.out(`meshtls viz: ${viz.url} (${admins.length} prox${admins.length === 1 ? "y" : "ies"}, every ${options.intervalMs} ms; Ctrl-C to stop)`);
  output.err(JSON.stringify({ msg: "listening", url: viz.url, address: viz.address }));
  if (!options.signal.aborted) await new Promise((resolve) => options.signal.addEventListener("abort", resolve, { once: true }));
  await viz.close();
}
