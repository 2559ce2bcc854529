import type { Duplex } from "node:stream";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { RETRY_REASONS, type RetryReason } from "./outbound/retry-reason.js";
import type { AuthorizeDecision } from "./policy.js";
import { policyLabel } from "./policy.js";
import { createTapHub, tapPolicy, tapTls } from "./tap.js";
import type { TapAuthzEvent, TapConnectionEvent, TapHub, TapRequestEvent } from "./tap.js";
import type { TlsState } from "./tls-state.js";

/** One side of a proxied connection, as the metrics label it. */
export interface ConnectionLeg {
  direction: "inbound" | "outbound";
  /** `src`: the connection the proxy accepted; `dst`: the one it opened. */
  peer: "src" | "dst";
  /** The address the connection is for (`host:port`). */
  targetAddr: string;
  tls: TlsState;
  /** An inbound client leg: the policy decision on it, shown by its tap events (never a label). */
  decision?: AuthorizeDecision;
}

/** A socket that reports its byte counts (net.Socket and tls.TLSSocket do). */
export type CountedSocket = Duplex & { bytesRead: number; bytesWritten: number };

/** Options of {@link createProxyMetrics}. */
export interface CreateProxyMetricsOptions {
  /** Where the metrics are registered. Default a new Registry. */
  registry?: Registry;
  /**
   * Most distinct values of a label a remote peer or the local application
   * can choose: `sni`, the inbound `target_addr` (the transport header's
   * port), the outbound `target_addr` (the destinations the application
   * dials; each direction its own count); beyond, the value is `overflow`.
   * Default 100.
   */
  maxPeerLabelValues?: number;
  /** Bounds of the admin `/tap` stream. Default 8 subscribers, 1000 queued events each. */
  tap?: { maxSubscribers?: number; maxBufferedEvents?: number };
}

/** Which listener refused a connection, and why (`tcp_connections_refused_total`). */
export type RefusedListener = "inbound" | "outbound" | "route" | "transparent" | "admin" | "tap";

/** The proxy's Prometheus metrics, with the exact names and labels of ARCHITECTURE.md. */
export interface ProxyMetrics {
  readonly registry: Registry;
  /** The live events the admin `/tap` streams; published only while someone taps. */
  readonly tap: TapHub;
  /** Counts a leg open now and closed (with its bytes) when the socket closes. */
  trackConnection(socket: CountedSocket, leg: ConnectionLeg): void;
  /**
   * Counts a leg open now; the caller calls the result when the socket has
   * closed (more than once is harmless). For a caller that listens for the
   * close anyway: one listener per connection, not one per bookkeeper.
   */
  openConnection(socket: CountedSocket, leg: ConnectionLeg): () => void;
  /** Counts a policy decision; `peer` (the client's address and identity) ties its tap event to the connection's. */
  recordAuthz(decision: AuthorizeDecision, targetAddr: string, peer?: { address?: string; id?: string }): void;
  /** Counts an open connection closed because its port's new policy denies it. */
  recordAuthzTerminate(decision: AuthorizeDecision & { allow: false }, targetAddr: string): void;
  /** Counts a connection-level failure (`error` is a snake_case code such as `tls_detect_timeout`). */
  recordError(direction: "inbound" | "outbound", error: string, targetAddr?: string): void;
  /** Counts a connection a listener closed at once, before reading from it. */
  recordRefused(listener: RefusedListener, reason: "max_connections"): void;
  /** Counts an outbound connection or request tried on another endpoint after an attempt that sent nothing failed (`outbound_connect_retries_total`). */
  recordConnectRetry(reason: RetryReason): void;
  /** Counts an endpoint set aside after a failed connect (`outbound_endpoints_set_aside_total`). */
  recordEndpointSetAside(reason: RetryReason): void;
  /** Currently open legs (src and dst). */
  openConnections(): number;
  /** Counts a completed mesh TLS handshake by its key exchange group (`tls_handshakes_total`). */
  recordTlsHandshake(direction: "inbound" | "outbound", group: string): void;
  /** Counts a request whose stream began (`request_total`); the result records its response once it completed or failed. */
  recordHttpRequest(request: HttpRequestLabels): (outcome: HttpOutcome) => void;
  /** Counts an HTTP request allowed or denied by the connection's authorization (`inbound_http_authz_allow_total` / `_deny_total`). */
  recordHttpAuthz(decision: AuthorizeDecision, targetAddr: string): void;
}

