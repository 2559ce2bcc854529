import { watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import type { Logger } from "./logger.ts";

/**
 * The one set of defaults of every followed file and folder in meshtls
 * (identity's issuer folder, trust anchors and token JWKS; the destination's
 * registry file; the proxy's trust anchors): a content check every 5 s, and
 * 100 ms of quiet after a file event so that a multi-file write settles.
 */
export const FOLLOW_DEFAULTS = { pollIntervalMs: 5000, settleMs: 100 } as const;

/** Options of {@link createFolderReloader}. */
export interface FolderReloaderOptions<R> {
  /** The folder whose changes trigger `check`. */
  dir: string;
  /** What the folder holds, for log lines ("issuer folder"). */
  what: string;
  /** Reads, validates and applies the content; never runs twice at once. */
  check: () => Promise<R>;
  /** The periodic check, in milliseconds; 0 turns it off (tests of file events). Default {@link FOLLOW_DEFAULTS}.pollIntervalMs (5000). */
  pollIntervalMs?: number | undefined;
  /** Quiet time after the last file event before checking, in milliseconds. Default {@link FOLLOW_DEFAULTS}.settleMs (100). */
  settleMs?: number | undefined;
  logger: Logger;
}

/** A check run at start, on the folder's file events and periodically. */
export interface FolderReloader<R> {
  /** Runs the check now, after any check already running. */
  reload(): Promise<R>;
  /** Runs the first check, then watches and polls. */
  start(): Promise<R>;
  close(): void;
}

/**
 * Runs a content check at start, after file events in a folder (debounced),
 * and on a timer. The timer is not optional: Kubernetes swaps a `..data`
 * symlink, editors and `mv` replace files, and file events can be missed, so
 * only re-reading the content is reliable; events merely make it prompt.
 */
export function createFolderReloader<R>(options: FolderReloaderOptions<R>): FolderReloader<R> {
  const { dir, what, check, logger } = options;
  const pollIntervalMs = options.pollIntervalMs ?? FOLLOW_DEFAULTS.pollIntervalMs;
  const settleMs = options.settleMs ?? FOLLOW_DEFAULTS.settleMs;
  let queue: Promise<unknown> = Promise.resolve();
  let watcher: FSWatcher | undefined;
  let pollTimer: NodeJS.Timeout | undefined;
  let settleTimer: NodeJS.Timeout | undefined;
  let closed = false;

  function reload(): Promise<R> {
    const next = queue.then(check, check);
    queue = next.catch(() => undefined);
    return next;
  }

  function schedule(): void {
    if (closed) return;
    if (settleTimer) clearTimeout(settleTimer);
    settleTimer = setTimeout(() => {
      settleTimer = undefined;
      void reload();
    }, settleMs);
    settleTimer.unref();
  }

  return {
    reload,
    async start() {
      const first = await reload();
      if (closed) return first;
      try {
        watcher = watch(dir, { persistent: false }, () => schedule());
        watcher.on("error", (error) => logger.warn({ err: error, dir }, `${what} watch failed; relying on the periodic check`));
      } catch (error) {
        logger.warn({ err: error, dir }, `cannot watch the ${what}; relying on the periodic check`);
      }
      if (pollIntervalMs > 0) {
        pollTimer = setInterval(() => void reload(), pollIntervalMs);
        pollTimer.unref();
      }
      return first;
    },
    close() {
      closed = true;
      watcher?.close();
      if (pollTimer) clearInterval(pollTimer);
      if (settleTimer) clearTimeout(settleTimer);
    },
  };
}
