import { readFile } from "node:fs/promises";
import { CONTROL_PLANE_NS_LABEL, createKubeApiFromConfig, type Pod } from "@meshtls/kubernetes";
import { parse as parseYaml } from "yaml";
import { CliError, describeError } from "../errors.ts";
import { scrapeMetrics, splitHostPort } from "./admin-client.ts";
import type { Sample } from "./prometheus.ts";
import { fetchProxyIdentity } from "./running-certificates.ts";

/** Linkerd's proxy admin port, where a registry endpoint's proxy is looked for. */
export const DEFAULT_PROXY_ADMIN_PORT = 4191;

/** A workload as the registry file names it: `namespace/service` for an endpoint address. */
export interface RegistryEndpoint {
  address: string;
  workload: string;
  identity: string | null;
  meshed: boolean;
}

/** One end of an edge. `workload` is null when nothing names the peer (an unmeshed client). */
export interface EdgeEnd {
  workload: string | null;
  identity: string | null;
  meshed: boolean;
  /** The endpoint dialled (outbound), when known. */
  address?: string;
}

/** One edge: the connections from a source to a destination in one TLS state. */
export interface Edge {
  source: EdgeEnd;
  destination: EdgeEnd;
  /** Mesh mTLS (`tls="true"`). */
  secured: boolean;
  /** The proxy's `tls` label: `true`, `no_identity`, `opaque`, `disabled`. */
  tls: string;
  /** With `tls="no_identity"`: the proxy's named reason (`no_tls_from_remote`, `not_provided_by_service_discovery`, `port_skipped`). */
  noTlsReason?: string;
  /** The proxy whose metrics the edge comes from, and which side it is. */
  observedBy: { admin: string; direction: "inbound" | "outbound" };
  /** Legs opened since the proxy started, and open now. */
  connections: { opened: number; open: number };
  /** From the source's side: bytes it sent, bytes it received. */
  bytes: { sent: number; received: number };
  /** Open connections now, or connections opened or requests made within the window. */
  active: boolean;
  /** Present when the proxy counted HTTP requests on the edge (request_total / response_total / response_latency_ms). */
  http?: HttpStats;
}

export interface HttpStats {
  /** Since the proxy started. */
  requests: number;
  /** Over the window: requests per second; absent with a single scrape. */
  requestsPerSecond?: number;
  /** Successful responses / classified responses, over the window when there is one (else since start); null without responses. */
  successRate: number | null;
  /** Latency percentiles in ms (Prometheus' histogram_quantile over response_latency_ms), over the window when there is one. */
  latencyMs: { p50: number | null; p95: number | null; p99: number | null };
}

/** What one proxy answered. */
export interface ProxyStatus {
  admin: string;
  workload: string | null;
  identity: string | null;
  /** Why it could not be read; absent when it was. */
  error?: string;
}

export interface EdgeReport {
  collectedAt: string;
  /** Time between the two scrapes rates come from; 0 for a single scrape. */
  windowMs: number;
  proxies: ProxyStatus[];
  edges: Edge[];
}

/** One proxy's scrape: its identity (GET /identity) and samples. */
export interface ProxyScrape {
  admin: string;
  identity: string | null;
  samples: Sample[];
  error?: string;
}

/**
 * Reads a destination registry file (docs/reference/registry-file.md) for
 * the names of its endpoints: `namespace/service` and the identity of each
 * address. Throws `CliError` ERR_IO / ERR_INPUT.
 */
