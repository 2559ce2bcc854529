import { CliError } from "../errors.ts";
import { collectEdges, kubernetesEndpoints, plaintextEdges, proxyAdminTargets, readKubernetesPods, readRegistryEndpoints, type Edge, type EdgeEnd, type EdgeReport, type RegistryEndpoint } from "../mesh/edges.ts";
import type { Output } from "../output.ts";

export interface EdgeSourceOptions {
  /** `--proxy-admin` addresses. */
  proxyAdmins: string[];
  /** A destination registry file: names its endpoints, and its meshed endpoints' proxies are scraped at `<address>:<adminPort>`. */
  registryFile?: string;
  adminPort: number;
  controlNamespace: string;
  trustDomain: string;
  /** `--kubernetes`: the meshed pods' proxies, read at `<pod IP>:<admin port from the pod spec>`; every running pod names its IP. */
  kubernetes?: { kubeconfig?: string; namespace?: string };
}

export interface EdgesOptions extends EdgeSourceOptions {
  output: "table" | "wide" | "json";
  /** Time between the two scrapes (rates, active edges); 0 for one scrape. */
  windowMs: number;
  requireSecured: boolean;
  timeoutMs?: number;
}

/** The proxies to scrape and the names of workloads, from the flags. Throws `CliError` ERR_USAGE when there is no proxy, ERR_CONNECT when the pods cannot be listed. */
export async function resolveEdgeSources(options: EdgeSourceOptions): Promise<{ admins: string[]; registry: RegistryEndpoint[] }> {
  const registry = options.registryFile === undefined ? [] : await readRegistryEndpoints({ file: options.registryFile, controlNamespace: options.controlNamespace, trustDomain: options.trustDomain });
  const proxyAdmins = [...options.proxyAdmins];
  if (options.kubernetes !== undefined) {
    const pods = await readKubernetesPods(options.kubernetes);
    const found = kubernetesEndpoints(pods, { controlNamespace: options.controlNamespace, trustDomain: options.trustDomain, adminPort: options.adminPort });
    registry.push(...found.registry);
    proxyAdmins.push(...found.admins);
    if (found.admins.length === 0) throw new CliError("ERR_USAGE", `no meshed pod (a running pod with a linkerd-proxy container) in ${options.kubernetes.namespace === undefined ? "the cluster" : `namespace ${options.kubernetes.namespace}`}`);
  }
  const admins = proxyAdminTargets({ proxyAdmins, registry, adminPort: options.adminPort });
  if (admins.length === 0) throw new CliError("ERR_USAGE", "no proxy to read: give --proxy-admin <host:port>, --registry <file> with meshed endpoints, or --kubernetes");
  return { admins, registry };
}

/**
 * `meshtls edges`: one row per edge. Unreachable proxies are named on
 * stderr; with `--require-secured`, an unreachable proxy or an active
 * plaintext edge is `CliError` ERR_CHECK (exit 1), after the table.
 */
export async function showEdges(options: EdgesOptions, output: Output): Promise<EdgeReport> {
  const { admins, registry } = await resolveEdgeSources(options);
  const report = await collectEdges({ admins, registry, windowMs: options.windowMs, ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) });
  if (options.output === "json") output.out(JSON.stringify(report, null, 2));
  else output.out(formatEdges(report, options.output === "wide"));
  const failed = report.proxies.filter((p) => p.error !== undefined);
  for (const p of failed) output.err(`meshtls: proxy ${p.admin} not read: ${p.error}`);
  if (failed.length === report.proxies.length) throw new CliError("ERR_CONNECT", "no proxy could be read");
  if (options.requireSecured) {
    const plain = plaintextEdges(report);
    for (const e of plain) output.err(`meshtls: plaintext edge ${endName(e.source)} -> ${endName(e.destination)} (${reasonOf(e)})`);
    if (plain.length > 0 || failed.length > 0) {
      throw new CliError("ERR_CHECK", `--require-secured: ${plain.length} active plaintext edge${plain.length === 1 ? "" : "s"}${failed.length > 0 ? `, ${failed.length} proxy not read` : ""}`);
    }
  }
  return report;
}

/** `ns/name`, or `(unmeshed)` / `(unknown)` for a peer nothing names, with the address dialled when there is one. */
export function endName(end: EdgeEnd): string {
  if (end.workload !== null) return end.workload;
  const what = end.meshed ? "(unknown)" : "(unmeshed)";
  return end.address === undefined ? what : `${what} ${end.address}`;
}

/** `SECURED ✓`, or the plaintext reason. */
export function reasonOf(edge: Edge): string {
  if (edge.secured) return "SECURED ✓";
  if (edge.tls === "no_identity") return edge.noTlsReason ?? "no_identity";
  if (edge.tls === "opaque") return "app TLS (opaque)";
  return edge.tls;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)}KiB`;
  return `${(n / 1024 / 1024).toFixed(1)}MiB`;
}

function formatMs(value: number | null | undefined): string {
  return value === null || value === undefined ? "-" : `${value}ms`;
}

/** The table (`-o wide` adds addresses, open connections, bytes each way, latency p50/p99 and where each edge was read). */
export function formatEdges(report: EdgeReport, wide: boolean): string {
  const header = wide
    ? ["SRC", "SRC_IDENTITY", "DST", "DST_ADDRESS", "DST_IDENTITY", "SECURED", "ACTIVE", "CONNS", "OPEN", "SENT", "RECEIVED", "RPS", "SUCCESS", "P50", "P95", "P99", "SEEN_BY"]
    : ["SRC", "DST", "SRC_IDENTITY", "DST_IDENTITY", "SECURED", "CONNS", "BYTES", "RPS", "SUCCESS", "P95"];
  const rows = report.edges.map((e) => {
    const rps = e.http?.requestsPerSecond === undefined ? "-" : String(e.http.requestsPerSecond);
    const success = e.http === undefined || e.http.successRate === null ? "-" : `${(e.http.successRate * 100).toFixed(1)}%`;
    return wide
      ? [endName(e.source), e.source.identity ?? "-", endName(e.destination), e.destination.address ?? "-", e.destination.identity ?? "-", reasonOf(e), e.active ? "yes" : "no",
        String(e.connections.opened), String(e.connections.open), formatBytes(e.bytes.sent), formatBytes(e.bytes.received), rps, success,
        formatMs(e.http?.latencyMs.p50), formatMs(e.http?.latencyMs.p95), formatMs(e.http?.latencyMs.p99), `${e.observedBy.direction} ${e.observedBy.admin}`]
      : [endName(e.source), endName(e.destination), e.source.identity ?? "-", e.destination.identity ?? "-", reasonOf(e), String(e.connections.opened),
        formatBytes(e.bytes.sent + e.bytes.received), rps, success, formatMs(e.http?.latencyMs.p95)];
  });
  if (rows.length === 0) return "no edges (no connections seen by the proxies read)";
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ")).join("\n");
}
