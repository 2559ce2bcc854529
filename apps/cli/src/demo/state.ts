import { findSamples, sumSamples, type Sample } from "../mesh/prometheus.ts";

/** What the demo knows about one workload, from its proxy's /metrics. */
export interface WorkloadView {
  name: string;
  ip: string;
  identity: string;
  policy: string;
  /** From identity_cert_expiration_timestamp_seconds; undefined before the first scrape. */
  certExpiresAt?: Date;
  /** Certificates obtained by this workload's proxies (identity_cert_refreshes_total{result="ok"}, summed over restarts). */
  certificates: number;
  ready: boolean;
}

/** One kind of connection seen in a proxy's tcp_open_total. */
export interface ConnectionView {
  /** The proxy that counted it. */
  workload: string;
  direction: "inbound" | "outbound";
  /** `tls="true"` etc., with the peer identity or the reason, as the proxy labels it. */
  tls: string;
  peer: string;
  opened: number;
}

/** The TLS-state label set of a tcp_open_total sample, as `tls=... server_id=...`. */
export function describeTls(labels: Record<string, string>): { tls: string; peer: string } {
  const tls = labels.tls ?? "?";
  if (tls === "true") {
    const id = labels.server_id ?? labels.client_id;
    const key = labels.server_id === undefined ? "client_id" : "server_id";
    return { tls: "tls=true", peer: id === undefined ? "" : `${key}=${id}` };
  }
  if (tls === "no_identity") return { tls: "tls=no_identity", peer: `no_tls_reason=${labels.no_tls_reason ?? "?"}` };
  if (tls === "opaque") return { tls: "tls=opaque", peer: `sni=${labels.sni ?? "?"}` };
  return { tls: `tls=${tls}`, peer: "" };
}

/** The connections a proxy reports: its tcp_open_total from the peer's side, grouped by TLS state and peer. */
export function connectionsOf(workload: string, samples: Sample[]): ConnectionView[] {
  const out = new Map<string, ConnectionView>();
  for (const s of findSamples(samples, "tcp_open_total")) {
    const direction = s.labels.direction;
    // One leg per connection: the peer's side (src for inbound, dst for outbound).
    if (direction === "inbound" && s.labels.peer !== "src") continue;
    if (direction === "outbound" && s.labels.peer !== "dst") continue;
    if (direction !== "inbound" && direction !== "outbound") continue;
    const { tls, peer } = describeTls(s.labels);
    const key = `${direction} ${tls} ${peer}`;
    const existing = out.get(key);
    if (existing === undefined) out.set(key, { workload, direction, tls, peer, opened: s.value });
    else existing.opened += s.value;
  }
  return [...out.values()];
}

/** Policy denials a proxy counted (inbound_tcp_authz_deny_total). */
export function denials(samples: Sample[]): number {
  return sumSamples(samples, "inbound_tcp_authz_deny_total");
}

/** The certificate expiry a proxy reports, if any. */
export function certExpiry(samples: Sample[]): Date | undefined {
  const value = findSamples(samples, "identity_cert_expiration_timestamp_seconds")[0]?.value;
  return value === undefined || !Number.isFinite(value) || value <= 0 ? undefined : new Date(value * 1000);
}

/** Successful certificate requests a proxy counted. */
export function certificatesObtained(samples: Sample[]): number {
  return sumSamples(samples, "identity_cert_refreshes_total", { result: "ok" });
}

/** Per-request figures of one proxy and direction, from response_total and response_latency_ms. */
export interface RequestView {
  workload: string;
  direction: "inbound" | "outbound";
  responses: number;
  /** Share of responses classified success, 0..1; NaN without responses. */
  successRate: number;
  /** Latency percentiles in ms, interpolated within the histogram's buckets as Prometheus' histogram_quantile does. */
  p50Ms: number;
  p99Ms: number;
}

/** The quantile `q` of a cumulative histogram given as `[upper bound, count]` sorted by bound. */
export function histogramQuantile(q: number, buckets: [number, number][]): number {
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total === 0) return Number.NaN;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [bound, count] of buckets) {
    if (count >= rank) {
      if (!Number.isFinite(bound)) return lowerBound;
      return lowerBound + ((bound - lowerBound) * (rank - lowerCount)) / Math.max(count - lowerCount, 1);
    }
    lowerBound = bound;
    lowerCount = count;
  }
  return lowerBound;
}

/** A proxy's HTTP requests per direction: success rate (Linkerd's classification) and latency percentiles. */
export function requestsOf(workload: string, samples: Sample[]): RequestView[] {
  const out: RequestView[] = [];
  for (const direction of ["outbound", "inbound"] as const) {
    const responses = sumSamples(samples, "response_total", { direction });
    if (responses === 0) continue;
    const success = sumSamples(samples, "response_total", { direction, classification: "success" });
    const byBound = new Map<number, number>();
    for (const s of findSamples(samples, "response_latency_ms_bucket")) {
      if (s.labels.direction !== direction) continue;
      const bound = s.labels.le === "+Inf" ? Number.POSITIVE_INFINITY : Number(s.labels.le);
      byBound.set(bound, (byBound.get(bound) ?? 0) + s.value);
    }
    const buckets = [...byBound.entries()].sort((a, b) => a[0] - b[0]);
    out.push({ workload, direction, responses, successRate: success / responses, p50Ms: histogramQuantile(0.5, buckets), p99Ms: histogramQuantile(0.99, buckets) });
  }
  return out;
}
