import type { Duplex } from "node:stream";

/** How long the surviving side may flush after the other closed cleanly. */
const CLOSE_GRACE_MS = 10_000;

/** A stream forwardStreams joins: a socket, or any duplex (idle only by its own timers). */
export type Socketish = Duplex & { setNoDelay?: (noDelay?: boolean) => unknown; setTimeout?: (ms: number, cb?: () => void) => unknown; bytesRead?: number };

/** Idle checks per idle timeout: a connection is closed between 1 and 1.25 timeouts after its last byte. */
const IDLE_CHECKS_PER_TIMEOUT = 4;

/** Options of {@link forwardStreams}. */
export interface ForwardStreamsOptions {
  /**
   * Close both sides after this long without traffic either way (checked
   * every quarter of it, so within 1.25× of it). Default 3600000 (1 h); 0 disables.
   * Ignored with `idleSweep`, which has its own.
   */
  idleTimeoutMs?: number;
  /** The shared idle checks of the listener's connections ({@link createIdleSweep}); without it the pair gets a timer of its own. */
  idleSweep?: IdleSweep;
  /** Called once when both sides are gone. */
  onClose?: () => void;
}

/** Idle checks shared by many forwarded pairs: one interval, not one per connection. */
export interface IdleSweep {
  /** Closes the pair (`teardown`) once idle for the sweep's timeout; the returned function stops watching it. */
  watch(a: Socketish, b: Socketish, teardown: () => void): () => void;
  /** Pairs watched now. */
  size(): number;
}

interface Watched {
  a: Socketish;
  b: Socketish;
  teardown: () => void;
  /** Both sides' bytes read at the last check. */
  last: number;
  /** Checks in a row that saw no byte move (-1 until the first: a pair may join just before a check). */
  quiet: number;
}

/**
 * Creates the idle checks for every connection of a listener: one interval,
 * running only while a pair is watched, compares each pair's byte counts four
 * times per `idleTimeoutMs` and closes a pair between 1 and 1.25 timeouts
 * after its last byte (as {@link forwardStreams}' own timer does). A timer per
 * connection cost more per new connection than the check ever does.
 */
export function createIdleSweep(idleTimeoutMs: number): IdleSweep {
  const checkMs = Math.max(1, Math.ceil(idleTimeoutMs / IDLE_CHECKS_PER_TIMEOUT));
  const pairs = new Set<Watched>();
  let timer: NodeJS.Timeout | undefined;
  const check = (): void => {
    for (const pair of pairs) {
      const now = (pair.a.bytesRead ?? 0) + (pair.b.bytesRead ?? 0);
      pair.quiet = now === pair.last ? pair.quiet + 1 : 0;
      pair.last = now;
      if (pair.quiet >= IDLE_CHECKS_PER_TIMEOUT) {
        pairs.delete(pair);
        pair.teardown();
      }
    }
    if (pairs.size === 0) {
      clearInterval(timer);
      timer = undefined;
    }
  };
  return {
    watch(a, b, teardown) {
      const pair: Watched = { a, b, teardown, last: (a.bytesRead ?? 0) + (b.bytesRead ?? 0), quiet: -1 };
      pairs.add(pair);
      if (timer === undefined) {
        timer = setInterval(check, checkMs);
        timer.unref();
      }
      return () => {
        pairs.delete(pair);
      };
    },
    size: () => pairs.size,
  };
}

/**
 * Closes an idle connection without any per-chunk work: one timer per
 * connection compares the sockets' own byte counts a few times per timeout
 * (a socket's own `setTimeout` re-arms its timer on every read and write,
 * which costs about a tenth of the proxy's CPU per small request).
 */
function watchIdle(a: Socketish, b: Socketish, idleTimeoutMs: number, teardown: () => void): () => void {
  if (a.bytesRead === undefined || b.bytesRead === undefined) {
    // Not sockets: only their own timers can tell.
    a.setTimeout?.(idleTimeoutMs, teardown);
    b.setTimeout?.(idleTimeoutMs, teardown);
    return () => undefined;
  }
  const moved = (): number => (a.bytesRead ?? 0) + (b.bytesRead ?? 0);
  const checkMs = Math.max(1, Math.ceil(idleTimeoutMs / IDLE_CHECKS_PER_TIMEOUT));
  let last = moved();
  let quietMs = 0;
  const timer = setInterval(() => {
    const now = moved();
    quietMs = now === last ? quietMs + checkMs : 0;
    last = now;
    if (quietMs >= idleTimeoutMs) teardown();
  }, checkMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Joins two streams both ways with `pipe` (Node's own backpressure, no
 * per-chunk work here), propagating half-close, and tears both down when
 * either fails or the connection idles.
 */
export function forwardStreams(a: Socketish, b: Socketish, options: ForwardStreamsOptions = {}): void {
  const idleTimeoutMs = options.idleTimeoutMs ?? 3_600_000;
  let closed = 0;
  let grace: NodeJS.Timeout | undefined;
  const teardown = (): void => {
    a.destroy();
    b.destroy();
  };
  const stopIdle =
    options.idleSweep !== undefined && a.bytesRead !== undefined && b.bytesRead !== undefined
      ? options.idleSweep.watch(a, b, teardown)
      : idleTimeoutMs > 0
        ? watchIdle(a, b, idleTimeoutMs, teardown)
        : undefined;
  const onClose = (other: Socketish) => (hadError?: boolean): void => {
    closed += 1;
    if (closed === 2) {
      // The grace timer would hold both sockets (and what they point to) for its whole span.
      if (grace !== undefined) clearTimeout(grace);
      options.onClose?.();
      return;
    }
    stopIdle?.();
    // A clean close has already ended the other side through pipe; let it
    // flush what it holds, then make sure it goes. A failure takes both down.
    if (hadError === true) {
      other.destroy();
      return;
    }
    // Ending it again would only build an ERR_STREAM_ALREADY_FINISHED (a stack trace per connection).
    if (!other.writableEnded) other.end();
    grace = setTimeout(() => other.destroy(), CLOSE_GRACE_MS);
    grace.unref();
  };
  a.setNoDelay?.(true);
  b.setNoDelay?.(true);
  a.on("error", teardown);
  b.on("error", teardown);
  a.once("close", onClose(b));
  b.once("close", onClose(a));
  a.pipe(b);
  b.pipe(a);
}
