import v8 from "node:v8";

/**
 * V8's optimizing tiers (Sparkplug, Maglev, Turbofan) stay off while the proxy starts. Loading the bundle makes a
 * dozen functions hot (node's requireBuiltin and path checks among them), and optimizing them pages in Maglev's own
 * machine code from the node binary and grows a compiler thread's malloc arena: resident for the sidecar's whole
 * idle life, though start-up never runs again. They come back once the proxy is ready, so traffic is optimized as
 * before. About 0.8 MiB less idle RSS (apps/proxy/bench/idle-rss.mjs); not more, as any flag change costs V8's code
 * cache for the builtins loaded meanwhile (a flag hash mismatch). Maglev alone must not be turned off: V8 then sends
 * the same functions to Turbofan, 5.5 MiB more. Left alone when the operator names a tier in node's flags.
 */
const TIERS = ["sparkplug", "maglev", "turbofan"] as const;

function operatorChose(): boolean {
  const flags = [...process.execArgv, ...(process.env["NODE_OPTIONS"] ?? "").split(/\s+/)];
  return flags.some((flag) => TIERS.some((tier) => flag.includes(tier)));
}

export function pauseOptimizingTiers(): void {
  if (operatorChose()) return;
  for (const tier of TIERS) v8.setFlagsFromString(`--no-${tier}`);
}

export function resumeOptimizingTiers(): void {
  if (operatorChose()) return;
  for (const tier of TIERS) v8.setFlagsFromString(`--${tier}`);
}
