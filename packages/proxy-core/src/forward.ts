import type { Duplex } from "node:stream";
import tls from "node:tls";

/** How long the surviving side may flush after the other closed cleanly. */
const CLOSE_GRACE_MS = 10_000;

/** A stream forwardStreams joins: a socket, or any duplex (idle only by its own timers). */
export type Socketish = Duplex & { setNoDelay?: (noDelay?: boolean) => unknown; setTimeout?: (ms: number, cb?: () => void) => unknown; bytesRead?: number };

/** Idle checks per idle timeout: a connection is closed between 1 and 1.25 timeouts after its last byte. */
const IDLE_CHECKS_PER_TIMEOUT = 4;

/** The longest interval a timer takes (node runs a longer one every 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Options of {@link forwardStreams}. */
export interface ForwardStreamsOptions {
  /**
   * Close both sides after this long without traffic either way: between 1
   * and 1.25 times it after the last byte. Default 3600000 (1 h); 0 disables.
   * A value from configuration, never from a peer: each distinct value keeps
   * one idle sweep for the life of the process.
   */
  idleTimeoutMs?: number;
  /** Called once when both sides are gone. */
  onClose?: () => void;
  /**
   * `b` was dialled with this reader's `onread` ({@link createDirectRead}):
   * what it reads goes straight into `a`, without a Readable per chunk.
   */
  bRead?: DirectRead;
}

/**
 * Reads of a socket the proxy dials and forwards as bytes, handed straight to
 * a callback (node's `onread`) instead of through a `Readable` and `pipe`:
 * no stream bookkeeping, `nextTick` or `Buffer` per chunk on that leg.
 */
export interface DirectRead {
  /** Give to `net.connect` or `tls.connect` (without `socket`) as `onread`. */
  readonly onread: { buffer: () => Uint8Array; callback: (bytes: number, buffer: Uint8Array) => boolean };
  /**
   * From now on writes what `from` reads into `to`, what it read before
   * first, ends `to` when `from` ends, and pauses `from` while `to` is full.
   * A `from` not dialled with `onread` is piped instead.
   */
  attach(from: Socketish, to: Socketish): void;
}

/**
 * The one buffer every direct read of the process lands in. It is never held
 * past the read's callback: a chunk is written from it only when the write
 * takes the bytes at once (TLS, which encrypts them, with nothing queued);
 * otherwise a copy is written (from node's pooled small buffers).
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** Most bytes kept from a dialled socket before the join; then its reads wait for it (a peer cannot grow it). */
const MAX_EARLY_BYTES = 256 * 1024;

/** Creates the direct reads of one dialled socket ({@link DirectRead}). */
export function createDirectRead(): DirectRead {
  let used = false;
  let from: Socketish | undefined;
  let to: Socketish | undefined;
  // Bytes read before `attach` (a server that speaks first), copied.
  let early: Buffer[] = [];
  let earlyBytes = 0;
  const resume = (): void => {
    from?.resume();
  };
  const write = (chunk: Uint8Array): boolean => {
    const sink = to as Socketish;
    if (sink.destroyed || sink.writableEnded) return false;
    // Written from the shared buffer only if consumed before write returns: TLS copies cleartext into its
    // record at once unless a write is queued; a TCP write may keep the bytes until the kernel takes them.
    const atOnce = sink instanceof tls.TLSSocket && sink.writableLength === 0 && !sink.connecting && sink.writableCorked === 0;
    const ok = sink.write(atOnce ? chunk : Buffer.from(chunk));
    if (!ok) sink.once("drain", resume);
    return ok;
  };
  return {
    onread: {
      buffer: () => {
        used = true;
        return READ_BUFFER;
      },
      callback: (bytes, buffer) => {
        const chunk = buffer.subarray(0, bytes);
        if (to === undefined) {
          early.push(Buffer.from(chunk));
          earlyBytes += bytes;
          return earlyBytes < MAX_EARLY_BYTES;
        }
        return write(chunk);
      },
    },
    attach(source, sink) {
      if (!used) {
        source.pipe(sink);
        return;
      }
      from = source;
      to = sink;
      for (const chunk of early) sink.write(chunk);
      early = [];
      if (earlyBytes >= MAX_EARLY_BYTES) source.resume();
      if (source.readableEnded) sink.end();
      else source.once("end", () => sink.end());
    },
  };
}

