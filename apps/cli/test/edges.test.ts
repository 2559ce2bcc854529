import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalMesh, Workload } from "../src/demo/mesh.ts";
import { scrapeMetrics } from "../src/mesh/admin-client.ts";
import type { Edge, EdgeReport } from "../src/mesh/edges.ts";
import { findSamples, sumSamples } from "../src/mesh/prometheus.ts";
import type { ManagedProcess } from "../src/mesh/supervisor.ts";
import { runCli } from "./helpers.ts";
import { eventually, startLocalMesh, startUnmeshedClient } from "./mesh-helpers.ts";

const API = "api.default.serviceaccount.identity.meshtls.cluster.local";
const WEB = "web.default.serviceaccount.identity.meshtls.cluster.local";

function edgeBetween(report: EdgeReport, source: string | null, destination: string, tls: string): Edge | undefined {
  return report.edges.find((e) => e.source.workload === source && e.destination.workload === destination && e.tls === tls);
}

describe("meshtls edges against a running local mesh (meshtls viz: viz.test.ts)", () => {
  let cleanup: () => Promise<void>;
  let mesh: LocalMesh;
  let api: Workload;
  let web: Workload;
  let unmeshed: ManagedProcess | undefined;
  let admins: string[];

  beforeAll(async () => {
    ({ mesh, cleanup } = await startLocalMesh());
    api = await mesh.startWorkload({ name: "api", ip: "127.0.1.22" });
    web = await mesh.startWorkload({ name: "web", ip: "127.0.1.21", calls: "api", callIntervalMs: 200 });
    unmeshed = startUnmeshedClient("127.0.1.23", api.inbound);
    await unmeshed.waitFor((l) => l.msg === "started", { timeoutMs: 20_000, what: "started" });
    admins = ["--proxy-admin", api.admin, "--proxy-admin", web.admin];
  }, 180_000);

  afterAll(async () => {
    await unmeshed?.stop();
    await mesh?.stop();
    await cleanup?.();
  });

  it("-o json: web -> api over mTLS with both identities and HTTP stats, the unmeshed client -> api as no_tls_from_remote; counts match the proxies' own metrics", async () => {
    const report = await eventually("both edges with HTTP rates", async () => {
      const result = await runCli(["edges", ...admins, "-o", "json", "--window", "1s"]);
      expect(result.code).toBe(0);
      const r = JSON.parse(result.stdout) as EdgeReport;
      const secured = edgeBetween(r, "default/web", "default/api", "true");
      const plain = edgeBetween(r, null, "default/api", "no_identity");
      return secured?.http?.requestsPerSecond !== undefined && secured.http.requestsPerSecond > 0 && plain?.active === true ? r : undefined;
    }, 60_000);
    expect(report.windowMs).toBeGreaterThanOrEqual(900);
    expect(report.proxies.map((p) => [p.admin, p.identity, p.workload])).toEqual([[api.admin, API, "default/api"], [web.admin, WEB, "default/web"]]);

    const secured = edgeBetween(report, "default/web", "default/api", "true")!;
    expect(secured).toMatchObject({
      source: { workload: "default/web", identity: WEB, meshed: true },
      destination: { workload: "default/api", identity: API, meshed: true, address: api.inbound },
      secured: true,
      observedBy: { admin: web.admin, direction: "outbound" },
    });
    expect(secured.connections.opened).toBeGreaterThanOrEqual(1);
    expect(secured.bytes.sent).toBeGreaterThan(0);
    expect(secured.bytes.received).toBeGreaterThan(0);
    expect(secured.http!.requests).toBeGreaterThan(0);
    expect(secured.http!.successRate).toBe(1);
    expect(secured.http!.latencyMs.p50).toBeGreaterThan(0);

    const plain = edgeBetween(report, null, "default/api", "no_identity")!;
    expect(plain).toMatchObject({
      source: { workload: null, identity: null, meshed: false },
      destination: { workload: "default/api", identity: API, meshed: true },
      secured: false,
      noTlsReason: "no_tls_from_remote",
      observedBy: { admin: api.admin, direction: "inbound" },
      active: true,
    });
    // web's inbound leg at api is not a second edge (web's proxy was read), nor are proxy <-> own workload legs.
    expect(report.edges.filter((e) => e.destination.workload === "default/api" && e.source.workload === "default/web")).toHaveLength(1);
    expect(report.edges.some((e) => e.noTlsReason === "loopback")).toBe(false);

    // Checked against the proxies' own metrics, read after the report: counters only grow.
    const webSamples = await scrapeMetrics({ address: web.admin });
    const apiSamples = await scrapeMetrics({ address: api.admin });
    const webLegs = { direction: "outbound", peer: "dst", tls: "true", server_id: API, target_addr: api.inbound };
    expect(sumSamples(webSamples, "tcp_open_total", webLegs)).toBeGreaterThanOrEqual(secured.connections.opened);
    expect(sumSamples(webSamples, "tcp_write_bytes_total", webLegs)).toBeGreaterThanOrEqual(secured.bytes.sent);
    expect(sumSamples(webSamples, "request_total", { direction: "outbound", server_id: API })).toBeGreaterThanOrEqual(secured.http!.requests);
    const plainLegs = { direction: "inbound", peer: "src", tls: "no_identity", no_tls_reason: "no_tls_from_remote" };
    const plainOpened = sumSamples(apiSamples, "tcp_open_total", plainLegs);
    expect(plainOpened).toBeGreaterThanOrEqual(plain.connections.opened);
    expect(plain.connections.opened).toBeGreaterThan(plainOpened - 40); // read within a few seconds, at ~7 connections a second
    expect(findSamples(apiSamples, "tcp_open_total", { direction: "inbound", peer: "src", tls: "true", client_id: WEB }).length).toBeGreaterThan(0);
  });

  it("table and -o wide: one row per edge, SECURED ✓ or the reason, the unmeshed peer shown as such", async () => {
    const table = await runCli(["edges", ...admins, "--window", "0s"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^SRC +DST +SRC_IDENTITY +DST_IDENTITY +SECURED +CONNS +BYTES +RPS +SUCCESS +P95/);
    expect(table.stdout).toMatch(new RegExp(`default/web +default/api +${WEB.replaceAll(".", "\\.")} +${API.replaceAll(".", "\\.")} +SECURED ✓ +\\d+ +[\\d.]+K?i?B +- +100\\.0% +[\\d.]+ms`));
    expect(table.stdout).toMatch(new RegExp(`\\(unmeshed\\) +default/api +- +${API.replaceAll(".", "\\.")} +no_tls_from_remote +\\d+`));
    const wide = await runCli(["edges", ...admins, "-o", "wide", "--window", "1s"]);
    expect(wide.code).toBe(0);
    expect(wide.stdout).toMatch(/SEEN_BY$/m);
    expect(wide.stdout).toContain(`outbound ${web.admin}`);
    expect(wide.stdout).toContain(`inbound ${api.admin}`);
    expect(wide.stdout).toContain(api.inbound);
  });

  it("--registry names workloads from the registry file; a meshed endpoint without --proxy-admin is read at <address>:--admin-port", async () => {
    const named = await runCli(["edges", "--registry", mesh.registryFile, ...admins, "-o", "json", "--window", "0s"]);
    expect(named.code).toBe(0);
    const report = JSON.parse(named.stdout) as EdgeReport;
    expect(report.proxies.map((p) => p.admin)).toEqual([api.admin, web.admin]);
    expect(edgeBetween(report, "default/web", "default/api", "true")?.destination.identity).toBe(API);
    // Only api's admin given: web's proxy is looked for at 127.0.1.21:<admin-port> (here a closed port), named on stderr.
    const missing = await runCli(["edges", "--registry", mesh.registryFile, "--proxy-admin", api.admin, "--admin-port", "1", "--window", "0s"]);
    expect(missing.code).toBe(0);
    expect(missing.stderr).toMatch(/proxy 127\.0\.1\.21:1 not read: cannot reach 127\.0\.1\.21:1: ECONNREFUSED/);
    // With web unread, its edge to api is seen from api's side (client_id).
    expect(missing.stdout).toMatch(new RegExp(`default/web +default/api +${WEB.replaceAll(".", "\\.")} +${API.replaceAll(".", "\\.")} +SECURED ✓`));
    const strict = await runCli(["edges", "--registry", mesh.registryFile, "--proxy-admin", api.admin, "--admin-port", "1", "--window", "0s", "--require-secured"]);
    expect(strict.code).toBe(1);
    expect((await runCli(["edges"])).code).toBe(2);
  });

  it("--require-secured: exit 1 while the unmeshed client talks to api, 0 once it stops", async () => {
    const during = await runCli(["edges", ...admins, "--require-secured", "--window", "1s"]);
    expect(during.code).toBe(1);
    expect(during.stderr).toMatch(/plaintext edge \(unmeshed\) -> default\/api \(no_tls_from_remote\)/);
    expect(during.stderr).toMatch(/--require-secured: 1 active plaintext edge/);
    await unmeshed!.stop();
    unmeshed = undefined;
    const after = await eventually("--require-secured passes", async () => {
      const result = await runCli(["edges", ...admins, "--require-secured", "--window", "1s"]);
      return result.code === 0 ? result : undefined;
    }, 30_000);
    // The edge is still listed (history), no longer active.
    expect(after.stdout).toMatch(/\(unmeshed\) +default\/api .*no_tls_from_remote/);
  });
});
