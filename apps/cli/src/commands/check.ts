import path from "node:path";
import { findIssuerFiles, loadIssuerFolder, type IssuerFolderFiles } from "@meshtls/identity";
import type { CertificateSummary } from "@meshtls/pki";
import { CliError } from "../errors.ts";
import { describeExpiry, formatDurationMs } from "../duration.ts";
import { readCertificates, summarizeCertificate } from "../inputs.ts";
import type { Output } from "../output.ts";
import { nameCa, verifyRunning, type RunningCertificate } from "../mesh/running-certificates.ts";
import { checkInjectedPods } from "./check-kubernetes.ts";
import { checkIdentityService, checkProxyAdmin, checkProxyChain } from "./check-running.ts";

/** Default warning window of `meshtls check`: 60 days. */
export const DEFAULT_CHECK_WARN_MS = 60 * 86_400_000;

export interface CheckCertificatesOptions {
  /** Trust bundle file (one or more anchors, PEM or DER). Checked when given; also used to verify a running identity service. */
  anchorsFile?: string;
  /**
   * Issuer folder, read and validated by the identity package's own code (findIssuerFiles, loadIssuerFolder): `issuer.crt`/`issuer.key`,
   * `crt.pem`/`key.pem` (Linkerd) or `tls.crt`/`tls.key` (cert-manager), through symbolic links. The
   * certificate file holds the issuer first, then any intermediates. Needs `anchorsFile`.
   */
  issuerDir?: string;
  /** `host:port` of a running identity service's gRPC port, to check over TLS. Default: none. */
  identityAddress?: string;
  /** `host:port` of running proxies' admin ports, to check `/ready` and their certificate. Default: none. */
  proxyAdmins?: string[];
  /**
   * A trust bundle about to be rolled out: every running certificate (each
   * proxy's, the identity service's) and the issuer of `issuerDir` must verify
   * under it, or the report fails. Needs `proxyAdmins`, `identityAddress` or `issuerDir`.
   */
  candidateAnchorsFile?: string;
  /**
   * Pods listed through the Kubernetes API (`kubeconfig`, else KUBECONFIG, ~/.kube/config, then in-cluster; one
   * `namespace` or all): a pod the injector would mesh that has no proxy is an error (checkInjectedPods). Default: not checked.
   */
  kubernetes?: { kubeconfig?: string; namespace?: string };
  /** Repeat the checks (every second) until they pass or this much time has passed. Default 0: once. */
  waitMs?: number;
  /** Warn when a certificate expires within this window. Default 60 days. */
  warnMs?: number;
  /** Count warnings as failures. Default false. */
  strict?: boolean;
  /** Print JSON instead of words. Default false. */
  json?: boolean;
  /** Clock. Default `() => new Date()`. */
  now?: () => Date;
}

export type CheckStatus = "ok" | "warning" | "error";

/** One finding of `meshtls check`. */
export interface CheckFinding {
  /** Stable name of the check, e.g. `issuer-validity`. */
  check: string;
  status: CheckStatus;
  message: string;
}

export interface CheckReport {
  /** false if there is an error, or a warning under `strict`. */
  ok: boolean;
  errors: number;
  warnings: number;
  findings: CheckFinding[];
}

/**
 * `meshtls check`: checks a trust bundle and an issuer before they hurt:
 * supported algorithm (ECDSA P-256), validity now, expiry within the warning
 * window, the issuer is a CA allowed to sign and chains to one of the anchors,
 * and the issuer key matches its certificate. Unlike a warning-only check, the
 * report's `ok` is false on any error (and on a warning with `strict`), and the
 * command exits 1 then. Running parts are checked too when given: an identity
 * service over TLS (checkIdentityService) and proxies' admin ports
 * (checkProxyAdmin).
 */
export async function checkCertificates(options: CheckCertificatesOptions, output: Output): Promise<CheckReport> {
  if (options.issuerDir !== undefined && options.anchorsFile === undefined) {
    throw new CliError("ERR_USAGE", "--issuer-dir needs --anchors (the issuer is checked against the trust bundle)");
  }
  if (options.anchorsFile === undefined && options.identityAddress === undefined && (options.proxyAdmins ?? []).length === 0 && options.kubernetes === undefined) {
    throw new CliError("ERR_USAGE", "nothing to check: give --anchors and --issuer-dir, --identity-addr, --proxy-admin, or --kubernetes");
  }
  if (options.candidateAnchorsFile !== undefined && options.identityAddress === undefined && options.issuerDir === undefined && (options.proxyAdmins ?? []).length === 0) {
    throw new CliError("ERR_USAGE", "--candidate-anchors needs something to verify under it: --proxy-admin, --identity-addr or --issuer-dir");
  }
  const until = Date.now() + (options.waitMs ?? 0);
  let report = await runChecks(options);
  while (!report.ok && Date.now() + 1_000 <= until) {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    report = await runChecks(options);
  }

  if (options.json === true) {
    output.out(JSON.stringify(report, null, 2));
  } else {
    const mark: Record<CheckStatus, string> = { ok: "[ok]   ", warning: "[warn] ", error: "[error]" };
    for (const finding of report.findings) {
      output.out(`${mark[finding.status]} ${finding.message}`);
    }
    const summary = `${report.errors} error${report.errors === 1 ? "" : "s"}, ${report.warnings} warning${report.warnings === 1 ? "" : "s"}`;
    const waited = options.waitMs !== undefined && options.waitMs > 0 && !report.ok ? `; still failing after --wait ${formatDurationMs(options.waitMs)}` : "";
    output.out(
      report.ok
        ? `\nStatus: healthy (${summary})`
        : `\nStatus: FAILED (${summary}${report.errors === 0 ? "; warnings fail under --strict" : ""}${waited})`,
    );
  }
  return report;
}

