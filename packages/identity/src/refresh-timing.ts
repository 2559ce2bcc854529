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

/** A retry waits at most this share of the time left before the current certificate expires. */
export const RETRY_SHARE_OF_REMAINING = 0.25;

/**
 * Exponential backoff with jitter: `initialMs * 2^attempt`, capped at `maxMs`, minus up to `jitter` of itself. With
 * the current certificate's `notAfter` (and `now`), also at most a quarter of the time it has left, but never under
 * `initialMs`: as the end nears, retries come closer together instead of one landing after the expiry (with 30 s
 * leaves, a refresh at 21 s failing while identity restarts would otherwise retry at 22, 24, 28 and 36 s).
 */
export function backoffDelayMs(options: { attempt: number; initialMs: number; maxMs: number; jitter: number; random: () => number; notAfter?: Date; now?: Date }): number {
  let base = Math.min(options.maxMs, options.initialMs * 2 ** Math.min(options.attempt, 30));
  if (options.notAfter !== undefined && options.now !== undefined) {
    const remaining = options.notAfter.getTime() - options.now.getTime();
    if (remaining > 0) base = Math.min(base, Math.max(options.initialMs, remaining * RETRY_SHARE_OF_REMAINING));
  }
  return Math.max(0, base * (1 - options.jitter * options.random()));
}
