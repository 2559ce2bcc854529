import { watch } from "node:fs";
import type { FSWatcher } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { decodeCertificates, parseCertificate } from "@meshtls/pki";
import type { Logger, TrustBundleSource } from "@meshtls/proxy-core";

/** The trust anchors file as a live source: reloaded when its content changes, a bad edit keeps the last good bundle. */
export interface FileTrustBundle extends TrustBundleSource {
  close(): void;
}

async function load(file: string): Promise<{ text: string; anchors: Uint8Array[] }> {
  const text = await readFile(file, "utf8");
  const anchors = decodeCertificates(text);
  if (anchors.length === 0) throw new Error("no certificate in the file");
  for (const der of anchors) {
    const summary = parseCertificate(der);
    if (!summary.ca) throw new Error(`${summary.subject.text} is not a CA certificate`);
  }
  return { text, anchors };
}

/** Loads the bundle (the first load must succeed) and follows the file. */
export async function createFileTrustBundle(options: { file: string; pollMs: number; logger: Logger }): Promise<FileTrustBundle> {
  const { file, logger } = options;
  let { text, anchors } = await load(file);
  const listeners = new Set<(anchors: Uint8Array[]) => void>();
  let checking = false;
  const check = async (): Promise<void> => {
    if (checking) return;
    checking = true;
    try {
      const next = await load(file);
      if (next.text !== text) {
        text = next.text;
        anchors = next.anchors;
        logger.info({ file, anchors: anchors.length }, "trust anchors reloaded");
        for (const listener of listeners) listener(anchors);
      }
    } catch (error) {
      logger.error({ file, err: (error as Error).message }, "trust anchors file unreadable or invalid; keeping the previous bundle");
    } finally {
      checking = false;
    }
  };
  // Watch the directory (editors and kubelet replace the file), with a poll as backup.
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(path.dirname(file), () => void check());
    watcher.on("error", () => undefined);
  } catch {
    watcher = undefined;
  }
  const timer = setInterval(() => void check(), options.pollMs);
  timer.unref();
  return {
    current: () => anchors,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      watcher?.close();
      clearInterval(timer);
      listeners.clear();
    },
  };
}