/** Who an HTTP request was for, as `request_total` and `response_*` label it. */
export interface HttpRequestLabels {
  direction: "inbound" | "outbound";
  /** `:authority` or `Host`; capped (a remote peer chooses it). */
  authority: string;
  /** The address the request went to (inbound: the workload; outbound: the endpoint, or the logical authority when none was reached). */
  targetAddr: string;
  /** Absent when no endpoint was reached (discovery failed): `tls=""`. */
  tls?: TlsState;
  /** For `/tap` only, never a label. */
  method?: string;
  /** For `/tap` only (without its query), never a label. */
  path?: string;
}

/** How a request ended: its status and gRPC status, or the failure that ended it. */
export interface HttpOutcome {
  /** The status sent back to the client (a proxy-made one included); absent when the stream failed before a head. */
  status?: number;
  /** The `grpc-status` of the trailers (or a trailers-only head). */
  grpcStatus?: number;
  /** A snake_case reason when the exchange failed (`connect_failed`, `stream_reset`, …); failure whatever the status. */
  error?: string;
}

/** Linkerd's `response_latency_ms` buckets (linkerd/metrics/src/latency.rs). */
export const RESPONSE_LATENCY_BUCKETS_MS = [1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000];

/** gRPC codes Linkerd counts as failures (client-policy/src/grpc.rs): Unknown, DeadlineExceeded, PermissionDenied, Internal, Unavailable, DataLoss. */
const GRPC_FAILURES = new Set([2, 4, 7, 13, 14, 15]);

/** Linkerd's default classification: a transport error, a 5xx, or a failing gRPC status is a failure. */
export function classifyResponse(outcome: HttpOutcome): "success" | "failure" {
  if (outcome.error !== undefined || outcome.status === undefined) return "failure";
  if (outcome.grpcStatus !== undefined) return GRPC_FAILURES.has(outcome.grpcStatus) ? "failure" : "success";
  return outcome.status >= 500 && outcome.status <= 599 ? "failure" : "success";
}

const LEG_LABELS = ["direction", "peer", "target_addr", "tls", "client_id", "server_id", "sni", "no_tls_reason"] as const;
type LegLabels = Partial<Record<(typeof LEG_LABELS)[number], string>>;

/** The value a capped label takes once it has seen its most distinct values. */
export const OVERFLOW_LABEL_VALUE = "overflow";

/** A label's distinct values, admitted first come up to `max`; later new ones read `overflow`. */
function createCappedValues(max: number): (value: string) => string {
  const seen = new Set<string>();
  return (value) => {
    if (seen.has(value)) return value;
    if (seen.size >= max) return OVERFLOW_LABEL_VALUE;
    seen.add(value);
    return value;
  };
}

function legLabels(leg: ConnectionLeg, capped: { sni: (v: string) => string; inboundTarget: (v: string) => string; outboundTarget: (v: string) => string }): LegLabels {
  const targetAddr = leg.direction === "inbound" ? capped.inboundTarget(leg.targetAddr) : capped.outboundTarget(leg.targetAddr);
  const labels: LegLabels = { direction: leg.direction, peer: leg.peer, target_addr: targetAddr, tls: leg.tls.tls };
  switch (leg.tls.tls) {
    case "true":
      // A verified identity of our own trust anchors: as many values as the issuer certified workloads.
      if (leg.tls.peerId !== undefined) labels[leg.direction === "inbound" ? "client_id" : "server_id"] = leg.tls.peerId;
      break;
    case "opaque":
      // No SNI (or not recorded) is "" and costs no slot.
      labels.sni = leg.tls.sni === "" ? "" : capped.sni(leg.tls.sni);
      break;
    case "no_identity":
      labels.no_tls_reason = leg.tls.reason;
      break;
    case "disabled":
      break;
  }
  return labels;
}