/** One pass of every check asked for. */
async function runChecks(options: CheckCertificatesOptions): Promise<CheckReport> {
  const now = (options.now ?? (() => new Date()))();
  const warnMs = options.warnMs ?? DEFAULT_CHECK_WARN_MS;
  const findings: CheckFinding[] = [];
  const add = (check: string, status: CheckStatus, message: string): void => {
    findings.push({ check, status, message });
  };
  const anchors = options.anchorsFile === undefined ? [] : await readAll(options.anchorsFile, "trust anchors", add, "anchors-read");
  let issuerChain: CertificateSummary[] = [];
  let files: IssuerFolderFiles | undefined;
  if (options.issuerDir !== undefined) {
    try {
      files = await findIssuerFiles(options.issuerDir);
      const names = `${path.basename(files.certificate)} + ${path.basename(files.key)}`;
      add("issuer-files", "ok", `issuer folder ${options.issuerDir}: ${names} (${files.layout.source} layout)`);
      if (files.informationalCa !== undefined) {
        add("issuer-files", "ok", `${files.informationalCa} is informational only: trust anchors come from --anchors, as for the identity service`);
      }
      if (files.shadowed !== undefined) {
        add("issuer-files", "warning", `${files.shadowed.join(", ")} ${files.shadowed.length === 1 ? "is" : "are"} ignored: ${names} come first and the identity service loads those; remove one layout`);
      }
    } catch (error) {
      add("issuer-files", "error", messageOf(error));
    }
    if (files !== undefined) {
      issuerChain = await readAll(files.certificate, "issuer certificate", add, "issuer-read");
    }
  }

  for (const anchor of anchors) {
    const name = `trust anchor ${anchor.subject.text}`;
    checkAlgorithm("anchor-algorithm", name, anchor, add);
    checkValidity("anchor-validity", name, anchor, now, warnMs, add);
    if (anchor.ca && anchor.keyUsage.includes("keyCertSign")) {
      add("anchor-ca", "ok", `${name} is a CA allowed to sign certificates`);
    } else {
      add("anchor-ca", "error", `${name} is not a CA allowed to sign certificates (CA ${anchor.ca ? "set" : "not set"}, keyCertSign ${anchor.keyUsage.includes("keyCertSign") ? "set" : "missing"})`);
    }
  }

  const issuer = issuerChain[0];
  if (issuer !== undefined) checkValidity("issuer-validity", `issuer ${issuer.subject.text}`, issuer, now, warnMs, add);
  if (options.issuerDir !== undefined && files !== undefined && anchors.length > 0) await checkIssuerLoads(options.issuerDir, files.key, anchors, now, add);

  const running: (RunningCertificate | undefined)[] = [];
  if (options.identityAddress !== undefined) {
    running.push(
      await checkIdentityService(
        { address: options.identityAddress, now, warnMs, ...(options.anchorsFile === undefined ? {} : { anchors: anchors.map((a) => a.der) }) },
        add,
      ),
    );
  }
  for (const address of options.proxyAdmins ?? []) {
    await checkProxyAdmin({ address, now }, add);
    running.push(
      await checkProxyChain(
        { address, now, ...(options.anchorsFile === undefined ? {} : { anchors: anchors.map((a) => a.der), anchorsFile: options.anchorsFile }) },
        add,
      ),
    );
  }

  if (options.kubernetes !== undefined) await checkInjectedPods(options.kubernetes, add);

  if (options.candidateAnchorsFile !== undefined) {
    const issuerToCheck = options.issuerDir !== undefined && issuer !== undefined ? { dir: options.issuerDir, certificate: issuer } : undefined;
    await checkCandidate(options.candidateAnchorsFile, running, issuerToCheck, now, add);
  }

  const errors = findings.filter((f) => f.status === "error").length;
  const warnings = findings.filter((f) => f.status === "warning").length;
  return { ok: errors === 0 && (options.strict !== true || warnings === 0), errors, warnings, findings };
}

/**
 * The guard before a bundle rollout: every running certificate and the issuer
 * must verify under the candidate bundle. A part whose certificate could not
 * be read counts as not verified (fail closed). The issuer is judged by the
 * identity package's own loadIssuerFolder against the candidate, as the
 * service would judge it once the bundle is rolled out.
 */
