import { createHash } from "node:crypto";
import { parseCertificate, verifyChain, type CertificateSummary } from "@meshtls/pki";
import { describeExpiry, formatDurationMs } from "../duration.ts";
import { getAdmin } from "../mesh/admin-client.ts";
import { isNoIdentityEndpoint, nameCa, runningProxyCertificate, verifyRunning, type RunningCertificate } from "../mesh/running-certificates.ts";
import { findSamples, parsePrometheusText } from "../mesh/prometheus.ts";
import { tlsHandshake } from "./inspect-remote.ts";

/** Bound of each network step of a running check: 5 s. */
export const RUNNING_CHECK_TIMEOUT_MS = 5_000;

type Status = "ok" | "warning" | "error";
type Add = (check: string, status: Status, message: string) => void;

/**
 * A running identity service: a TLS handshake on its gRPC port (ALPN h2), the
 * certificate it serves (must be valid now) and the issuer that signed it
 * (validity, `warnMs` window), and, with `anchors`, that the served chain
 * verifies to one of them. A plaintext or unreachable service is an error.
 * Returns the chain it presented (DER, leaf first), or undefined when there was none.
 */
export async function checkIdentityService(
  options: { address: string; anchors?: Uint8Array[]; now: Date; warnMs: number; timeoutMs?: number },
  add: Add,
): Promise<RunningCertificate | undefined> {
  const { address, now } = options;
  let chain: CertificateSummary[];
  try {
    const handshake = await tlsHandshake({ address, alpn: ["h2"], timeoutMs: options.timeoutMs ?? RUNNING_CHECK_TIMEOUT_MS });
    chain = [];
    for (const der of handshake.chain) chain.push(await parseCertificate(der));
    add("identity-tls", "ok", `identity service ${address} answers TLS (${handshake.protocol ?? "?"}${handshake.alpn === null ? "" : `, ${handshake.alpn}`})`);
  } catch (error) {
    add("identity-tls", "error", `identity service ${address}: ${(error as Error).message}`);
    return undefined;
  }
  const served = chain[0]!;
  const name = served.san.dns[0] ?? served.subject.text;
  if (served.notBefore.getTime() > now.getTime()) {
    add("identity-served-validity", "error", `identity service ${address} serves ${name}, not valid until ${served.notBefore.toISOString()}: check the clocks`);
  } else if (served.notAfter.getTime() <= now.getTime()) {
    add("identity-served-validity", "error", `identity service ${address} serves ${name}, which ${describeExpiry(served.notAfter, now)}`);
  } else {
    add("identity-served-validity", "ok", `identity service ${address} serves ${name}, valid now and ${describeExpiry(served.notAfter, now)}`);
  }
  const issuer = chain[1];
  if (issuer === undefined) {
    add("identity-issuer-validity", "error", `identity service ${address} sent no issuer certificate with its own: proxies cannot build a chain to the anchors`);
  } else {
    const issuerName = `issuer ${issuer.subject.text} (served by ${address})`;
    const remainingMs = issuer.notAfter.getTime() - now.getTime();
    if (remainingMs <= 0 || issuer.notBefore.getTime() > now.getTime()) {
      add("identity-issuer-validity", "error", `${issuerName} is not valid now (${issuer.notBefore.toISOString()} to ${issuer.notAfter.toISOString()})`);
    } else if (remainingMs <= options.warnMs) {
      add("identity-issuer-validity", "warning", `${issuerName} ${describeExpiry(issuer.notAfter, now)} (at ${issuer.notAfter.toISOString()}), within the ${formatDurationMs(options.warnMs)} warning window: rotate it`);
    } else {
      add("identity-issuer-validity", "ok", `${issuerName} ${describeExpiry(issuer.notAfter, now)}`);
    }
  }
  if (options.anchors !== undefined && options.anchors.length > 0) {
    const verified = await verifyChain({ leaf: served.der, intermediates: chain.slice(1).map((c) => c.der), anchors: options.anchors, now, purpose: "serverAuth" });
    if (verified.ok) {
      add("identity-chain", "ok", `identity service ${address} chains to trust anchor ${nameCa(verified.chain[verified.chain.length - 1]!)}`);
    } else {
      add("identity-chain", "error", `identity service ${address} does not chain to the trust anchors: ${verified.reason} (${verified.code}); proxies will refuse it`);
    }
  }
  return { source: `identity service ${address}`, chain: chain.map((c) => c.der) };
}

/**
 * The certificate a proxy holds (`GET /identity`): which issuer and anchor it
 * chains to — under `anchors` when given, else under the proxy's own trust
 * bundle — so that rotation progress is visible; with `anchors`, also whether
 * the proxy trusts exactly those anchors (it has loaded the bundle). Returns
 * the certificate, or undefined when it could not be read (an error finding).
 */