/** One leg label set: its counts since the last scrape and its legs open now (prom-client takes them at scrape). */
interface LegSeries {
  labels: LegLabels;
  opened: number;
  closed: number;
  open: number;
  read: number;
  written: number;
}

interface OpenLeg {
  socket: CountedSocket;
  series: LegSeries;
  reportedRead: number;
  reportedWritten: number;
  openedAt: number;
}

/** Most connection label sets counted in place between scrapes; past it, those with no open leg are handed on and dropped. */
const LEG_SERIES_MAX = 10_000;

/**
 * Creates the connection, policy and HTTP metrics. Byte counters read the
 * sockets' own counts at scrape time and at close, so forwarding adds no
 * per-chunk work. The certificate's metrics (`identity_cert_*`) are not here:
 * the certifier in @meshtls/identity, which sees failures too, owns them.
 */
export function createProxyMetrics(options: CreateProxyMetricsOptions = {}): ProxyMetrics {
  const registry = options.registry ?? new Registry();
  const open = new Set<OpenLeg>();
  const maxPeerLabelValues = options.maxPeerLabelValues ?? 100;
  // Outbound target_addr: the local application picks the destinations (1,000 of them once cost ~600 B of /metrics each).
  const capped = { sni: createCappedValues(maxPeerLabelValues), inboundTarget: createCappedValues(maxPeerLabelValues), outboundTarget: createCappedValues(maxPeerLabelValues) };
  const tap = createTapHub({ registry, ...options.tap });

  // Like the HTTP metrics below: a connection's legs are counted in place in their label set's series
  // (found by a string key, the labels built once), and the counters and gauge take the counts at scrape.
  const legSeries = new Map<string, LegSeries>();
  const flushBytes = (leg: OpenLeg): void => {
    const read = leg.socket.bytesRead;
    const written = leg.socket.bytesWritten;
    if (read > leg.reportedRead) leg.series.read += read - leg.reportedRead;
    if (written > leg.reportedWritten) leg.series.written += written - leg.reportedWritten;
    leg.reportedRead = read;
    leg.reportedWritten = written;
  };
  const openConnection = (socket: CountedSocket, connection: ConnectionLeg): (() => void) => {
    const series = seriesOf(connection);
    const leg: OpenLeg = { socket, series, reportedRead: 0, reportedWritten: 0, openedAt: performance.now() };
    // The peer's address is read only while someone taps (a closed socket no longer knows it).
    let peerAddr = tap.hasSubscribers() ? socketPeer(socket) : undefined;
    if (tap.hasSubscribers()) tap.publish(connectionEvent(leg, connection, "open", peerAddr));
    open.add(leg);
    series.opened++;
    series.open++;
    return () => {
      if (!open.delete(leg)) return;
      flushBytes(leg);
      if (tap.hasSubscribers()) {
        peerAddr ??= socketPeer(socket);
        tap.publish(connectionEvent(leg, connection, "close", peerAddr));
      }
      series.closed++;
      series.open--;
    };
  };
  const flushLegs = (): void => {
    for (const leg of open) flushBytes(leg);
    for (const series of legSeries.values()) {
      if (series.opened > 0) tcpOpen.inc(series.labels, series.opened);
      if (series.closed > 0) tcpClose.inc(series.labels, series.closed);
      if (series.read > 0) readBytes.inc(series.labels, series.read);
      if (series.written > 0) writeBytes.inc(series.labels, series.written);
      if (series.opened > 0 || series.closed > 0) tcpOpenNow.set(series.labels, series.open);
      series.opened = 0;
      series.closed = 0;
      series.read = 0;
      series.written = 0;
    }
  };
  const seriesOf = (leg: ConnectionLeg): LegSeries => {
    // The key holds the capped values, so that every leg past a cap shares the `overflow` series.
    const tls = leg.tls;
    const targetAddr = leg.direction === "inbound" ? capped.inboundTarget(leg.targetAddr) : capped.outboundTarget(leg.targetAddr);
    const detail = tls.tls === "true" ? (tls.peerId ?? "") : tls.tls === "opaque" ? (tls.sni === "" ? "" : capped.sni(tls.sni)) : tls.tls === "no_identity" ? tls.reason : "";
    const key = `${leg.direction}\n${leg.peer}\n${targetAddr}\n${tls.tls}\n${detail}`;
    let series = legSeries.get(key);
    if (series === undefined) {
      if (legSeries.size >= LEG_SERIES_MAX) {
        flushLegs();
        for (const [k, s] of legSeries) if (s.open === 0) legSeries.delete(k);
      }
      series = { labels: legLabels(leg, capped), opened: 0, closed: 0, open: 0, read: 0, written: 0 };
      legSeries.set(key, series);
    }
    return series;
  };

  const tcpOpen = new Counter({ name: "tcp_open_total", help: "Connections opened", labelNames: LEG_LABELS, registers: [registry], collect: flushLegs });
  const tcpClose = new Counter({ name: "tcp_close_total", help: "Connections closed", labelNames: LEG_LABELS, registers: [registry], collect: flushLegs });
  const tcpOpenNow = new Gauge({ name: "tcp_open_connections", help: "Connections open now", labelNames: LEG_LABELS, registers: [registry], collect: flushLegs });
  const readBytes = new Counter({ name: "tcp_read_bytes_total", help: "Bytes read from the peer", labelNames: LEG_LABELS, registers: [registry], collect: flushLegs });
  const writeBytes = new Counter({ name: "tcp_write_bytes_total", help: "Bytes written to the peer", labelNames: LEG_LABELS, registers: [registry], collect: flushLegs });
  const authzLabels = ["target_addr", "policy", "reason", "srv_kind", "srv_name", "authz_kind", "authz_name"] as const;
  // Per connection: counted in place by a string key, like the legs.
  const authzCounts = createInPlaceCounts((): { yes: Counter<(typeof authzLabels)[number]>; no: Counter<(typeof authzLabels)[number]> } => ({ yes: authzAllow, no: authzDeny }));
  const authzAllow: Counter<(typeof authzLabels)[number]> = new Counter({ name: "inbound_tcp_authz_allow_total", help: "Inbound connections allowed by policy", labelNames: authzLabels, registers: [registry], collect: () => authzCounts.flush() });
  const authzDeny: Counter<(typeof authzLabels)[number]> = new Counter({ name: "inbound_tcp_authz_deny_total", help: "Inbound connections denied by policy", labelNames: authzLabels, registers: [registry], collect: () => authzCounts.flush() });
  const authzTerminate = new Counter({
    name: "inbound_tcp_authz_terminate_total",
    help: "Open inbound connections closed because their port's new policy denies them",
    labelNames: authzLabels,
    registers: [registry],
  });
  // The server and authorization names come from the policy controller (resource names): bounded by the cluster's policy objects.
  const authzLabelsOf = (decision: AuthorizeDecision, targetAddr: string): Partial<Record<(typeof authzLabels)[number], string>> => ({
    target_addr: capped.inboundTarget(targetAddr),
    policy: policyLabel(decision.server),
    reason: decision.reason,
    srv_kind: decision.server.kind,
    srv_name: decision.server.name,
    ...(decision.allow ? { authz_kind: decision.authz.kind, authz_name: decision.authz.name } : {}),
  });
  const errors = {
    inbound: new Counter({ name: "inbound_tcp_errors_total", help: "Inbound connections failed before forwarding", labelNames: ["error", "target_addr"], registers: [registry] }),
    outbound: new Counter({ name: "outbound_tcp_errors_total", help: "Outbound connections failed or refused", labelNames: ["error", "target_addr"], registers: [registry] }),
  };
  const refused = new Counter({
    name: "tcp_connections_refused_total",
    help: "Connections a listener closed at once, before reading from them",
    labelNames: ["listener", "reason"],
    registers: [registry],
  });
  // The group is one of credentials.ts's fixed names (else "other"): bounded.
  const connectRetries = new Counter({ name: "outbound_connect_retries_total", help: "Outbound attempts tried on another endpoint after one that sent nothing failed", labelNames: ["reason"], registers: [registry] });
  const setAside = new Counter({ name: "outbound_endpoints_set_aside_total", help: "Endpoints set aside (not picked for a backoff) after a failed connect", labelNames: ["reason"], registers: [registry] });
  // Every reason from the start, at 0: a first retry does not add a series (and a rate over it starts from 0, not from nothing).
  for (const reason of RETRY_REASONS) {
    connectRetries.labels(reason).inc(0);
    setAside.labels(reason).inc(0);
  }
  const handshakeCounts = createInPlaceCounts((): { yes: Counter<"direction" | "group">; no: Counter<"direction" | "group"> } => ({ yes: tlsHandshakes, no: tlsHandshakes }));
  const tlsHandshakes: Counter<"direction" | "group"> = new Counter({
    name: "tls_handshakes_total",
    help: "Mesh TLS handshakes completed, by key exchange group",
    labelNames: ["direction", "group"],
    registers: [registry],
    collect: () => handshakeCounts.flush(),
  });

  const HTTP_LABELS = ["direction", "authority", "target_addr", "tls", "client_id", "server_id", "no_tls_reason"] as const;
  // prom-client hashes and checks a label object on every call: per request, that was most of the
  // metrics' cost. Each label set's series is found once here, counted in place, and the counters
  // take the counts when read (scrape). Bounded: authority and both directions' targets are capped, and
  // the table starts over (after handing its counts on) past HTTP_SERIES_MAX.
  const httpSeries = new Map<string, HttpSeries>();
  const flushHttp = (): void => {
    for (const series of httpSeries.values()) {
      if (series.requests > 0) requestTotal.inc(series.labels, series.requests);
      series.requests = 0;
      for (const response of series.responses.values()) {
        if (response.count > 0) responseTotal.inc(response.labels, response.count);
        response.count = 0;
      }
    }
  };
  const requestTotal = new Counter({ name: "request_total", help: "Total count of HTTP requests.", labelNames: HTTP_LABELS, registers: [registry], collect: flushHttp });
  const responseTotal = new Counter({
    name: "response_total",
    help: "Total count of HTTP responses.",
    labelNames: [...HTTP_LABELS, "status_code", "classification", "grpc_status", "error"],
    registers: [registry],
    collect: flushHttp,
  });
  const responseLatency = new Histogram({
    name: "response_latency_ms",
    help: "Elapsed times between a request's headers being received and its response stream completing",
    labelNames: [...HTTP_LABELS, "status_code"],
    buckets: RESPONSE_LATENCY_BUCKETS_MS,
    registers: [registry],
  });
  const httpAuthzAllow = new Counter({ name: "inbound_http_authz_allow_total", help: "Inbound HTTP requests allowed by policy", labelNames: authzLabels, registers: [registry] });
  const httpAuthzDeny = new Counter({ name: "inbound_http_authz_deny_total", help: "Inbound HTTP requests denied by policy", labelNames: authzLabels, registers: [registry] });
  const cappedAuthority = createCappedValues(maxPeerLabelValues);
  const httpLabels = (request: HttpRequestLabels): Partial<Record<(typeof HTTP_LABELS)[number], string>> => {
    const leg = legLabels({ direction: request.direction, peer: "src", targetAddr: request.targetAddr, tls: request.tls ?? { tls: "disabled" } }, capped);
    const labels: Partial<Record<(typeof HTTP_LABELS)[number], string>> = { direction: request.direction, authority: cappedAuthority(request.authority), target_addr: leg.target_addr ?? "", tls: request.tls?.tls ?? "" };
    if (leg.client_id !== undefined) labels.client_id = leg.client_id;
    if (leg.server_id !== undefined) labels.server_id = leg.server_id;
    if (leg.no_tls_reason !== undefined) labels.no_tls_reason = leg.no_tls_reason;
    return labels;
  };

  return {
    registry,
    tap,
    recordHttpRequest(request) {
      const tls = request.tls;
      const targetAddr = request.direction === "inbound" ? capped.inboundTarget(request.targetAddr) : capped.outboundTarget(request.targetAddr);
      const peer = tls === undefined ? "" : tls.tls === "true" ? (tls.peerId ?? "") : tls.tls === "no_identity" ? tls.reason : "";
      const key = `${request.direction}\n${cappedAuthority(request.authority)}\n${targetAddr}\n${tls?.tls ?? "-"}\n${peer}`;
      let series = httpSeries.get(key);
      if (series === undefined) {
        if (httpSeries.size >= HTTP_SERIES_MAX) {
          flushHttp();
          httpSeries.clear();
        }
        series = { labels: httpLabels(request), requests: 0, latency: new Map(), responses: new Map() };
        httpSeries.set(key, series);
      }
      const started = performance.now();
      series.requests++;
      let done = false;
      return (outcome) => {
        if (done) return;
        done = true;
        const status = outcome.status === undefined ? "" : String(outcome.status);
        const latencyMs = performance.now() - started;
        let latencyLabels = series.latency.get(status);
        if (latencyLabels === undefined) {
          latencyLabels = { ...series.labels, status_code: status };
          series.latency.set(status, latencyLabels);
        }
        responseLatency.observe(latencyLabels, latencyMs);
        const classification = classifyResponse(outcome);
        const grpcStatus = outcome.grpcStatus === undefined ? "" : String(outcome.grpcStatus);
        const error = outcome.error ?? "";
        const responseKey = `${status}\n${classification}\n${grpcStatus}\n${error}`;
        let response = series.responses.get(responseKey);
        if (response === undefined) {
          response = { labels: { ...series.labels, status_code: status, classification, grpc_status: grpcStatus, error }, count: 0 };
          series.responses.set(responseKey, response);
        }
        response.count++;
        if (tap.hasSubscribers()) tap.publish(requestEvent(request, outcome, latencyMs));
      };
    },
    recordHttpAuthz(decision, targetAddr) {
      const labels = authzLabelsOf(decision, targetAddr);
      if (decision.allow) httpAuthzAllow.inc(labels);
      else httpAuthzDeny.inc(labels);
      if (tap.hasSubscribers()) tap.publish(authzEvent(decision, targetAddr, "http"));
    },
    trackConnection(socket, connection) {
      socket.once("close", openConnection(socket, connection));
    },
    openConnection,
    recordAuthz(decision, targetAddr, peer) {
      const { server } = decision;
      const authz = decision.allow ? `${decision.authz.kind}\n${decision.authz.name}` : "";
      const key = `${targetAddr}\n${server.kind}\n${server.name}\n${policyLabel(server)}\n${decision.reason}\n${authz}`;
      authzCounts.add(key, decision.allow, () => authzLabelsOf(decision, targetAddr));
      if (tap.hasSubscribers()) tap.publish({ ...authzEvent(decision, targetAddr, "tcp"), ...(peer?.address === undefined ? {} : { peerAddr: peer.address }), ...(peer?.id === undefined ? {} : { peerId: peer.id }) });
    },
    recordAuthzTerminate(decision, targetAddr) {
      authzTerminate.inc(authzLabelsOf(decision, targetAddr));
    },
    recordError(direction, error, targetAddr) {
      errors[direction].inc(targetAddr === undefined ? { error } : { error, target_addr: direction === "outbound" ? capped.outboundTarget(targetAddr) : targetAddr });
    },
    recordTlsHandshake(direction, group) {
      handshakeCounts.add(`${direction}\n${group}`, true, () => ({ direction, group }));
    },
    recordRefused(listener, reason) {
      refused.inc({ listener, reason });
    },
    recordConnectRetry(reason) {
      connectRetries.inc({ reason });
    },
    recordEndpointSetAside(reason) {
      setAside.inc({ reason });
    },
    openConnections: () => open.size,
  };
}

