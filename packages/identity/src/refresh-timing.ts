/** Refresh timing: 70 % of the remaining lifetime, clamped. */
export const REFRESH_FRACTION = 0.7;
export const MIN_REFRESH_MS = 10_000;
export const MAX_REFRESH_MS = 24 * 60 * 60 * 1000;

/**
 * The delay until the next refresh: 70 % of the remaining lifetime, clamped
 * to [10 s, 24 h], and never later than the moment of expiry (for lifetimes
 * under 10 s the lower clamp would otherwise let the certificate lapse).
 */
export function refreshDelayMs(options: { notAfter: Date; now: Date }): number {
  const remaining = options.notAfter.getTime() - options.now.getTime();
  if (remaining <= 0) return 0;
  const clamped = Math.min(Math.max(remaining * REFRESH_FRACTION, MIN_REFRESH_MS), MAX_REFRESH_MS);
  return clamped < remaining ? clamped : remaining * REFRESH_FRACTION;
}

/** Exponential backoff with jitter: `initialMs * 2^attempt`, capped at `maxMs`, minus up to `jitter` of itself. */
export function backoffDelayMs(options: { attempt: number; initialMs: number; maxMs: number; jitter: number; random: () => number }): number {
  const base = Math.min(options.maxMs, options.initialMs * 2 ** Math.min(options.attempt, 30));
  return Math.max(0, base * (1 - options.jitter * options.random()));
}