export async function readRegistryEndpoints(options: { file: string; controlNamespace: string; trustDomain: string }): Promise<RegistryEndpoint[]> {
  let text: string;
  try {
    text = await readFile(options.file, "utf8");
  } catch (error) {
    throw new CliError("ERR_IO", `cannot read ${options.file}: ${describeError(error)}`, { cause: error });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (error) {
    throw new CliError("ERR_INPUT", `${options.file} is not YAML: ${describeError(error)}`, { cause: error });
  }
  const services = (doc as { services?: unknown } | null)?.services ?? [];
  if (!Array.isArray(services)) throw new CliError("ERR_INPUT", `${options.file}: services is not a list`);
  const out: RegistryEndpoint[] = [];
  for (const service of services as Array<Record<string, unknown>>) {
    const namespace = typeof service.namespace === "string" ? service.namespace : "default";
    const name = String(service.name);
    for (const endpoint of (Array.isArray(service.endpoints) ? service.endpoints : []) as Array<Record<string, unknown>>) {
      if (typeof endpoint.address !== "string") throw new CliError("ERR_INPUT", `${options.file}: service ${name} has an endpoint without an address`);
      const meshed = endpoint.meshed !== false;
      const account = typeof endpoint.serviceAccount === "string" ? endpoint.serviceAccount : "default";
      out.push({
        address: endpoint.address,
        workload: `${namespace}/${name}`,
        identity: meshed ? `${account}.${namespace}.serviceaccount.identity.${options.controlNamespace}.${options.trustDomain}` : null,
        meshed,
      });
    }
  }
  return out;
}

/** The proxy container `meshtls inject` (and Linkerd's injector) adds. */
export const PROXY_CONTAINER = "linkerd-proxy";
/** The proxy container's admin port name in the pod spec. */
export const PROXY_ADMIN_PORT_NAME = "linkerd-admin";

/** A pod's proxy admin port from its spec: the `linkerd-admin` container port, else the port of the admin listen address in its env, else `fallback`. */
export function podAdminPort(pod: Pod, fallback: number): number | undefined {
  const proxy = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])].find((c) => c.name === PROXY_CONTAINER);
  if (proxy === undefined) return undefined;
  const named = proxy.ports?.find((p) => p.name === PROXY_ADMIN_PORT_NAME)?.containerPort;
  if (named !== undefined) return named;
  const listen = proxy.env?.find((e) => e.name === "MESHTLS_PROXY_ADMIN" || e.name === "LINKERD2_PROXY_ADMIN_LISTEN_ADDR")?.value;
  const port = Number(/:(\d{1,5})$/.exec(listen ?? "")?.[1]);
  return Number.isInteger(port) && port > 0 && port <= 65535 ? port : fallback;
}

/**
 * The pods as edge sources: every running pod with an IP names its address
 * (`namespace/serviceaccount`, as identities name workloads), and a meshed
 * one (a `linkerd-proxy` container) is read at `<pod IP>:<its admin port>`.
 */
export function kubernetesEndpoints(pods: readonly Pod[], options: { controlNamespace: string; trustDomain: string; adminPort: number }): { registry: RegistryEndpoint[]; admins: string[] } {
  const registry: RegistryEndpoint[] = [];
  const admins: string[] = [];
  for (const pod of pods) {
    const ip = pod.status?.podIP;
    if (pod.status?.phase !== "Running" || ip === undefined || ip === "" || pod.spec?.hostNetwork === true) continue;
    const namespace = pod.metadata.namespace ?? "default";
    const account = pod.spec?.serviceAccountName ?? "default";
    const adminPort = podAdminPort(pod, options.adminPort);
    const meshed = adminPort !== undefined;
    const controlNamespace = pod.metadata.labels?.[CONTROL_PLANE_NS_LABEL] ?? options.controlNamespace;
    registry.push({ address: ip, workload: `${namespace}/${account}`, identity: meshed ? `${account}.${namespace}.serviceaccount.identity.${controlNamespace}.${options.trustDomain}` : null, meshed });
    if (meshed) admins.push(ip.includes(":") ? `[${ip}]:${adminPort}` : `${ip}:${adminPort}`);
  }
  return { registry, admins };
}

/**
 * Lists the pods (of `namespace`, or all) through the API server the
 * kubeconfig names (`kubeconfig`, else KUBECONFIG, ~/.kube/config, then
 * in-cluster). Throws `CliError` ERR_CONNECT.
 */
export async function readKubernetesPods(options: { kubeconfig?: string; namespace?: string; timeoutMs?: number }): Promise<Pod[]> {
  try {
    const api = createKubeApiFromConfig(options.kubeconfig === undefined ? {} : { kubeconfig: options.kubeconfig });
    const path = options.namespace === undefined ? "/api/v1/pods" : `/api/v1/namespaces/${encodeURIComponent(options.namespace)}/pods`;
    const list = await api.request<{ items?: Pod[] }>({ method: "GET", path, timeoutMs: options.timeoutMs ?? 10_000 });
    return list.items ?? [];
  } catch (error) {
    throw new CliError("ERR_CONNECT", `cannot list pods from the Kubernetes API: ${describeError(error)}`, { cause: error });
  }
}

/**
 * The admin addresses to scrape: every `--proxy-admin`, then each meshed
 * registry endpoint's proxy at `<address>:<adminPort>` unless a
 * `--proxy-admin` is already on that address.
 */