/** Most label sets of one in-place count kept between scrapes; past it, the counts are handed on and the table starts over. */
const IN_PLACE_MAX = 10_000;

/**
 * A counter's label sets counted in place by a string key, the label object
 * built once per key, and handed to prom-client when it is read: prom-client
 * checks and hashes a label object on every `inc`. `yes` picks one of two
 * counters (allow/deny); `flush` gives each its counts.
 */
function createInPlaceCounts<L extends string>(counters: () => { yes: Counter<L>; no: Counter<L> }): {
  add(key: string, yes: boolean, labels: () => Partial<Record<L, string>>): void;
  flush(): void;
} {
  const counts = new Map<string, { labels: Partial<Record<L, string>>; yes: number; no: number }>();
  const flush = (): void => {
    const { yes, no } = counters();
    for (const entry of counts.values()) {
      if (entry.yes > 0) yes.inc(entry.labels, entry.yes);
      if (entry.no > 0) no.inc(entry.labels, entry.no);
      entry.yes = 0;
      entry.no = 0;
    }
  };
  return {
    add(key, yes, labels) {
      let entry = counts.get(key);
      if (entry === undefined) {
        if (counts.size >= IN_PLACE_MAX) {
          flush();
          counts.clear();
        }
        entry = { labels: labels(), yes: 0, no: 0 };
        counts.set(key, entry);
      }
      if (yes) entry.yes++;
      else entry.no++;
    },
    flush,
  };
}

