import { createHash } from "node:crypto";
import { createFolderReloader } from "@meshtls/runtime";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";
import { IdentityError } from "./errors.ts";
import { noopLogger } from "./logger.ts";
import type { Logger } from "./logger.ts";
import type { Issuer, IssuerSource } from "./issuer.ts";
import { readIssuerFolder } from "./issuer-folder.ts";
import { issuerState, Rejected, validateCandidate } from "./validate-issuer.ts";
import type { IssuerRejection } from "./validate-issuer.ts";

export type { IssuerRejection };

/** The outcome of one content check. */
export type ReloadResult =
  | { result: "loaded"; issuer: Issuer }
  | { result: "unchanged" }
  | { result: "rejected"; rejection: IssuerRejection; reason: string };

export interface IssuerStore extends IssuerSource {
  /** Loads the folder now (the first call loads; later calls reload only when the content changed). */
  reload(): Promise<ReloadResult>;
  /** Loads once, then watches the folder (fs.watch + periodic content hash). Resolves with the first result. */
  start(): Promise<ReloadResult>;
  /** Called with each newly loaded issuer. Returns an unsubscribe function. */
  subscribe(listener: (issuer: Issuer) => void): () => void;
  /** Stops watching. */
  close(): void;
}

export interface IssuerStoreOptions {
  /** The folder holding `issuer.crt`/`issuer.key`, `crt.pem`/`key.pem` (Linkerd) or `tls.crt`/`tls.key` (cert-manager). */
  dir: string;
  /**
   * Trust anchors (DER), or a function returning the current set. With a
   * function, every check compares the set with the one the current issuer
   * was validated against; when it changed, the issuer is validated again
   * (and dropped if it no longer chains) and a refused candidate is retried.
   * Call `reload()` when the set changes to act at once rather than at the
   * next periodic check.
   */
  trustAnchors: Uint8Array[] | (() => Uint8Array[]);
  /** Interval of the content check that catches what fs.watch misses (Kubernetes `..data` symlink swaps), in milliseconds. Default `FOLLOW_DEFAULTS.pollIntervalMs` (5000). */
  pollIntervalMs?: number;
  /** Delay between a file event and the check, so a multi-file write settles, in milliseconds. Default `FOLLOW_DEFAULTS.settleMs` (100). */
  settleMs?: number;
  /** Trust domain of the probe leaf used to test the issuer. Default "cluster.local". */
  trustDomain?: string;
  /** Control namespace of the probe leaf. Default "meshtls". */
  controlNamespace?: string;
  now?: () => Date;
  logger?: Logger;
  /** Registry for `identity_issuer_*` and `issuer_cert_ttl_seconds`. Default: metrics are not registered. */
  metricsRegistry?: Registry;
}

/**
 * Creates a store that loads the issuer from `dir`, validates it (a P-256 CA
 * whose key matches, inside its validity, chaining to the anchors, proved by
 * signing and verifying a probe leaf), and reloads it when the files' content
 * changes. A candidate that fails validation never replaces the current
 * issuer; the reason is logged and counted.
 */
