import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import path from "node:path";
import type { Counter } from "prom-client";
import { createFolderReloader } from "./folder-reloader.ts";
import type { Logger } from "./logger.ts";

/** Why a followed file's content was refused; `rejection` is the `reason` label of its rejected counter. */
export class FileRefused<R extends string> extends Error {
  constructor(
    readonly rejection: R,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The outcome of one content check of a followed file. */
export type FollowedFileResult<T, R extends string> =
  | { result: "loaded"; value: T }
  | { result: "unchanged" }
  | { result: "rejected"; rejection: R; reason: string };

/** A refused content as {@link FollowedFileOptions.logRefusal} sees it. */
export interface FileRefusal<T, R extends string> {
  rejection: R;
  reason: string;
  /** What was thrown: a {@link FileRefused} (unreadable, too large), or what `parse` threw. */
  error: unknown;
  /** The content still in use; undefined when nothing was ever loaded. */
  current: T | undefined;
}

/** Options of {@link createFollowedFile}. */
export interface FollowedFileOptions<T, R extends string> {
  file: string;
  /** What the file holds, for log lines ("trust anchors", "token JWKS"). */
  what: string;
  /** What one loaded content is called in log lines ("bundle", "set"). */
  noun: string;
  /** Largest file accepted, in bytes; a larger one is refused as `too_large` without being read whole. */
  maxBytes: number;
  /** The periodic content check, in milliseconds; 0 turns it off. Default `FOLLOW_DEFAULTS.pollIntervalMs` (5000). */
  pollIntervalMs?: number | undefined;
  /** Quiet time after a file event before the check, in milliseconds. Default `FOLLOW_DEFAULTS.settleMs` (100). */
  settleMs?: number | undefined;
  /** Validates the content; throws {@link FileRefused} to refuse it. */
  parse: (bytes: Buffer) => T;
  /** The rejection counted for any other error thrown by `parse`. */
  otherRejection: R;
  /** Log fields describing a loaded content. */
  describe: (value: T) => Record<string, unknown>;
  /** The size of a content (`keeping` in the refusal log line). */
  size: (value: T) => number;
  /** Counts loaded contents. */
  loaded?: Counter | undefined;
  /** Counts refusals by `reason` (the rejection), once per distinct content. */
  rejected?: Counter<"reason"> | undefined;
  /**
   * Logs a refusal, once per distinct content (or unreadable reason). Default: a warn line
   * `<what> refused`, or `<what> replacement refused; keeping the current <noun>`.
   */
  logRefusal?: ((refusal: FileRefusal<T, R>) => void) | undefined;
  /** Called after every check, periodic ones included, with its outcome. */
  onCheck?: ((result: FollowedFileResult<T, R>) => void) | undefined;
  logger: Logger;
}

/** A file's validated content, followed at start, on file events and periodically. */
export interface FollowedFile<T, R extends string> {
  /** The content in use; undefined before the first successful load. */
  current(): T | undefined;
  reload(): Promise<FollowedFileResult<T, R>>;
  start(): Promise<FollowedFileResult<T, R>>;
  subscribe(listener: (value: T) => void): () => void;
  close(): void;
}

const READ_PIECE_BYTES = 16 * 1024;

/**
 * Reads a followed file synchronously: its bound is small (a few KiB in practice, 1 MiB at most) and an async read
 * would start libuv's thread pool, four threads an idle proxy would keep (their stacks and malloc arenas) for one
 * read every few seconds.
 */
function readBounded(file: string, maxBytes: number): Buffer {
  let fd;
  try {
    fd = openSync(file, "r");
  } catch (error) {
    throw new FileRefused("unreadable", `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  try {
    // In pieces, not one buffer of the bound: a poll every few seconds allocating maxBytes (1 MiB for trust
    // anchors) kept MiBs of an idle proxy resident until the next GC. One byte more than allowed tells
    // "at the limit" from "over it" without reading a hostile file whole.
    const pieces: Buffer[] = [];
    let length = 0;
    for (;;) {
      const piece = Buffer.alloc(Math.min(READ_PIECE_BYTES, maxBytes + 1 - length));
      const bytesRead = readSync(fd, piece, 0, piece.length, null);
      if (bytesRead === 0) break;
      pieces.push(piece.subarray(0, bytesRead));
      length += bytesRead;
      if (length > maxBytes) throw new FileRefused("too_large", `${file} is larger than ${maxBytes} bytes`);
    }
    return Buffer.concat(pieces, length);
  } catch (error) {
    if (error instanceof FileRefused) throw error;
    throw new FileRefused("unreadable", `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  } finally {
    closeSync(fd);
  }
}

/**
 * Loads a file and follows its content: a changed content (by SHA-256) that
 * `parse` accepts replaces the current one and is announced to subscribers;
 * a file that cannot be read, is oversized or is refused by `parse` never
 * replaces it, and the reason is logged and counted once per distinct content
 * (or, for an unreadable file, per distinct reason). A refused content read
 * again is refused again, silently.
 */
export function createFollowedFile<T, R extends string>(options: FollowedFileOptions<T, R>): FollowedFile<T, R> {
  const { file, what, logger } = options;
  let value: T | undefined;
  let currentHash: string | undefined;
  let lastHash: string | undefined;
  // The refusal of the content (or unreadable reason) `lastHash` names, if it was refused.
  let lastRefusal: { rejection: R; reason: string } | undefined;
  const listeners = new Set<(value: T) => void>();

  async function check(): Promise<FollowedFileResult<T, R>> {
    const result = await checkOnce();
    options.onCheck?.(result);
    return result;
  }

  function logRefusal(refusal: FileRefusal<T, R>): void {
    if (options.logRefusal) return options.logRefusal(refusal);
    logger.warn(
      { reason: refusal.reason, rejection: refusal.rejection, file, keeping: refusal.current === undefined ? 0 : options.size(refusal.current) },
      refusal.current !== undefined ? `${what} replacement refused; keeping the current ${options.noun}` : `${what} refused`,
    );
  }

  async function checkOnce(): Promise<FollowedFileResult<T, R>> {
    let hash: string | undefined;
    try {
      const bytes = readBounded(file, options.maxBytes);
      hash = createHash("sha256").update(bytes).digest("hex");
      if (hash === lastHash) return lastRefusal ? { result: "rejected", ...lastRefusal } : { result: "unchanged" };
      lastHash = hash;
      lastRefusal = undefined;
      // Back to the content in use after a refused or unreadable file: nothing changed.
      if (hash === currentHash) return { result: "unchanged" };
      const next = options.parse(bytes);
      value = next;
      currentHash = hash;
      options.loaded?.inc();
      logger.info({ file, ...options.describe(next) }, `${what} loaded`);
      for (const listener of [...listeners]) {
        try {
          listener(next);
        } catch (error) {
          logger.error({ err: error }, `${what} listener failed`);
        }
      }
      return { result: "loaded", value: next };
    } catch (error) {
      const rejection = error instanceof FileRefused ? (error.rejection as R) : options.otherRejection;
      const reason = error instanceof Error ? error.message : String(error);
      // Content already refused is not re-reported; an unreadable file is, once per distinct reason.
      if (hash === undefined) {
        if (lastHash === `unreadable:${reason}`) return { result: "rejected", rejection, reason };
        lastHash = `unreadable:${reason}`;
      }
      lastRefusal = { rejection, reason };
      options.rejected?.inc({ reason: rejection });
      logRefusal({ rejection, reason, error, current: value });
      return { result: "rejected", rejection, reason };
    }
  }

  const reloader = createFolderReloader({ dir: path.dirname(file), what: `${what} folder`, check, pollIntervalMs: options.pollIntervalMs, settleMs: options.settleMs, logger });

  return {
    current: () => value,
    reload: reloader.reload,
    start: reloader.start,
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    close: reloader.close,
  };
}
