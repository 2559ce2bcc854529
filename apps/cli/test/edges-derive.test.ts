import { describe, expect, it } from "vitest";
import { deriveEdges, histogramQuantile, plaintextEdges, proxyAdminTargets, workloadOfIdentity, type ProxyScrape } from "../src/mesh/edges.ts";
import { parsePrometheusText } from "../src/mesh/prometheus.ts";

const API = "api.default.serviceaccount.identity.meshtls.cluster.local";
const WEB = "web.default.serviceaccount.identity.meshtls.cluster.local";

function scrape(admin: string, identity: string, text: string): ProxyScrape {
  return { admin, identity, samples: parsePrometheusText(text) };
}

const webOut = (opened: number, requests: number) => `
tcp_open_total{direction="outbound",peer="src",target_addr="proxy",tls="no_identity",no_tls_reason="loopback"} ${opened}
tcp_open_total{direction="outbound",peer="dst",target_addr="127.0.1.2:4143",tls="true",server_id="${API}"} ${opened}
tcp_write_bytes_total{direction="outbound",peer="dst",target_addr="127.0.1.2:4143",tls="true",server_id="${API}"} 100
tcp_read_bytes_total{direction="outbound",peer="dst",target_addr="127.0.1.2:4143",tls="true",server_id="${API}"} 300
tcp_open_total{direction="outbound",peer="dst",target_addr="10.0.0.9:80",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 2
request_total{direction="outbound",authority="api",target_addr="127.0.1.2:8080",tls="true",server_id="${API}"} ${requests}
response_total{direction="outbound",authority="api",target_addr="127.0.1.2:8080",tls="true",server_id="${API}",status_code="200",classification="success"} ${requests - 1}
response_total{direction="outbound",authority="api",target_addr="127.0.1.2:8080",tls="true",server_id="${API}",status_code="503",classification="failure"} 1
response_latency_ms_bucket{direction="outbound",authority="api",target_addr="127.0.1.2:8080",tls="true",server_id="${API}",status_code="200",le="10"} ${requests / 2}
response_latency_ms_bucket{direction="outbound",authority="api",target_addr="127.0.1.2:8080",tls="true",server_id="${API}",status_code="200",le="20"} ${requests}
response_latency_ms_bucket{direction="outbound",authority="api",target_addr="127.0.1.2:8080",tls="true",server_id="${API}",status_code="200",le="+Inf"} ${requests}
`;
const apiIn = `
tcp_open_total{direction="inbound",peer="src",target_addr="127.0.1.2:8080",tls="true",client_id="${WEB}"} 4
tcp_open_total{direction="inbound",peer="dst",target_addr="127.0.1.2:8080",tls="no_identity",no_tls_reason="loopback"} 9
tcp_open_total{direction="inbound",peer="src",target_addr="127.0.1.2:8080",tls="no_identity",no_tls_reason="no_tls_from_remote"} 5
tcp_open_connections{direction="inbound",peer="src",target_addr="127.0.1.2:8080",tls="no_identity",no_tls_reason="no_tls_from_remote"} 0
tcp_read_bytes_total{direction="inbound",peer="src",target_addr="127.0.1.2:8080",tls="no_identity",no_tls_reason="no_tls_from_remote"} 50
tcp_write_bytes_total{direction="inbound",peer="src",target_addr="127.0.1.2:8080",tls="no_identity",no_tls_reason="no_tls_from_remote"} 70
`;

describe("deriveEdges: the one rule of edges and dashboard", () => {
  it("outbound legs from the source's proxy, inbound legs only for clients not read; loopback legs are no edges; HTTP joined by host", () => {
    const report = deriveEdges({
      current: [scrape("127.0.1.1:4191", WEB, webOut(4, 10)), scrape("127.0.1.2:4191", API, apiIn)],
      now: () => new Date(0),
    });
    expect(report.windowMs).toBe(0);
    expect(report.proxies).toEqual([
      { admin: "127.0.1.1:4191", workload: "default/web", identity: WEB },
      { admin: "127.0.1.2:4191", workload: "default/api", identity: API },
    ]);
    expect(report.edges).toHaveLength(3);
    const [secured, external, unmeshed] = report.edges;
    expect(secured).toMatchObject({
      source: { workload: "default/web", identity: WEB }, destination: { workload: "default/api", identity: API, address: "127.0.1.2:4143", meshed: true },
      secured: true, connections: { opened: 4 }, bytes: { sent: 100, received: 300 }, active: false,
      http: { requests: 10, successRate: 0.9, latencyMs: { p50: 10, p95: 19, p99: 19.8 } },
    });
    expect(secured!.http!.requestsPerSecond).toBeUndefined();
    expect(external).toMatchObject({ source: { workload: "default/web" }, destination: { workload: null, identity: null, meshed: false, address: "10.0.0.9:80" }, secured: false, noTlsReason: "not_provided_by_service_discovery" });
    expect(unmeshed).toMatchObject({ source: { workload: null, meshed: false }, destination: { workload: "default/api" }, noTlsReason: "no_tls_from_remote", bytes: { sent: 50, received: 70 } });
  });

  it("with a previous scrape: rates, window percentiles and active edges; --require-secured counts active plaintext only", () => {
    const previous = [scrape("127.0.1.1:4191", WEB, webOut(4, 10)), scrape("127.0.1.2:4191", API, apiIn)];
    const current = [scrape("127.0.1.1:4191", WEB, webOut(6, 30)), scrape("127.0.1.2:4191", API, apiIn)];
    const report = deriveEdges({ current, previous, windowMs: 2_000 });
    const secured = report.edges.find((e) => e.secured)!;
    expect(secured.active).toBe(true);
    expect(secured.http).toMatchObject({ requests: 30, requestsPerSecond: 10, successRate: 1 });
    expect(plaintextEdges(report)).toEqual([]);
    // An edge read from the client's inbound side when the client's proxy is not read.
    const apiOnly = deriveEdges({ current: [scrape("127.0.1.2:4191", API, apiIn)] });
    expect(apiOnly.edges.map((e) => [e.source.workload, e.source.identity, e.tls])).toEqual([["default/web", WEB, "true"], [null, null, "no_identity"]]);
  });

  it("histogramQuantile interpolates like Prometheus; +Inf answers the highest finite bound; no observations: null", () => {
    expect(histogramQuantile(0.5, new Map([[1, 0], [2, 10], [Infinity, 10]]))).toBe(1.5);
    expect(histogramQuantile(0.99, new Map([[1, 0], [2, 1], [Infinity, 10]]))).toBe(2);
    expect(histogramQuantile(0.5, new Map([[1, 0], [Infinity, 0]]))).toBeNull();
  });

  it("workload names from identities; registry endpoints read at <address>:<admin port> unless a --proxy-admin is on that address", () => {
    expect(workloadOfIdentity(API)).toBe("default/api");
    expect(workloadOfIdentity("spiffe://x")).toBeNull();
    const registry = [
      { address: "127.0.1.2", workload: "default/api", identity: API, meshed: true },
      { address: "127.0.1.3", workload: "default/db", identity: null, meshed: false },
      { address: "::1", workload: "default/v6", identity: API, meshed: true },
      { address: "127.0.1.4", workload: "default/web", identity: WEB, meshed: true },
    ];
    expect(proxyAdminTargets({ proxyAdmins: ["127.0.1.2:5000"], registry, adminPort: 4191 })).toEqual(["127.0.1.2:5000", "[::1]:4191", "127.0.1.4:4191"]);
  });
});
