import type { Duplex } from "node:stream";

/** How long the surviving side may flush after the other closed cleanly. */
const CLOSE_GRACE_MS = 10_000;

type Socketish = Duplex & { setNoDelay?: (noDelay?: boolean) => unknown; setTimeout?: (ms: number, cb?: () => void) => unknown };

/** Options of {@link forwardStreams}. */
export interface ForwardStreamsOptions {
  /** Close both sides after this long without traffic either way. Default 3600000 (1 h); 0 disables. */
  idleTimeoutMs?: number;
  /** Called once when both sides are gone. */
  onClose?: () => void;
}

/**
 * Joins two streams both ways with `pipe` (Node's own backpressure, no
 * per-chunk work here), propagating half-close, and tears both down when
 * either fails or the connection idles.
 */
export function forwardStreams(a: Socketish, b: Socketish, options: ForwardStreamsOptions = {}): void {
  const idleTimeoutMs = options.idleTimeoutMs ?? 3_600_000;
  let closed = 0;
  const teardown = (): void => {
    a.destroy();
    b.destroy();
  };
  const onClose = (other: Socketish) => (hadError?: boolean): void => {
    closed += 1;
    if (closed === 2) {
      options.onClose?.();
      return;
    }
    // A clean close has already ended the other side through pipe; let it
    // flush what it holds, then make sure it goes. A failure takes both down.
    if (hadError === true) {
      other.destroy();
      return;
    }
    other.end();
    setTimeout(() => other.destroy(), CLOSE_GRACE_MS).unref();
  };
  for (const s of [a, b]) {
    s.setNoDelay?.(true);
    if (idleTimeoutMs > 0) s.setTimeout?.(idleTimeoutMs, teardown);
    s.on("error", teardown);
  }
  a.once("close", onClose(b));
  b.once("close", onClose(a));
  a.pipe(b);
  b.pipe(a);
}