/** Idle checks shared by every forwarded socket pair with one idle timeout: one interval, not one per connection. */
interface IdleSweep {
  /** Closes the pair (`teardown`) once idle for the sweep's timeout; the returned function stops watching it. */
  watch(a: Socketish, b: Socketish, teardown: () => void): () => void;
  /** Pairs watched now. */
  size(): number;
  /** Whether its interval runs (only while it watches a pair). */
  running(): boolean;
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
 * One interval, running only while a pair is watched, compares each pair's
 * byte counts about four times per `idleTimeoutMs` and closes a pair between 1
 * and 1.25 timeouts after its last byte. Byte counts, not a socket's own
 * `setTimeout`, which re-arms a timer on every read and write (about a tenth
 * of the proxy's CPU per small request); one interval, not one per
 * connection, which cost more per new connection than the check ever does.
 */
function createIdleSweep(idleTimeoutMs: number): IdleSweep {
  // More checks for a timeout whose quarter a timer cannot take (beyond 99 days), so that the bounds hold.
  const checks = Math.max(IDLE_CHECKS_PER_TIMEOUT, Math.ceil(idleTimeoutMs / MAX_TIMER_MS));
  const checkMs = Math.max(1, Math.ceil(idleTimeoutMs / checks));
  const quietChecks = Math.ceil(idleTimeoutMs / checkMs);
  const pairs = new Set<Watched>();
  let timer: NodeJS.Timeout | undefined;
  const check = (): void => {
    for (const pair of pairs) {
      const now = (pair.a.bytesRead ?? 0) + (pair.b.bytesRead ?? 0);
      pair.quiet = now === pair.last ? pair.quiet + 1 : 0;
      pair.last = now;
      if (pair.quiet >= quietChecks) {
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
    running: () => timer !== undefined,
  };
}

/**
 * The idle sweeps of the process, one per idle timeout. Module-level so that
 * every caller of {@link forwardStreams} (inbound, routes, the transparent
 * listener, CONNECT tunnels, upgrades) shares one interval per timeout
 * without passing a sweep around; timeouts come from configuration, so the
 * map holds a handful. An empty sweep stays, its interval stopped.
 */
const sweeps = new Map<number, IdleSweep>();

function idleSweepFor(idleTimeoutMs: number): IdleSweep {
  let sweep = sweeps.get(idleTimeoutMs);
  if (sweep === undefined) {
    sweep = createIdleSweep(idleTimeoutMs);
    sweeps.set(idleTimeoutMs, sweep);
  }
  return sweep;
}

/** The shared idle sweeps now, for tests: each one's timeout, pairs watched and whether its interval runs. */
export function idleSweeps(): { idleTimeoutMs: number; pairs: number; running: boolean }[] {
  return [...sweeps].map(([idleTimeoutMs, sweep]) => ({ idleTimeoutMs, pairs: sweep.size(), running: sweep.running() }));
}

/** Starts closing the pair once idle for `idleTimeoutMs`; the returned function stops it. */
function watchIdle(a: Socketish, b: Socketish, idleTimeoutMs: number, teardown: () => void): () => void {
  if (a.bytesRead === undefined || b.bytesRead === undefined) {
    // Not sockets: only their own timers can tell (which take at most 24.8 days).
    a.setTimeout?.(Math.min(idleTimeoutMs, MAX_TIMER_MS), teardown);
    b.setTimeout?.(Math.min(idleTimeoutMs, MAX_TIMER_MS), teardown);
    return () => undefined;
  }
  return idleSweepFor(idleTimeoutMs).watch(a, b, teardown);
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
  const stopIdle = idleTimeoutMs > 0 ? watchIdle(a, b, idleTimeoutMs, teardown) : undefined;
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
  if (options.bRead === undefined) b.pipe(a);
  else options.bRead.attach(b, a);
}
