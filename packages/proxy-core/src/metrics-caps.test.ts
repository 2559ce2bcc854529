import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { createProxyMetrics, OVERFLOW_LABEL_VALUE } from "./metrics.js";
import type { CountedSocket } from "./metrics.js";

/** A stream standing in for a socket: the metrics read only its byte counts and its close. */
const fakeSocket = (): CountedSocket => Object.assign(new PassThrough(), { bytesRead: 0, bytesWritten: 0 });

/** The distinct `target_addr` values of `metric`'s samples for `direction`. */
function targets(text: string, metric: string, direction: "inbound" | "outbound"): Set<string> {
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${metric}{`)) continue;
    const isDirection = line.includes(`direction="${direction}"`) || (metric.endsWith("_errors_total") && metric.startsWith(direction));
    const value = /target_addr="([^"]*)"/.exec(line)?.[1];
    if (isDirection && value !== undefined) out.add(value);
  }
  return out;
}

describe("createProxyMetrics: the outbound target_addr the local application chooses is capped", () => {
  it("connections, errors and requests: the first maxPeerLabelValues destinations, then `overflow`; inbound has its own count", async () => {
    const metrics = createProxyMetrics({ maxPeerLabelValues: 3 });
    const destinations = Array.from({ length: 10 }, (_, i) => `10.1.0.${i + 1}:8080`);
    for (const targetAddr of destinations) {
      metrics.trackConnection(fakeSocket(), { direction: "outbound", peer: "dst", targetAddr, tls: { tls: "no_identity", reason: "not_provided_by_service_discovery" } });
      metrics.recordError("outbound", "connect_failed", targetAddr);
      metrics.recordHttpRequest({ direction: "outbound", authority: "api", targetAddr })({ status: 200 });
    }
    metrics.trackConnection(fakeSocket(), { direction: "inbound", peer: "src", targetAddr: "127.0.0.1:8080", tls: { tls: "no_identity", reason: "loopback" } });
    const text = await metrics.registry.metrics();
    const kept = new Set([...destinations.slice(0, 3), OVERFLOW_LABEL_VALUE]);
    expect(targets(text, "tcp_open_total", "outbound")).toEqual(kept);
    expect(targets(text, "outbound_tcp_errors_total", "outbound")).toEqual(kept);
    expect(targets(text, "request_total", "outbound")).toEqual(kept);
    expect(text).toContain(`tcp_open_total{direction="outbound",peer="dst",target_addr="overflow",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 7`);
    // The outbound destinations took none of the inbound count.
    expect(targets(text, "tcp_open_total", "inbound")).toEqual(new Set(["127.0.0.1:8080"]));
  });

  it("defaults to 100 distinct outbound values", async () => {
    const metrics = createProxyMetrics();
    for (let i = 0; i < 150; i++) metrics.recordError("outbound", "connect_failed", `10.2.${Math.floor(i / 250)}.${i % 250}:9`);
    const values = targets(await metrics.registry.metrics(), "outbound_tcp_errors_total", "outbound");
    expect(values.size).toBe(101);
    expect(values.has(OVERFLOW_LABEL_VALUE)).toBe(true);
  });
});

describe("createProxyMetrics: a leg whose close the caller reports (openConnection)", () => {
  it("is open until its closer runs, counted closed once however often it runs, with its bytes", async () => {
    const metrics = createProxyMetrics();
    const socket = fakeSocket();
    const close = metrics.openConnection(socket, { direction: "inbound", peer: "src", targetAddr: "127.0.0.1:8080", tls: { tls: "true", peerId: "a.ns.serviceaccount.identity.meshtls.cluster.local" } });
    expect(metrics.openConnections()).toBe(1);
    socket.bytesRead = 300;
    socket.bytesWritten = 1024;
    close();
    close();
    expect(metrics.openConnections()).toBe(0);
    const text = await metrics.registry.metrics();
    const series = `direction="inbound",peer="src",target_addr="127.0.0.1:8080",tls="true",client_id="a.ns.serviceaccount.identity.meshtls.cluster.local"`;
    expect(text).toContain(`tcp_open_total{${series}} 1`);
    expect(text).toContain(`tcp_close_total{${series}} 1`);
    expect(text).toContain(`tcp_read_bytes_total{${series}} 300`);
    expect(text).toContain(`tcp_write_bytes_total{${series}} 1024`);
  });
});
