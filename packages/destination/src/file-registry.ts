import path from "node:path";
import { createFollowedFile, FileRefused } from "@meshtls/runtime";
import type { FileRefusal, FollowedFileResult } from "@meshtls/runtime";
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
  /** Stops following the file. */
  close(): void;
}

export interface FileRegistryOptions {
  /** Path of the registry file (YAML or JSON, see `parseRegistry`). */
  file: string;
  /** Quiet time after a file event before re-reading, in ms. Default `FOLLOW_DEFAULTS.settleMs` (100). */
  settleMs?: number;
  /** Interval of the content check that catches what file events miss, in ms; 0 turns it off. Default `FOLLOW_DEFAULTS.pollIntervalMs` (5000). */
  pollIntervalMs?: number;
  /** Called when the served registry or the file's verdict changes: a load, a refused edit, a file back to the served content. */
  onReload?: (result: RegistryReload) => void;
  /** Default: no-op. */
  logger?: Logger;
}

type Rejection = "unreadable" | "too_large" | "invalid";

function countEndpoints(snapshot: RegistrySnapshot): number {
  return snapshot.services.reduce((n, s) => n + s.endpoints.length, 0);
}

/** The coded error of a refused registry file. */
function registryError(file: string, refusal: Pick<FileRefusal<RegistrySnapshot, Rejection>, "rejection" | "error">): DestinationError {
  const { rejection, error } = refusal;
  if (error instanceof DestinationError) return error;
  if (rejection === "too_large") return new DestinationError("ERR_REGISTRY_INVALID", `file is larger than ${MAX_REGISTRY_FILE_BYTES} bytes`, { file });
  if (rejection === "unreadable") {
    const cause = error instanceof FileRefused ? (error.cause as NodeJS.ErrnoException | undefined) : undefined;
    const reason = cause?.code === "ENOENT" ? "file not found" : `cannot read the file: ${String(cause ?? error)}`;
    return new DestinationError("ERR_REGISTRY_READ", reason, { file, cause });
  }
  return new DestinationError("ERR_REGISTRY_INVALID", String(error), { file, cause: error });
}

/**
 * Loads a registry file and follows it with the followed-file core of
 * `@meshtls/runtime` (file events in its folder, so that editors replacing the
 * file and Kubernetes `..data` swaps are seen, and a periodic content check).
 * A malformed or invalid edit is reported through `logger.error` and
 * `onReload` with file, line and reason, and the last good snapshot keeps
 * being served.
 * @throws DestinationError `ERR_REGISTRY_INVALID` / `ERR_REGISTRY_READ` when the first load fails
 */
export async function createFileRegistry(options: FileRegistryOptions): Promise<FileRegistry> {
  const file = path.resolve(options.file);
  const logger = options.logger ?? noopLogger;
  let lastError: DestinationError | undefined;
  let started = false;
  let closed = false;
  const listeners = new Set<(snapshot: RegistrySnapshot) => void>();
  const empty: RegistrySnapshot = { services: [] };

  const summary = (snapshot: RegistrySnapshot) => ({ services: snapshot.services.length, endpoints: countEndpoints(snapshot) });
  const report = (result: RegistryReload): void => {
    if (started && !closed) options.onReload?.(result);
  };

  const followed = createFollowedFile<RegistrySnapshot, Rejection>({
    file,
    what: "registry",
    noun: "registry",
    maxBytes: MAX_REGISTRY_FILE_BYTES,
    pollIntervalMs: options.pollIntervalMs,
    settleMs: options.settleMs,
    parse: (bytes) => parseRegistry({ text: bytes.toString("utf8"), file }),
    otherRejection: "invalid",
    describe: summary,
    size: (snapshot) => snapshot.services.length,
    logger,
    logRefusal(refusal) {
      lastError = registryError(file, refusal);
      // Before the first load the error is thrown to the caller instead.
      if (!started || closed) return;
      const { code, reason, line, column } = lastError;
      logger.error({ file, line, column, code, reason }, `registry not reloaded, still serving the last good one: ${lastError.message}`);
      report({ ok: false, error: lastError });
    },
    onCheck(result: FollowedFileResult<RegistrySnapshot, Rejection>) {
      if (result.result === "rejected") return;
      const current = followed.current() ?? empty;
      if (result.result === "unchanged") {
        if (lastError === undefined) return;
        // The file is back to the content being served.
        logger.info({ file, ...summary(current) }, "registry file back to the served content");
      }
      lastError = undefined;
      report({ ok: true, changed: result.result === "loaded", ...summary(current) });
    },
  });
  followed.subscribe((snapshot) => {
    if (closed) return;
    for (const listener of [...listeners]) listener(snapshot);
  });

  const first = await followed.start();
  if (first.result !== "loaded") {
    followed.close();
    throw lastError ?? new DestinationError("ERR_REGISTRY_READ", "the registry file could not be loaded", { file });
  }
  started = true;

  const resultOf = (result: FollowedFileResult<RegistrySnapshot, Rejection>): RegistryReload => {
    const current = followed.current() ?? empty;
    if (result.result === "rejected") return { ok: false, error: lastError ?? registryError(file, { rejection: result.rejection, error: new Error(result.reason) }) };
    return { ok: true, changed: result.result === "loaded", ...summary(current) };
  };

  return {
    list: () => followed.current() ?? empty,
    watch(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    reload: async () => resultOf(await followed.reload()),
    lastError: () => lastError,
    close() {
      closed = true;
      followed.close();
      listeners.clear();
    },
  };
}
