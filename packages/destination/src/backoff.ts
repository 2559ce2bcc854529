/** The reconnect schedule's defaults: 1 s doubling to 30 s, each delay shortened by a random 0–20 %. */
export const RECONNECT_BACKOFF = { initialMs: 1000, maxMs: 30_000, multiplier: 2, jitter: 0.2 } as const;

/**
 * The delay before retry number `attempt` (0 for the first after a healthy
 * stream): `initialMs × multiplier^attempt`, capped at `maxMs`, minus a random
 * 0..`jitter` of itself, so that retries spread out and never wait past the cap.
 */
export function reconnectDelayMs(options: { attempt: number; initialMs: number; maxMs: number; multiplier: number; jitter: number; random: () => number }): number {
  const base = Math.min(options.maxMs, options.initialMs * options.multiplier ** Math.min(options.attempt, 64));
  return Math.max(0, Math.round(base * (1 - options.jitter * options.random())));
}