async function checkCandidate(
  file: string,
  running: (RunningCertificate | undefined)[],
  issuer: { dir: string; certificate: CertificateSummary } | undefined,
  now: Date,
  add: Add,
): Promise<void> {
  const candidate = await readAll(file, "candidate trust anchors", add, "candidate-read");
  if (candidate.length === 0) return;
  const anchors = candidate.map((c) => c.der);
  if (running.includes(undefined)) {
    add("candidate", "error", `cannot tell whether every running certificate verifies under the candidate ${file}: a part above could not be read`);
  }
  for (const certificate of running) {
    if (certificate === undefined) continue;
    const verified = await verifyRunning(certificate, anchors, now);
    if (verified.ok) {
      add("candidate", "ok", `${certificate.source}'s certificate for ${verified.identity} verifies under the candidate ${file} (issuer ${nameCa(verified.issuer)}, trust anchor ${nameCa(verified.anchor)})`);
    } else {
      add("candidate", "error", `${certificate.source}'s certificate for ${verified.identity} does NOT verify under the candidate ${file}: ${verified.reason} (${verified.code}); rolling it out now would break its connections`);
    }
  }
  if (issuer !== undefined) {
    try {
      await loadIssuerFolder({ dir: issuer.dir, trustAnchors: anchors, now });
      add("candidate", "ok", `issuer ${nameCa(issuer.certificate)} would be loaded by the identity service under the candidate ${file}: a leaf it signs chains to its trust anchors`);
    } catch (error) {
      add("candidate", "error", `issuer ${nameCa(issuer.certificate)} does NOT chain to the candidate ${file}: ${messageOf(error)}; the identity service would stop issuing under it`);
    }
  }
}

type Add = (check: string, status: CheckStatus, message: string) => void;

async function readAll(file: string, what: string, add: Add, check: string): Promise<CertificateSummary[]> {
  try {
    const ders = await readCertificates(file, what);
    const summaries: CertificateSummary[] = [];
    for (const [index, der] of ders.entries()) {
      summaries.push(await summarizeCertificate(der, ders.length > 1 ? `${file} (certificate ${index + 1})` : file));
    }
    add(check, "ok", `${what}: ${summaries.length} certificate${summaries.length === 1 ? "" : "s"} read from ${file}`);
    return summaries;
  } catch (error) {
    add(check, "error", messageOf(error));
    return [];
  }
}

function checkAlgorithm(check: string, name: string, cert: CertificateSummary, add: Add): void {
  const key = cert.publicKey;
  if (key.algorithm === "ECDSA" && key.curve === "P-256" && key.namedCurve) {
    add(check, "ok", `${name} uses a supported algorithm (ECDSA P-256)`);
  } else {
    const described = [key.algorithm, key.curve ?? (key.bits === undefined ? "" : `${key.bits} bits`)].filter(Boolean).join(" ");
    add(check, "error", `${name} uses ${described}${key.namedCurve || key.algorithm !== "ECDSA" ? "" : " with explicit curve parameters"}; meshtls supports ECDSA P-256 (named curve) only`);
  }
}

function checkValidity(check: string, name: string, cert: CertificateSummary, now: Date, warnMs: number, add: Add): void {
  const remainingMs = cert.notAfter.getTime() - now.getTime();
  if (cert.notBefore.getTime() > now.getTime()) {
    add(check, "error", `${name} is not valid yet: it starts at ${cert.notBefore.toISOString()} (in ${formatDurationMs(cert.notBefore.getTime() - now.getTime())}); check the clocks`);
  } else if (remainingMs <= 0) {
    add(check, "error", `${name} ${describeExpiry(cert.notAfter, now)} (at ${cert.notAfter.toISOString()})`);
  } else if (remainingMs <= warnMs) {
    add(check, "warning", `${name} ${describeExpiry(cert.notAfter, now)} (at ${cert.notAfter.toISOString()}), within the ${formatDurationMs(warnMs)} warning window: rotate it`);
  } else {
    add(check, "ok", `${name} is valid now and ${describeExpiry(cert.notAfter, now)}`);
  }
}

/**
 * Whether the identity service would load the issuer: the identity package's
 * own folder reading and checks (CA with keyCertSign, ECDSA P-256, the key
 * matches, inside its validity, and a probe leaf it signs verifies to the
 * anchors), so that check and the service cannot disagree.
 */
async function checkIssuerLoads(dir: string, keyFile: string, anchors: CertificateSummary[], now: Date, add: Add): Promise<void> {
  try {
    const issuer = await loadIssuerFolder({ dir, trustAnchors: anchors.map((a) => a.der), now });
    add("issuer-valid", "ok", `issuer ${issuer.subject} would be loaded by the identity service: ${keyFile} is its private key and a leaf it signs chains to the trust anchors`);
  } catch (error) {
    add("issuer-valid", "error", `the identity service would refuse this issuer: ${messageOf(error)}`);
  }
}

function messageOf(error: unknown): string {
  if (error instanceof CliError) return error.message;
  return error instanceof Error ? error.message : String(error);
}