export function createIssuerStore(options: IssuerStoreOptions): IssuerStore {
  const now = options.now ?? (() => new Date());
  const logger = options.logger ?? noopLogger;
  const anchors = typeof options.trustAnchors === "function" ? options.trustAnchors : () => options.trustAnchors as Uint8Array[];
  const registers = options.metricsRegistry ? [options.metricsRegistry] : [];
  const loaded = new Counter({ name: "identity_issuer_loaded_total", help: "Issuers loaded (initially or by rotation).", registers });
  const rejected = new Counter({
    name: "identity_issuer_rejected_total",
    help: "Issuers refused, by reason: a refused candidate leaves the current issuer in use; a current issuer that no longer chains to reloaded trust anchors is dropped.",
    labelNames: ["reason"],
    registers,
  });

  let issuer: Issuer | undefined;
  // What the current issuer was validated from, and against which anchors: revalidated when the anchors change.
  let issuerInput: { source: { certificate: string; key: string }; origin: string; cert: Buffer; contentHash: string; anchorsHash: string } | undefined;
  let lastReason = "the issuer has not been loaded yet";
  let lastHash: string | undefined;
  let lastUnreadable: string | undefined;
  const listeners = new Set<(issuer: Issuer) => void>();

  new Gauge({
    name: "issuer_cert_ttl_seconds",
    help: "Seconds until the issuer (or an anchor on its path) expires; negative once expired, absent before loading.",
    registers,
    // Several processes (meshtls-identity --workers) are summed by prom-client's cluster aggregation unless told:
    // the smallest value is the one to alert on.
    aggregator: "min",
    collect() {
      this.reset();
      if (issuer) this.set((issuer.usableUntil.getTime() - now().getTime()) / 1000);
    },
  });

  function notify(next: Issuer): void {
    for (const listener of [...listeners]) {
      try {
        listener(next);
      } catch (error) {
        logger.error({ err: error }, "issuer listener failed");
      }
    }
  }

  /**
   * When the anchors changed since the current issuer was validated, validates
   * it again: still trusted → kept (its path and usableUntil recomputed);
   * no longer trusted → dropped, and issuance stops until a trusted issuer
   * is loaded (fail closed: leaves nobody could verify are not issued).
   */
  async function revalidateCurrent(trustAnchors: Uint8Array[], anchorsHash: string): Promise<ReloadResult | undefined> {
    const input = issuerInput;
    const current = issuer;
    if (current === undefined || input === undefined || input.anchorsHash === anchorsHash) return undefined;
    input.anchorsHash = anchorsHash;
    try {
      const next = await validateCandidate({
        source: input.source,
        origin: input.origin,
        cert: input.cert,
        key: current.privateKey,
        trustAnchors,
        now: now(),
        trustDomain: options.trustDomain,
        controlNamespace: options.controlNamespace,
      });
      issuer = next;
      logger.info(
        { issuer: next.subject, serial: next.serialNumber, usableUntil: next.usableUntil.toISOString(), anchors: trustAnchors.length },
        "issuer revalidated against the new trust anchors",
      );
      notify(next);
      return { result: "loaded", issuer: next };
    } catch (error) {
      const rejection = error instanceof Rejected ? error.rejection : "untrusted";
      const reason = error instanceof Error ? error.message : String(error);
      issuer = undefined;
      issuerInput = undefined;
      lastReason = `${reason}; load an issuer under the current trust anchors`;
      rejected.inc({ reason: rejection });
      logger.error(
        { reason, rejection, issuer: current.subject, anchors: trustAnchors.length },
        "the current issuer is not valid under the new trust anchors; no leaves are issued until a trusted issuer is loaded",
      );
      return { result: "rejected", rejection, reason };
    }
  }

  async function check(): Promise<ReloadResult> {
    const trustAnchors = anchors();
    const anchorsHash = hashAnchors(trustAnchors);
    const revalidatedContent = issuerInput?.anchorsHash === anchorsHash ? undefined : issuerInput?.contentHash;
    const revalidated = await revalidateCurrent(trustAnchors, anchorsHash);
    let candidate;
    try {
      candidate = await readIssuerFolder(options.dir);
      lastUnreadable = undefined;
      // A candidate refused under some anchors is tried again when the anchors change.
      const key = `${candidate.hash}:${anchorsHash}`;
      if (key === lastHash) return revalidated ?? { result: "unchanged" };
      lastHash = key;
      const isCurrent = issuer !== undefined && issuerInput?.contentHash === candidate.hash && issuerInput.anchorsHash === anchorsHash;
      if (isCurrent || (revalidated !== undefined && candidate.hash === revalidatedContent)) return revalidated ?? { result: "unchanged" };
      const next = await validateCandidate({
        ...candidate,
        trustAnchors,
        now: now(),
        trustDomain: options.trustDomain,
        controlNamespace: options.controlNamespace,
      });
      issuer = next;
      issuerInput = { source: candidate.source, origin: candidate.origin, cert: candidate.cert, contentHash: candidate.hash, anchorsHash };
      loaded.inc();
      logger.info(
        { issuer: next.subject, serial: next.serialNumber, notAfter: next.notAfter.toISOString(), usableUntil: next.usableUntil.toISOString(), origin: next.origin },
        "issuer loaded",
      );
      notify(next);
      return { result: "loaded", issuer: next };
    } catch (error) {
      const rejection = error instanceof Rejected ? error.rejection : "bad_certificate";
      const reason = error instanceof Error ? error.message : String(error);
      // A folder that is missing or half-written is rechecked on the next
      // event; content already refused is not re-reported.
      if (candidate === undefined) {
        lastHash = undefined;
        if (reason === lastUnreadable) return { result: "rejected", rejection, reason };
        lastUnreadable = reason;
      }
      rejected.inc({ reason: rejection });
      lastReason = issuer ? lastReason : reason;
      logger.warn(
        { reason, rejection, dir: options.dir, keeping: issuer ? issuer.subject : null },
        issuer ? "issuer replacement refused; keeping the current issuer" : "issuer refused",
      );
      return { result: "rejected", rejection, reason };
    }
  }

  const reloader = createFolderReloader({ dir: options.dir, what: "issuer folder", check, pollIntervalMs: options.pollIntervalMs, settleMs: options.settleMs, logger });

  return {
    current() {
      return issuer ? issuerState(issuer, now()) : { ok: false, reason: lastReason };
    },
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

function hashAnchors(trustAnchors: Uint8Array[]): string {
  const hash = createHash("sha256");
  for (const der of trustAnchors) hash.update(`${der.length}:`).update(der);
  return hash.digest("hex");
}

/** Throws `ERR_ISSUER_INVALID` unless `result` loaded an issuer (for callers that require one at start). */
export function requireIssuerLoaded(result: ReloadResult): Issuer | undefined {
  if (result.result === "rejected") throw new IdentityError("ERR_ISSUER_INVALID", result.reason);
  return result.result === "loaded" ? result.issuer : undefined;
}
