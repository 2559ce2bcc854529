import { decodeCertificates, MAX_PEM_CHARS, parseCertificate } from "@meshtls/pki";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";
import { createFollowedFile, FileRefused } from "@meshtls/runtime";
import type { FollowedFileResult } from "@meshtls/runtime";
import { noopLogger } from "./logger.ts";
import type { Logger } from "./logger.ts";

/** Why a trust anchors file was refused; the `reason` label of `identity_trust_anchors_rejected_total`. */
export type TrustAnchorsRejection = "unreadable" | "too_large" | "empty" | "bad_certificate" | "not_ca" | "expired";

/** The outcome of one content check of the trust anchors file. */
export type TrustAnchorsReloadResult =
  | { result: "loaded"; anchors: Uint8Array[] }
  | { result: "unchanged" }
  | { result: "rejected"; rejection: TrustAnchorsRejection; reason: string };

export interface TrustAnchorsStore {
  /** The current bundle (DER); empty only before the first successful load. */
  current(): Uint8Array[];
  /** Reads the file now; a changed, valid bundle replaces the current one. */
  reload(): Promise<TrustAnchorsReloadResult>;
  /** Loads once, then follows the file (fs.watch on its folder + periodic content hash). Resolves with the first result. */
  start(): Promise<TrustAnchorsReloadResult>;
  /** Called with each newly loaded bundle. Returns an unsubscribe function. */
  subscribe(listener: (anchors: Uint8Array[]) => void): () => void;
  /** Stops following the file. */
  close(): void;
}

export interface TrustAnchorsStoreOptions {
  /** The PEM bundle of trust anchors (one or more CA certificates). */
  file: string;
  /** Interval of the content check that catches what fs.watch misses (Kubernetes `..data` symlink swaps), in milliseconds. Default `FOLLOW_DEFAULTS.pollIntervalMs` (5000). */
  pollIntervalMs?: number;
  /** Delay between a file event and the check, so a write settles, in milliseconds. Default `FOLLOW_DEFAULTS.settleMs` (100). */
  settleMs?: number;
  /** Largest file accepted, in bytes. Default 1 MiB (`MAX_PEM_CHARS`). */
  maxBytes?: number;
  now?: () => Date;
  logger?: Logger;
  /** Registry for `identity_trust_anchors*`. Default: metrics are not registered. */
  metricsRegistry?: Registry;
}

class Refused extends FileRefused<TrustAnchorsRejection> {}

/** The bundle before the first successful load. */
const NO_ANCHORS: Uint8Array[] = [];

/** Checks a bundle: at least one certificate, every one a CA, not all of them expired. */
function parseBundle(file: string, bytes: Buffer, at: Date): Uint8Array[] {
  const text = bytes.toString("utf8");
  if (text.trim() === "") throw new Refused("empty", `${file} is empty; it must hold the PEM trust anchors`);
  let anchors: Uint8Array[];
  try {
    anchors = decodeCertificates(text);
  } catch (error) {
    throw new Refused("bad_certificate", `${file} is not a PEM certificate bundle: ${(error as Error).message}`);
  }
  let expired = 0;
  for (const [index, der] of anchors.entries()) {
    let summary;
    try {
      summary = parseCertificate(der);
    } catch (error) {
      throw new Refused("bad_certificate", `${file}: certificate ${index + 1} cannot be parsed: ${(error as Error).message}`);
    }
    const name = summary.subject.text || "(empty subject)";
    if (!summary.ca) throw new Refused("not_ca", `${file}: certificate ${index + 1} (${name}) is not a CA certificate`);
    if (at >= summary.notAfter) expired++;
  }
  if (expired === anchors.length) throw new Refused("expired", `${file}: every trust anchor in it has expired`);
  return anchors;
}

/**
 * Creates a store that loads the trust anchors file and follows its content.
 * A file that cannot be read, is empty, oversized, not PEM certificates, holds
 * a non-CA certificate, or only expired anchors never replaces the current
 * bundle; the reason is logged and counted.
 */
export function createTrustAnchorsStore(options: TrustAnchorsStoreOptions): TrustAnchorsStore {
  const now = options.now ?? (() => new Date());
  const logger = options.logger ?? noopLogger;
  const maxBytes = options.maxBytes ?? MAX_PEM_CHARS;
  const registers = options.metricsRegistry ? [options.metricsRegistry] : [];
  const loaded = new Counter({ name: "identity_trust_anchors_loaded_total", help: "Trust anchor bundles loaded (at start and on change).", registers });
  const rejected = new Counter({
    name: "identity_trust_anchors_rejected_total",
    help: "Trust anchors files refused, by reason; the current bundle stays in use.",
    labelNames: ["reason"],
    registers,
  });

  const followed = createFollowedFile<Uint8Array[], TrustAnchorsRejection>({
    file: options.file,
    what: "trust anchors",
    noun: "bundle",
    maxBytes,
    pollIntervalMs: options.pollIntervalMs,
    settleMs: options.settleMs,
    parse: (bytes) => parseBundle(options.file, bytes, now()),
    otherRejection: "bad_certificate",
    describe: (anchors) => ({ anchors: anchors.length }),
    size: (anchors) => anchors.length,
    loaded,
    rejected,
    logger,
  });
  const asResult = (r: FollowedFileResult<Uint8Array[], TrustAnchorsRejection>): TrustAnchorsReloadResult =>
    r.result === "loaded" ? { result: "loaded", anchors: r.value } : r;

  new Gauge({
    name: "identity_trust_anchors",
    help: "Number of trust anchors in the bundle in use; absent before the first load.",
    registers,
    // Several processes (meshtls-identity --workers) are summed by prom-client's cluster aggregation unless told:
    // the smallest value is the one to alert on.
    aggregator: "min",
    collect() {
      this.reset();
      const anchors = followed.current();
      if (anchors !== undefined) this.set(anchors.length);
    },
  });

  return {
    current: () => followed.current() ?? NO_ANCHORS,
    reload: async () => asResult(await followed.reload()),
    start: async () => asResult(await followed.start()),
    subscribe: (listener) => followed.subscribe(listener),
    close: () => followed.close(),
  };
}