export function proxyAdminTargets(options: { proxyAdmins: string[]; registry: RegistryEndpoint[]; adminPort: number }): string[] {
  const targets = [...new Set(options.proxyAdmins)];
  const hosts = new Set(targets.map((a) => splitHostPort(a).host));
  for (const endpoint of options.registry) {
    if (!endpoint.meshed || hosts.has(endpoint.address)) continue;
    hosts.add(endpoint.address);
    targets.push(endpoint.address.includes(":") ? `[${endpoint.address}]:${options.adminPort}` : `${endpoint.address}:${options.adminPort}`);
  }
  return targets;
}

/** Scrapes every proxy's /identity and /metrics at once; a proxy that fails carries its error. */
export async function scrapeProxies(options: { admins: string[]; timeoutMs?: number }): Promise<ProxyScrape[]> {
  return Promise.all(
    options.admins.map(async (admin): Promise<ProxyScrape> => {
      const timeout = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };
      try {
        const [identity, samples] = await Promise.all([
          fetchProxyIdentity({ address: admin, ...timeout }).then((id) => id.identity, () => null),
          scrapeMetrics({ address: admin, ...timeout }),
        ]);
        return { admin, identity, samples };
      } catch (error) {
        return { admin, identity: null, samples: [], error: describeError(error) };
      }
    }),
  );
}

/** `sa.ns.serviceaccount.identity.…` → `ns/sa`; null for anything else. */
export function workloadOfIdentity(identity: string): string | null {
  const m = /^([^.]+)\.([^.]+)\.serviceaccount\.identity\./.exec(identity);
  return m === null ? null : `${m[2]}/${m[1]}`;
}

/** Internal: an edge with the raw counters the window arithmetic needs. */
interface RawEdge extends Edge {
  key: string;
  requests: number;
  successes: number;
  failures: number;
  /** Cumulative response_latency_ms buckets by upper bound. */
  buckets: Map<number, number>;
}

interface Names {
  byAddress: Map<string, { workload: string; identity: string | null; meshed: boolean }>;
  byIdentity: Map<string, string>;
  scrapedIdentities: Set<string>;
}

function namesOf(scrapes: ProxyScrape[], registry: RegistryEndpoint[]): Names {
  const byAddress = new Map<string, { workload: string; identity: string | null; meshed: boolean }>();
  const byIdentity = new Map<string, string>();
  for (const e of registry) {
    byAddress.set(e.address, { workload: e.workload, identity: e.identity, meshed: e.meshed });
    if (e.identity !== null && !byIdentity.has(e.identity)) byIdentity.set(e.identity, e.workload);
  }
  const scrapedIdentities = new Set<string>();
  for (const s of scrapes) {
    if (s.identity === null || s.error !== undefined) continue;
    scrapedIdentities.add(s.identity);
    const host = splitHostPort(s.admin).host;
    const workload = byAddress.get(host)?.workload ?? byIdentity.get(s.identity) ?? workloadOfIdentity(s.identity) ?? s.admin;
    if (!byAddress.has(host)) byAddress.set(host, { workload, identity: s.identity, meshed: true });
    if (!byIdentity.has(s.identity)) byIdentity.set(s.identity, workload);
  }
  return { byAddress, byIdentity, scrapedIdentities };
}

function proxyEnd(scrape: ProxyScrape, names: Names): EdgeEnd {
  const host = splitHostPort(scrape.admin).host;
  const workload = names.byAddress.get(host)?.workload ?? (scrape.identity === null ? scrape.admin : (names.byIdentity.get(scrape.identity) ?? scrape.admin));
  return { workload, identity: scrape.identity, meshed: true };
}

function hostOf(targetAddr: string): string {
  try {
    return splitHostPort(targetAddr).host;
  } catch {
    return targetAddr;
  }
}

