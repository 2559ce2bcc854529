import { watch, type FSWatcher } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import { DestinationError } from "./errors.js";
import { noopLogger, type Logger } from "./logger.js";
import type { EndpointRegistry, RegistrySnapshot } from "./registry.js";
import { MAX_REGISTRY_FILE_BYTES, parseRegistry } from "./registry-file-format.js";

/** The outcome of one reload of a file registry. */
export type RegistryReload =
  | { ok: true; changed: boolean; services: number; endpoints: number }
  | { ok: false; error: DestinationError };

/** A registry read from a YAML or JSON file and reloaded when it changes. */
export interface FileRegistry extends EndpointRegistry {
  /** Re-reads the file now; a bad file leaves the served snapshot unchanged. */
  reload(): Promise<RegistryReload>;
  /** The error of the last reload, or undefined when it succeeded. */
  lastError(): DestinationError | undefined;
  /** Stops watching the file. */
  close(): void;
}

export interface FileRegistryOptions {
  /** Path of the registry file (YAML or JSON, see `parseRegistry`). */
  file: string;
  /** Quiet time after a file event before re-reading, in ms. Default 25. */
  debounceMs?: number;
  /** Interval of a backup check of the file, in ms, for filesystems without events. Default 2000; 0 disables. */
  pollIntervalMs?: number;
  /** Called after every reload attempt (e.g. to count reloads). */
  onReload?: (result: RegistryReload) => void;
  /** Default: no-op. */
  logger?: Logger;
}

function countEndpoints(snapshot: RegistrySnapshot): number {
  return snapshot.services.reduce((n, s) => n + s.endpoints.length, 0);
}

async function readRegistryFile(file: string): Promise<{ text: string } | { error: DestinationError }> {
  try {
    const handle = await open(file, "r");
    try {
      // Check the size before reading, so that a huge file is never loaded.
      const { size } = await handle.stat();
      if (size > MAX_REGISTRY_FILE_BYTES) {
        return { error: new DestinationError("ERR_REGISTRY_INVALID", `file is larger than ${MAX_REGISTRY_FILE_BYTES} bytes`, { file }) };
      }
      return { text: await handle.readFile("utf8") };
    } finally {
      await handle.close();
    }
  } catch (cause) {
    const reason = (cause as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : `cannot read the file: ${String(cause)}`;
    return { error: new DestinationError("ERR_REGISTRY_READ", reason, { file, cause }) };
  }
}

/**
 * Loads a registry file and watches it (its directory, so that editors that
 * replace the file are seen). A malformed or invalid edit is reported through
 * `logger.error` and `onReload` with file, line and reason, and the last good
 * snapshot keeps being served.
 * @throws DestinationError `ERR_REGISTRY_INVALID` / `ERR_REGISTRY_READ` when the first load fails
 */
export async function createFileRegistry(options: FileRegistryOptions): Promise<FileRegistry> {
  const file = path.resolve(options.file);
  const logger = options.logger ?? noopLogger;
  const debounceMs = options.debounceMs ?? 25;
  const pollIntervalMs = options.pollIntervalMs ?? 2000;

  const first = await readRegistryFile(file);
  if ("error" in first) throw first.error;
  let snapshot = parseRegistry({ text: first.text, file });
  let lastText = first.text;
  let lastError: DestinationError | undefined;
  const listeners = new Set<(snapshot: RegistrySnapshot) => void>();
  let closed = false;
  let running: Promise<RegistryReload> | undefined;
  let again = false;

  async function reloadOnce(): Promise<RegistryReload> {
    const read = await readRegistryFile(file);
    let result: RegistryReload;
    if ("error" in read) {
      result = { ok: false, error: read.error };
    } else if (read.text === lastText && lastError === undefined) {
      result = { ok: true, changed: false, services: snapshot.services.length, endpoints: countEndpoints(snapshot) };
    } else {
      try {
        const next = parseRegistry({ text: read.text, file });
        lastText = read.text;
        snapshot = next;
        result = { ok: true, changed: true, services: next.services.length, endpoints: countEndpoints(next) };
      } catch (error) {
        if (!(error instanceof DestinationError)) throw error;
        lastText = read.text;
        result = { ok: false, error };
      }
    }
    if (closed) return result;
    if (result.ok) {
      if (result.changed || lastError !== undefined) {
        logger.info({ file, services: result.services, endpoints: result.endpoints }, "registry loaded");
      }
      lastError = undefined;
      if (result.changed) for (const listener of [...listeners]) listener(snapshot);
    } else {
      if (lastError?.message !== result.error.message) {
        const { code, reason, line, column } = result.error;
        logger.error({ file, line, column, code, reason }, `registry not reloaded, still serving the last good one: ${result.error.message}`);
      }
      lastError = result.error;
    }
    options.onReload?.(result);
    return result;
  }

  // One reload at a time; events during a reload cause one more.
  function reload(): Promise<RegistryReload> {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        let result = await reloadOnce();
        while (again && !closed) {
          again = false;
          result = await reloadOnce();
        }
        return result;
      } finally {
        running = undefined;
      }
    })();
    return running;
  }

  let timer: NodeJS.Timeout | undefined;
  const schedule = (): void => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(() => void reload().catch((error: unknown) => logger.error({ err: error }, "registry reload failed")), debounceMs);
  };

  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(path.dirname(file), { persistent: false }, (_event, name) => {
      // "..data" entries: Kubernetes ConfigMap/Secret volumes swap a symlinked folder.
      if (name === null || name === path.basename(file) || name.startsWith("..")) schedule();
    });
    watcher.on("error", (error) => logger.warn({ err: error, file }, "registry watch failed; relying on polling"));
  } catch (error) {
    logger.warn({ err: error, file }, "cannot watch the registry directory; relying on polling");
  }
  const poll = pollIntervalMs > 0 ? setInterval(schedule, pollIntervalMs) : undefined;
  poll?.unref();

  logger.info({ file, services: snapshot.services.length, endpoints: countEndpoints(snapshot) }, "registry loaded");
  return {
    list: () => snapshot,
    watch(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    reload,
    lastError: () => lastError,
    close() {
      closed = true;
      clearTimeout(timer);
      clearInterval(poll);
      watcher?.close();
      listeners.clear();
    },
  };
}
