import v8 from "node:v8";

/**
 * How far V8 lets the old generation grow past what the last full collection
 * kept, once the proxy is ready: the limit is live × (1 + this / 100).
 *
 * Why the proxy sets it: V8 counts the external memory allocated since the last
 * full collection (every Buffer a socket read makes) against that limit, and
 * after an idle spell its memory reducer switches the heap to slow growth
 * (a factor of at most 1.3, at least 8 MiB). A proxy moving bytes allocates a
 * Buffer per read, so with ~10 MiB live it then ran a full mark-compact for
 * every few MiB in flight: 45 per 256 MiB through the opaque pair where the
 * naive node:tls pair (half the live heap) ran 4–8, and a third more CPU per
 * MiB (apps/proxy/bench, `full GCs` column). At 400 the count falls to ~12.
 * It only moves the point at which a loaded proxy collects: an idle proxy's
 * heap is what it keeps (the memory reducer still shrinks it when traffic
 * stops), and the heap's own maximum is unchanged.
 */
export const HEAP_GROWING_PERCENT = 400;

/** Left alone when the operator set it in node's flags (NODE_OPTIONS or the command line). */
export function setDataPathHeapGrowth(): void {
  const flags = [...process.execArgv, ...(process.env["NODE_OPTIONS"] ?? "").split(/\s+/)];
  if (flags.some((flag) => flag.includes("heap-growing-percent"))) return;
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