/** The edge key of a leg or request sample of `scrape`, with both ends; undefined for legs that are no edge (loopback, the app's side). */
function edgeOf(scrape: ProxyScrape, labels: Record<string, string>, names: Names, http: boolean): { key: string; edge: Omit<Edge, "connections" | "bytes" | "active"> } | undefined {
  const direction = labels.direction;
  const tls = labels.tls ?? "";
  const reason = tls === "no_identity" ? labels.no_tls_reason : undefined;
  if (reason === "loopback" || tls === "") return undefined;
  const self = proxyEnd(scrape, names);
  const state = { secured: tls === "true", tls, ...(reason === undefined ? {} : { noTlsReason: reason }) };
  if (direction === "outbound" && (http || labels.peer === "dst")) {
    const address = labels.target_addr ?? "";
    const known = names.byAddress.get(hostOf(address));
    const identity = labels.server_id ?? known?.identity ?? null;
    const meshed = tls === "true" || (reason !== "not_provided_by_service_discovery" && (known?.meshed ?? false));
    const workload = known?.workload ?? (labels.server_id === undefined ? null : (names.byIdentity.get(labels.server_id) ?? workloadOfIdentity(labels.server_id)));
    // By host: HTTP series name the workload port (the transport header's target), TCP legs the proxy's inbound port.
    const key = `out ${scrape.admin} ${hostOf(address)} ${tls} ${labels.server_id ?? ""} ${reason ?? ""}`;
    return { key, edge: { source: self, destination: { workload, identity: meshed ? identity : null, meshed, address }, ...state, observedBy: { admin: scrape.admin, direction: "outbound" } } };
  }
  if (direction === "inbound" && (http || labels.peer === "src")) {
    const clientId = labels.client_id;
    // A meshed client whose proxy was scraped: its outbound side reports the edge.
    if (clientId !== undefined && names.scrapedIdentities.has(clientId)) return undefined;
    const source: EdgeEnd = clientId === undefined
      ? { workload: null, identity: null, meshed: false }
      : { workload: names.byIdentity.get(clientId) ?? workloadOfIdentity(clientId), identity: clientId, meshed: true };
    const key = `in ${scrape.admin} ${tls} ${clientId ?? ""} ${reason ?? ""}`;
    return { key, edge: { source, destination: self, ...state, observedBy: { admin: scrape.admin, direction: "inbound" } } };
  }
  return undefined;
}

function rawEdges(scrapes: ProxyScrape[], registry: RegistryEndpoint[]): Map<string, RawEdge> {
  const names = namesOf(scrapes, registry);
  const edges = new Map<string, RawEdge>();
  const at = (scrape: ProxyScrape, labels: Record<string, string>, http: boolean): RawEdge | undefined => {
    const found = edgeOf(scrape, labels, names, http);
    if (found === undefined) return undefined;
    let edge = edges.get(found.key);
    if (edge === undefined) {
      edge = { ...found.edge, key: found.key, connections: { opened: 0, open: 0 }, bytes: { sent: 0, received: 0 }, active: false, requests: 0, successes: 0, failures: 0, buckets: new Map() };
      edges.set(found.key, edge);
    }
    return edge;
  };
  for (const scrape of scrapes) {
    for (const s of scrape.samples) {
      const { name, labels, value } = s;
      if (!Number.isFinite(value)) continue;
      switch (name) {
        case "tcp_open_total":
        case "tcp_open_connections":
        case "tcp_read_bytes_total":
        case "tcp_write_bytes_total": {
          const edge = at(scrape, labels, false);
          if (edge === undefined) break;
          // The address dialled is the TCP leg's (an edge first met in an HTTP series has the workload port).
          if (labels.direction === "outbound" && labels.target_addr !== undefined) edge.destination.address = labels.target_addr;
          if (name === "tcp_open_total") edge.connections.opened += value;
          else if (name === "tcp_open_connections") edge.connections.open += value;
          // Outbound: the proxy reads what the destination sent (received by the source); inbound: what the source sent.
          else if ((name === "tcp_read_bytes_total") === (labels.direction === "outbound")) edge.bytes.received += value;
          else edge.bytes.sent += value;
          break;
        }
        case "request_total": {
          const edge = at(scrape, labels, true);
          if (edge !== undefined) edge.requests += value;
          break;
        }
        case "response_total": {
          const edge = at(scrape, labels, true);
          if (edge === undefined) break;
          if (labels.classification === "success") edge.successes += value;
          else edge.failures += value;
          break;
        }
        case "response_latency_ms_bucket": {
          const edge = at(scrape, labels, true);
          if (edge === undefined) break;
          const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
          if (!Number.isNaN(le)) edge.buckets.set(le, (edge.buckets.get(le) ?? 0) + value);
          break;
        }
        default:
      }
    }
  }
  return edges;
}

/** Prometheus' histogram_quantile: linear interpolation within the bucket that holds the rank; null without observations. */
export function histogramQuantile(q: number, buckets: Map<number, number>): number | null {
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const total = sorted[sorted.length - 1]?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, count] of sorted) {
    if (count >= rank) {
      // The +Inf bucket: the highest finite bound, as Prometheus answers.
      if (le === Infinity) return lowerBound;
      return lowerBound + ((le - lowerBound) * (rank - lowerCount)) / Math.max(count - lowerCount, Number.MIN_VALUE);
    }
    lowerBound = le;
    lowerCount = count;
  }
  return lowerBound;
}

