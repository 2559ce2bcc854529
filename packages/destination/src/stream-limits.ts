import { DestinationError } from "./errors.js";

/** Why a stream was refused: every slot is taken, or the peer holds its share. */
export type StreamRefusal = "max_streams" | "max_streams_per_peer";

/** Open-stream accounting shared by the Get and the policy servers: a cap in all and a share per peer. */
export interface StreamLimits {
  /** Takes a slot for `peer` (see `peerOf`); `release` is idempotent. */
  acquire(peer: string): { ok: true; release(): void } | { ok: false; reason: StreamRefusal };
  /** Open streams in all. */
  open(): number;
  /** Open streams of one peer. */
  peerStreams(peer: string): number;
}

/**
 * Creates the accounting of `maxStreams` slots of which one peer may hold `maxStreamsPerPeer`.
 * @throws DestinationError `ERR_CONFIG_INVALID` when a cap is below 1
 */
export function createStreamLimits(options: { maxStreams: number; maxStreamsPerPeer: number }): StreamLimits {
  const { maxStreams, maxStreamsPerPeer } = options;
  for (const [name, value] of [["maxStreams", maxStreams], ["maxStreamsPerPeer", maxStreamsPerPeer]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw new DestinationError("ERR_CONFIG_INVALID", `${name} must be a whole number ≥ 1 (got ${String(value)})`);
  }
  let count = 0;
  const byPeer = new Map<string, number>();
  return {
    acquire(peer) {
      if (count >= maxStreams) return { ok: false, reason: "max_streams" };
      const held = byPeer.get(peer) ?? 0;
      if (held >= maxStreamsPerPeer) return { ok: false, reason: "max_streams_per_peer" };
      count++;
      byPeer.set(peer, held + 1);
      let released = false;
      return {
        ok: true,
        release() {
          if (released) return;
          released = true;
          count--;
          const left = (byPeer.get(peer) ?? 1) - 1;
          if (left === 0) byPeer.delete(peer);
          else byPeer.set(peer, left);
        },
      };
    },
    open: () => count,
    peerStreams: (peer) => byPeer.get(peer) ?? 0,
  };
}