/** Most HTTP label sets counted in place between scrapes (see `recordHttpRequest`). */
const HTTP_SERIES_MAX = 10_000;

/** One HTTP label set: its counts since the last scrape, and the label objects of its responses (built once). */
interface HttpSeries {
  labels: Partial<Record<string, string>>;
  requests: number;
  /** status_code → the latency histogram's labels. */
  latency: Map<string, Partial<Record<string, string>>>;
  /** status, classification, grpc status and error → response_total's labels and count. */
  responses: Map<string, { labels: Partial<Record<string, string>>; count: number }>;
}

/** A leg's tap event: its bytes so far, and how long it has been open. */
function connectionEvent(leg: OpenLeg, connection: ConnectionLeg, phase: "open" | "close", peerAddr: string | undefined): TapConnectionEvent {
  return {
    type: "connection",
    phase,
    timeMs: Date.now(),
    direction: connection.direction,
    peer: connection.peer,
    ...(peerAddr === undefined ? {} : { peerAddr }),
    targetAddr: connection.targetAddr,
    ...tapTls(connection.tls),
    bytesRead: leg.socket.bytesRead,
    bytesWritten: leg.socket.bytesWritten,
    durationMs: Math.round(performance.now() - leg.openedAt),
    ...(connection.decision === undefined ? {} : { policy: tapPolicy(connection.decision) }),
  };
}