function round(value: number | null): number | null {
  return value === null ? null : Math.round(value * 100) / 100;
}

/**
 * Edges from one or two rounds of scrapes (docs/reference/observability.md):
 * one per outbound leg to an endpoint (from the source's proxy) and one per
 * inbound leg from a client whose proxy was not scraped (unmeshed clients
 * among them); legs between a proxy and its own workload are not edges.
 * With `previous` (scraped `windowMs` earlier), rates and percentiles are
 * over the window and `active` means something happened in it.
 */
export function deriveEdges(options: { current: ProxyScrape[]; previous?: ProxyScrape[]; windowMs?: number; registry?: RegistryEndpoint[]; now?: () => Date }): EdgeReport {
  const registry = options.registry ?? [];
  const current = rawEdges(options.current, registry);
  const previous = options.previous === undefined ? undefined : rawEdges(options.previous, registry);
  const windowMs = previous === undefined ? 0 : (options.windowMs ?? 0);
  const names = namesOf(options.current, registry);
  const edges: Edge[] = [];
  for (const raw of current.values()) {
    const before = previous?.get(raw.key);
    const delta = (now: number, then: number | undefined): number => Math.max(0, now - (then ?? 0));
    const opened = delta(raw.connections.opened, before?.connections.opened);
    const requests = delta(raw.requests, before?.requests);
    const active = raw.connections.open > 0 || (previous !== undefined && (opened > 0 || requests > 0));
    const { key: _key, requests: total, successes, failures, buckets, ...edge } = raw;
    const result: Edge = { ...edge, active };
    if (total > 0 || successes + failures > 0) {
      const win = previous !== undefined && requests > 0;
      const ok = win ? delta(successes, before?.successes) : successes;
      const bad = win ? delta(failures, before?.failures) : failures;
      const windowBuckets = new Map([...buckets].map(([le, count]) => [le, win ? delta(count, before?.buckets.get(le)) : count]));
      result.http = {
        requests: total,
        ...(previous !== undefined && windowMs > 0 ? { requestsPerSecond: round(requests / (windowMs / 1000))! } : {}),
        successRate: ok + bad === 0 ? null : round(ok / (ok + bad)),
        latencyMs: { p50: round(histogramQuantile(0.5, windowBuckets)), p95: round(histogramQuantile(0.95, windowBuckets)), p99: round(histogramQuantile(0.99, windowBuckets)) },
      };
    }
    edges.push(result);
  }
  // By source, destination and TLS state; unnamed peers after named ones.
  const order = (e: Edge): string => [e.source.workload ?? "\uffff", e.destination.workload ?? "\uffff", e.destination.address ?? "", e.tls].join("\u0000");
  edges.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
  const proxies: ProxyStatus[] = options.current.map((s) => ({
    admin: s.admin,
    workload: s.error === undefined ? (names.byAddress.get(splitHostPort(s.admin).host)?.workload ?? null) : null,
    identity: s.identity,
    ...(s.error === undefined ? {} : { error: s.error }),
  }));
  return { collectedAt: (options.now?.() ?? new Date()).toISOString(), windowMs, proxies, edges };
}

/** Edges that break `--require-secured`: active, plaintext (no mesh TLS, not the app's own TLS). */
export function plaintextEdges(report: EdgeReport): Edge[] {
  return report.edges.filter((e) => e.active && (e.tls === "no_identity" || e.tls === "disabled"));
}

/**
 * Collects edges: scrapes every proxy, and again after `windowMs` when it is
 * above 0 (rates, and which edges are active now). One rule for `meshtls
 * edges` and `meshtls viz`.
 */
export async function collectEdges(options: { admins: string[]; registry?: RegistryEndpoint[]; windowMs: number; timeoutMs?: number; signal?: AbortSignal }): Promise<EdgeReport> {
  const scrape = (): Promise<ProxyScrape[]> => scrapeProxies({ admins: options.admins, ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) });
  const first = await scrape();
  if (options.windowMs <= 0) return deriveEdges({ current: first, ...(options.registry === undefined ? {} : { registry: options.registry }) });
  const started = Date.now();
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, options.windowMs);
    options.signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
  const second = await scrape();
  return deriveEdges({ current: second, previous: first, windowMs: Date.now() - started, ...(options.registry === undefined ? {} : { registry: options.registry }) });
}