export async function checkProxyChain(
  options: { address: string; now: Date; anchors?: Uint8Array[]; anchorsFile?: string; timeoutMs?: number },
  add: Add,
): Promise<RunningCertificate | undefined> {
  const { address, now } = options;
  let running: RunningCertificate;
  try {
    running = await runningProxyCertificate({ address, timeoutMs: options.timeoutMs ?? RUNNING_CHECK_TIMEOUT_MS });
  } catch (error) {
    const message = (error as Error).message.startsWith("proxy ") ? (error as Error).message : `proxy ${address}: ${(error as Error).message}`;
    // An older proxy is not a broken one; a check that needs its certificate (a candidate bundle) still fails.
    add("proxy-chain", isNoIdentityEndpoint(error) ? "warning" : "error", message);
    return undefined;
  }
  const given = options.anchors !== undefined && options.anchors.length > 0;
  const under = given ? options.anchors! : (running.trustAnchors ?? []);
  const verified = await verifyRunning(running, under, now);
  const bundle = given ? (options.anchorsFile ?? "the trust anchors") : "its own trust bundle";
  if (verified.ok) {
    add("proxy-chain", "ok", `proxy ${address} holds ${verified.identity}: issuer ${nameCa(verified.issuer)}, trust anchor ${nameCa(verified.anchor)}`);
  } else {
    add("proxy-chain", "error", `proxy ${address} holds ${verified.identity}, which does NOT verify under ${bundle}: ${verified.reason} (${verified.code}); peers with that bundle refuse it`);
  }
  if (given) {
    const held = new Set((running.trustAnchors ?? []).map(fingerprint));
    const wanted = new Set(options.anchors!.map(fingerprint));
    const missing = [...wanted].filter((f) => !held.has(f));
    const extra = [...held].filter((f) => !wanted.has(f));
    if (missing.length > 0) {
      add("proxy-anchors", "error", `proxy ${address} does not trust ${missing.length} of the ${wanted.size} anchors of ${bundle} yet (it holds ${held.size}): it has not loaded that bundle`);
    } else if (extra.length > 0) {
      add("proxy-anchors", "warning", `proxy ${address} trusts ${extra.length} anchor${extra.length === 1 ? "" : "s"} besides those of ${bundle}: it has not loaded that bundle yet`);
    } else {
      add("proxy-anchors", "ok", `proxy ${address} trusts exactly the ${wanted.size} anchor${wanted.size === 1 ? "" : "s"} of ${bundle}`);
    }
  }
  return running;
}

function fingerprint(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex");
}

/**
 * A running proxy's admin port: `/ready` must answer 200 (the proxy holds a
 * certificate), and `/metrics` must report a certificate that has not
 * expired (`identity_cert_expiration_timestamp_seconds`). Failed refreshes
 * (`identity_cert_refreshes_total{result!="ok"}`) are a warning.
 */
export async function checkProxyAdmin(options: { address: string; now: Date; timeoutMs?: number }, add: Add): Promise<void> {
  const { address, now } = options;
  const timeoutMs = options.timeoutMs ?? RUNNING_CHECK_TIMEOUT_MS;
  try {
    const ready = await getAdmin({ address, path: "/ready", timeoutMs });
    if (ready.status === 200) {
      add("proxy-ready", "ok", `proxy ${address} is ready`);
    } else {
      add("proxy-ready", "error", `proxy ${address} is not ready: HTTP ${ready.status} ${oneLine(ready.body)}`);
    }
  } catch (error) {
    add("proxy-ready", "error", `proxy ${address}: ${(error as Error).message}`);
    return;
  }
  let samples;
  try {
    const metrics = await getAdmin({ address, path: "/metrics", timeoutMs });
    if (metrics.status !== 200) throw new Error(`/metrics answered HTTP ${metrics.status}`);
    samples = parsePrometheusText(metrics.body);
  } catch (error) {
    add("proxy-cert-expiry", "error", `proxy ${address}: cannot read its metrics: ${(error as Error).message}`);
    return;
  }
  const expiry = findSamples(samples, "identity_cert_expiration_timestamp_seconds")[0];
  if (expiry === undefined || !Number.isFinite(expiry.value) || expiry.value <= 0) {
    add("proxy-cert-expiry", "error", `proxy ${address} reports no certificate expiry (identity_cert_expiration_timestamp_seconds): it holds no certificate`);
  } else {
    const notAfter = new Date(expiry.value * 1000);
    add(
      "proxy-cert-expiry",
      notAfter.getTime() > now.getTime() ? "ok" : "error",
      `proxy ${address} certificate ${describeExpiry(notAfter, now)} (at ${notAfter.toISOString()})`,
    );
  }
  const failed = findSamples(samples, "identity_cert_refreshes_total").filter((s) => s.labels.result !== "ok").reduce((n, s) => n + s.value, 0);
  if (failed > 0) {
    add("proxy-cert-refresh", "warning", `proxy ${address} has ${failed} failed certificate refresh${failed === 1 ? "" : "es"} (identity_cert_refreshes_total): check the identity service`);
  }
}

function oneLine(text: string): string {
  const line = text.trim().split("\n")[0] ?? "";
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
