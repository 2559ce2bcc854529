import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TapLine } from "../src/commands/tap.ts";
import type { LocalMesh, Workload } from "../src/demo/mesh.ts";
import { scrapeMetrics } from "../src/mesh/admin-client.ts";
import { sumSamples } from "../src/mesh/prometheus.ts";
import { runCli } from "./helpers.ts";
import { curlThrough, eventually, startLocalMesh, startTap } from "./mesh-helpers.ts";

const API = "api.default.serviceaccount.identity.meshtls.cluster.local";
const WEB = "web.default.serviceaccount.identity.meshtls.cluster.local";
const API_URL = "http://api.default.svc.cluster.local/";

/** One request through web's outbound proxy to api. */
const curlViaWeb = (web: Workload): Promise<{ status: string; ms: number }> => curlThrough(web, API_URL);

/** `count` GETs of a `pathLength`-long path through web's outbound proxy on `concurrency` kept-alive connections. */
async function requestsViaWeb(web: Workload, count: number, concurrency: number, pathLength: number): Promise<{ ms: number; statuses: number[] }> {
  const [host, port] = [web.outbound.split(":")[0]!, Number(web.outbound.split(":")[1])];
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const statuses: number[] = [];
  const started = performance.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      statuses.push(
        await new Promise<number>((resolve) => {
          const req = http.get({ host, port, path: `${API_URL}${"p".repeat(pathLength)}`, headers: { host: "api.default.svc.cluster.local" }, agent, timeout: 10_000 }, (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
          });
          req.on("timeout", () => req.destroy());
          req.on("error", () => resolve(0));
        }),
      );
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  return { ms: performance.now() - started, statuses };
}

describe("meshtls tap against a running local mesh", () => {
  let cleanup: () => Promise<void>;
  let mesh: LocalMesh;
  let api: Workload;
  let web: Workload;

  beforeAll(async () => {
    ({ mesh, cleanup } = await startLocalMesh());
    api = await mesh.startWorkload({ name: "api", ip: "127.0.1.32" });
    // web makes no calls of its own: every request of the test is a curl.
    web = await mesh.startWorkload({ name: "web", ip: "127.0.1.31" });
  }, 180_000);

  afterAll(async () => {
    await mesh?.stop();
    await cleanup?.();
  });

  it("shows a curl request through the mesh within a second: the mesh connection opened with api's identity, both sides' requests over mTLS with the other's identity, api's policy decision", async () => {
    const tap = await startTap(["--proxy-admin", api.admin, "--proxy-admin", web.admin], 2);
    try {
      const sent = Date.now();
      const { status } = await curlViaWeb(web);
      expect(status).toBe("200");
      const find = (probe: (l: TapLine) => boolean): Promise<TapLine> => eventually("event", async () => tap.lines.find(probe), 5_000, 20);

      const meshConnection = await find((l) => l.type === "connection" && l.proxy.admin === web.admin && l.direction === "outbound" && l["peer"] === "dst" && l.tls === "true");
      expect(meshConnection).toMatchObject({ proxy: { workload: "default/web", identity: WEB }, phase: "open", peerId: API, peerAddr: api.inbound });
      const outbound = await find((l) => l.type === "request" && l.proxy.admin === web.admin);
      expect(outbound).toMatchObject({ direction: "outbound", method: "GET", authority: "api.default.svc.cluster.local", path: "/", status: 200, classification: "success", tls: "true", peerId: API });
      const inbound = await find((l) => l.type === "request" && l.proxy.admin === api.admin);
      expect(inbound).toMatchObject({ proxy: { workload: "default/api", identity: API }, direction: "inbound", method: "GET", status: 200, tls: "true", peerId: WEB });
      const decision = await find((l) => l.type === "authz" && l.proxy.admin === api.admin);
      expect(decision).toMatchObject({ allow: true, reason: "authenticated", server: { kind: "default" } });
      // The curl's own connection to web's outbound listener: plaintext on loopback, closed with its bytes.
      const local = await find((l) => l.type === "connection" && l.proxy.admin === web.admin && l["phase"] === "close" && l["peer"] === "src");
      expect(local).toMatchObject({ tls: "no_identity", noTlsReason: "loopback" });
      expect(local["bytesRead"]).toBeGreaterThan(0);
      // Within a second of the request (generous: the machine is shared).
      expect((outbound.timeMs) - sent).toBeLessThan(1_000 + 2_000);
    } finally {
      tap.child.kill("SIGTERM");
      expect(await tap.exited).toBe(0);
    }
  }, 60_000);

  it("filters: --identity web's identity keeps only events with web on either end; --tls no_identity only plaintext ones; --max-events ends the stream", async () => {
    const byIdentity = await startTap(["--proxy-admin", api.admin, "--proxy-admin", web.admin, "--identity", WEB, "--max-events", "3"], 2);
    const byTls = await startTap(["--proxy-admin", api.admin, "--proxy-admin", web.admin, "--tls", "no_identity", "--max-events", "2"], 2);
    for (let i = 0; i < 3; i++) expect((await curlViaWeb(web)).status).toBe("200");
    expect(await byIdentity.exited).toBe(0);
    expect(await byTls.exited).toBe(0);
    expect(byIdentity.lines).toHaveLength(3);
    for (const l of byIdentity.lines) expect(l.proxy.identity === WEB || l.peerId === WEB).toBe(true);
    expect(byTls.lines).toHaveLength(2);
    for (const l of byTls.lines) expect(l.tls).toBe("no_identity");
  }, 60_000);

  it("tap clients that never read do not hold the mesh: 2000 requests all answered while their events are dropped (tap_events_dropped_total); the ninth subscriber is refused with 429", async () => {
    // Eight raw subscribers to web's proxy that never read a byte.
    const stalled: net.Socket[] = [];
    try {
      const [host, port] = [web.admin.split(":")[0]!, Number(web.admin.split(":")[1])];
      for (let i = 0; i < 8; i++) {
        const socket = net.connect(port, host);
        socket.on("error", () => undefined);
        socket.pause();
        socket.write("GET /tap HTTP/1.1\r\nhost: admin\r\n\r\n");
        stalled.push(socket);
      }
      await eventually("eight subscribers", async () => {
        const refused = await runCli(["tap", "--proxy-admin", web.admin, "--max-events", "1"], { timeoutMs: 10_000 });
        return refused.code === 1 && refused.stderr.includes("HTTP 429") ? refused : undefined;
      }, 20_000, 200);

      // Enough traffic to fill the stalled subscribers' sockets and queues: events are dropped, not waited for.
      // Long paths make each event ~4 KiB: 2000 of them are more than a stalled socket holds.
      const { ms, statuses } = await requestsViaWeb(web, 2_000, 8, 4_000);
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      const dropped = sumSamples(await scrapeMetrics({ address: web.admin }), "tap_events_dropped_total");
      expect(dropped).toBeGreaterThan(0);
      // 2000 requests (~6 events each, 8 stalled subscribers): generous bound for a shared 2-core machine.
      expect(ms).toBeLessThan(60_000);
      // The proxy still serves: curl answers at once.
      const after = await curlViaWeb(web);
      expect(after.status).toBe("200");
      expect(after.ms).toBeLessThan(5_000);
    } finally {
      for (const s of stalled) s.destroy();
    }
  }, 90_000);
});