/** `host:port` of a socket's remote end, when it is a network socket that knows it. */
function socketPeer(socket: CountedSocket): string | undefined {
  const { remoteAddress, remotePort } = socket as CountedSocket & { remoteAddress?: string; remotePort?: number };
  if (remoteAddress === undefined || remotePort === undefined) return undefined;
  return remoteAddress.includes(":") ? `[${remoteAddress}]:${remotePort}` : `${remoteAddress}:${remotePort}`;
}

function authzEvent(decision: AuthorizeDecision, targetAddr: string, proto: "tcp" | "http"): TapAuthzEvent {
  return {
    type: "authz",
    timeMs: Date.now(),
    direction: "inbound",
    proto,
    targetAddr,
    allow: decision.allow,
    reason: decision.reason,
    server: decision.server,
    ...(decision.allow ? { authz: decision.authz } : {}),
  };
}

function requestEvent(request: HttpRequestLabels, outcome: HttpOutcome, latencyMs: number): TapRequestEvent {
  return {
    type: "request",
    timeMs: Date.now(),
    direction: request.direction,
    ...(request.method === undefined ? {} : { method: request.method }),
    authority: request.authority,
    ...(request.path === undefined ? {} : { path: request.path.split("?")[0] ?? "" }),
    targetAddr: request.targetAddr,
    ...tapTls(request.tls),
    ...(outcome.status === undefined ? {} : { status: outcome.status }),
    ...(outcome.grpcStatus === undefined ? {} : { grpcStatus: outcome.grpcStatus }),
    ...(outcome.error === undefined ? {} : { error: outcome.error }),
    classification: classifyResponse(outcome),
    latencyMs: Math.round(latencyMs * 10) / 10,
  };
}
