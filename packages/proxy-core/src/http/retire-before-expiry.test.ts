// A pooled mesh connection leaves its pool shortly before the earlier leaf's
// notAfter and closes once its requests end, so that continuous traffic across
// a peer's certificate expiry loses nothing: real proxies A → B on 127.0.0.1,
// real TLS 1.3, B's leaf short-lived and renewed early (as B's proxy would).
import http from "node:http";
import type net from "node:net";
import { parseCertificate } from "@meshtls/pki";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { createProxy } from "../proxy.js";
import type { EndpointSet } from "../sources.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "../test-mesh.js";
import type { TestMesh } from "../test-mesh.js";

const A = identityOf("a");
const B = identityOf("b");
const SVC = "web.default.svc.cluster.local:80";
const lo = { host: "127.0.0.1", port: 0 };
/** B's first leaf: notAfter has one-second precision, so 9 to 10 s of life. */
const SHORT_MS = 10_000;
/** Requests in flight at once. */
const CONCURRENCY = 4;

const sample = (text: string, name: string, labels: Record<string, string>): number => {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
};

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("pooled mesh connections retire before the peer's leaf expires (real TLS 1.3 on 127.0.0.1)", () => {
  let mesh: TestMesh;
  let app: http.Server & { port: number };
  const stops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    mesh = await createTestMesh();
    const server = http.createServer((_req, res) => res.end("ok"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    app = Object.assign(server, { port: (server.address() as net.AddressInfo).port });
    return () => {
      app.closeAllConnections();
      app.close();
    };
  });

  afterEach(async () => {
    await Promise.all(stops.splice(0).map((stop) => stop()));
  });

  /** B with a short-lived leaf, A routing to it; `protocolHint` picks A's pool: HTTP/2 sessions or HTTP/1 connections. */
  async function startPair(protocolHint: "h2" | undefined) {
    const bundle = createBundle([mesh.anchor.certificate]);
    const first = await mesh.issue(B, { lifetimeMs: SHORT_MS });
    const notAfter = parseCertificate(first.leaf).notAfter.getTime();
    const storeB = createStore({ ...first, notAfter: new Date(notAfter) });
    const b = createProxy({ identity: B, credentials: storeB, trustBundle: bundle, resolver: createTableResolver(new Map()), inbound: { listen: lo, workload: { host: "127.0.0.1", port: app.port } }, outbound: { listen: lo }, admin: { listen: lo } });
    const bAddr = await b.start();
    stops.push(() => b.stop({ drainMs: 0 }));
    const table = new Map<string, EndpointSet>([[SVC, { exists: true, endpoints: [{ address: "127.0.0.1", port: bAddr.inbound.port, weight: 1, identity: B, labels: {}, ...(protocolHint === undefined ? {} : { protocolHint }) }] }]]);
    const a = createProxy({
      identity: A,
      credentials: createStore(await mesh.issue(A)),
      trustBundle: bundle,
      resolver: createTableResolver(table),
      inbound: { listen: lo, workload: { host: "127.0.0.1", port: 1 } },
      outbound: { listen: lo, routes: [{ listen: lo, authority: SVC }] },
      admin: { listen: lo },
    });
    const aAddr = await a.start();
    stops.push(() => a.stop({ drainMs: 0 }));
    const routePort = aAddr.routes[0]?.port ?? 0;
    const toB = { direction: "outbound", peer: "dst", target_addr: `127.0.0.1:${bAddr.inbound.port}`, tls: "true" };
    const aMetric = async (name: string): Promise<number> => sample(await a.metrics.registry.metrics(), name, toB);
    // B renews two seconds in, long before its first leaf expires.
    const renewB = async (): Promise<void> => {
      await sleep(2000);
      const next = await mesh.issue(B);
      storeB.set({ ...next, notAfter: parseCertificate(next.leaf).notAfter });
    };
    return { a, b, routePort, notAfter, aMetric, renewB };
  }

  /** Requests through A's route, `CONCURRENCY` at once over keep-alive connections, until `untilMs`. */
  async function load(routePort: number, untilMs: number): Promise<{ sent: number; failed: string[] }> {
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const failed: string[] = [];
    let sent = 0;
    const one = (): Promise<void> =>
      new Promise((resolve) => {
        sent += 1;
        const request = http.get({ host: "127.0.0.1", port: routePort, path: "/", agent, timeout: 5000 }, (response) => {
          let body = "";
          response.on("data", (chunk: Buffer) => (body += String(chunk)));
          response.on("end", () => {
            if (response.statusCode !== 200 || body !== "ok") failed.push(`${response.statusCode} ${String(response.headers["l5d-proxy-error"])} ${body} at ${Date.now()}`);
            resolve();
          });
          response.on("error", (error) => {
            failed.push(String(error));
            resolve();
          });
        });
        request.on("timeout", () => request.destroy(new Error("timeout")));
        request.on("error", (error) => {
          failed.push(String(error));
          resolve();
        });
      });
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (Date.now() < untilMs) await one();
      }),
    );
    agent.destroy();
    return { sent, failed };
  }

  it("HTTP/1: continuous requests across B's expiry: none fails, the pooled connections retire before it, none stays open", async () => {
    const { b, routePort, notAfter, aMetric, renewB } = await startPair(undefined);
    const running = load(routePort, notAfter + 2000);
    await renewB();
    await sleep(notAfter - 500 - Date.now());
    // The connections made under B's first leaf were replaced before it expired.
    const openedBeforeExpiry = await aMetric("tcp_open_total");
    const { sent, failed } = await running;

    expect(failed).toEqual([]);
    expect(sent).toBeGreaterThan(100);
    expect(openedBeforeExpiry).toBeGreaterThan(await aMetric("tcp_open_connections"));
    // B had no connection left to cut at its notAfter.
    expect(sample(await b.metrics.registry.metrics(), "inbound_tcp_errors_total", { error: "open_local_cert_expired" })).toBe(0);
    expect(await aMetric("tcp_open_connections")).toBeLessThanOrEqual(CONCURRENCY);
    // Idle connections go after the pool's idle timeout (3 s): none is left behind.
    await sleep(4500);
    expect(await aMetric("tcp_open_connections")).toBe(0);
    expect(await aMetric("tcp_close_total")).toBe(await aMetric("tcp_open_total"));
  }, 40_000);

  it("HTTP/2: continuous requests across B's expiry: none fails, the session gets replaced before it, the old one closes", async () => {
    const { b, routePort, notAfter, aMetric, renewB } = await startPair("h2");
    const running = load(routePort, notAfter + 2000);
    await renewB();
    await sleep(notAfter - 500 - Date.now());
    expect(await aMetric("tcp_open_total")).toBe(2);
    expect(await aMetric("tcp_open_connections")).toBe(1);
    const { sent, failed } = await running;

    expect(failed).toEqual([]);
    expect(sent).toBeGreaterThan(100);
    expect(sample(await b.metrics.registry.metrics(), "inbound_tcp_errors_total", { error: "open_local_cert_expired" })).toBe(0);
    // One session under B's new leaf; the first one closed with its last stream.
    expect(await aMetric("tcp_open_total")).toBe(2);
    expect(await aMetric("tcp_open_connections")).toBe(1);
  }, 40_000);
});
