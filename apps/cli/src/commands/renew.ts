import { describeExpiry } from "../duration.ts";
import { CliError, describeError } from "../errors.ts";
import { requestAdmin } from "../mesh/admin-client.ts";
import { nameCa, runningProxyCertificate, verifyRunning } from "../mesh/running-certificates.ts";
import type { Output } from "../output.ts";

/** Default bound of one proxy's renewal: 30 s (a Certify call and its checks, on a loaded machine). */
export const DEFAULT_RENEW_TIMEOUT_MS = 30_000;

export interface RenewProxiesOptions {
  /** Proxies' admin addresses (`host:port`); each is asked in turn. */
  proxyAdmins: string[];
  /** Bound of each proxy's renewal. Default 30 s. */
  timeoutMs?: number;
  /** Clock for "expires in". Default `() => new Date()`. */
  now?: () => Date;
}

/** One proxy's outcome. */
export type RenewResult = { address: string; ok: true; notAfter: string } | { address: string; ok: false; reason: string };

/**
 * `meshtls renew`: asks each proxy for a new certificate now (`POST /renew` on
 * its admin port, which answers once the new certificate is in use) instead
 * of waiting for its refresh at 70 % of the leaf's life, and prints the new
 * expiry and, when the proxy serves `/identity`, the issuer and anchor the new
 * certificate chains to. Every proxy is tried; throws `CliError` ERR_CONNECT
 * naming those that failed.
 */
export async function renewProxies(options: RenewProxiesOptions, output: Output): Promise<RenewResult[]> {
  if (options.proxyAdmins.length === 0) throw new CliError("ERR_USAGE", "give at least one --proxy-admin");
  const timeoutMs = options.timeoutMs ?? DEFAULT_RENEW_TIMEOUT_MS;
  const results: RenewResult[] = [];
  for (const address of options.proxyAdmins) {
    const result = await renewOne(address, timeoutMs);
    results.push(result);
    if (!result.ok) {
      output.out(`proxy ${address}: NOT renewed: ${result.reason}`);
      continue;
    }
    const now = (options.now ?? (() => new Date()))();
    output.out(`proxy ${address}: renewed; the new certificate ${describeExpiry(new Date(result.notAfter), now)} (at ${result.notAfter})${await describeChain(address, now)}`);
  }
  const failed = results.filter((r) => !r.ok);
  if (failed.length > 0) {
    throw new CliError("ERR_CONNECT", `${failed.length} of ${results.length} prox${results.length === 1 ? "y was" : "ies were"} not renewed: ${failed.map((f) => f.address).join(", ")}`);
  }
  return results;
}

async function renewOne(address: string, timeoutMs: number): Promise<RenewResult> {
  let res;
  try {
    res = await requestAdmin({ address, path: "/renew", method: "POST", accept: "application/json", timeoutMs });
  } catch (error) {
    return { address, ok: false, reason: describeError(error) };
  }
  let body: { notAfter?: unknown; error?: unknown } = {};
  try {
    body = JSON.parse(res.body) as typeof body;
  } catch {
    // reported below with the status
  }
  if (res.status === 200 && typeof body.notAfter === "string" && !Number.isNaN(new Date(body.notAfter).getTime())) {
    return { address, ok: true, notAfter: body.notAfter };
  }
  if (res.status === 404) return { address, ok: false, reason: "the proxy has no POST /renew (a meshtls-proxy older than this CLI?)" };
  const said = typeof body.error === "string" ? body.error : res.body.trim().split("\n")[0]?.slice(0, 200) ?? "";
  return { address, ok: false, reason: `HTTP ${res.status}${said === "" ? "" : `: ${said}`}` };
}

/** ", issuer …, trust anchor …" for the certificate a proxy now holds, or "" when that cannot be read. */
async function describeChain(address: string, now: Date): Promise<string> {
  try {
    const running = await runningProxyCertificate({ address });
    const verified = await verifyRunning(running, running.trustAnchors ?? [], now);
    return verified.ok ? `, issuer ${nameCa(verified.issuer)}, trust anchor ${nameCa(verified.anchor)}` : `; it does NOT verify under the proxy's own trust bundle: ${verified.reason}`;
  } catch {
    return "";
  }
}
