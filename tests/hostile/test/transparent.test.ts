// meshtls-proxy --transparent under attack (issue #15), on loopback without nat rules: every connection to the
// transparent outbound listener arrives with no original destination (nothing redirected it), as a local process
// dialling the listener directly would. Such a connection must be closed at once, never forwarded (it would loop
// back to the listener) and counted as outbound_tcp_errors_total{error="no_original_destination"} under the
// listener's own address, whatever the client sends and from whichever address it comes. (Redirected connections
// are attacked in tests/netns/test/hostile.test.ts.)
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, it } from "vitest";
import { clientHello } from "./support/client-hello.ts";
import { createMaterial, hostOf, portOf, startDestination, startIdentity, startProxy } from "./support/mesh.ts";
import type { Material, ProxyProcess } from "./support/mesh.ts";
import { sleep, stopAll, tempDir } from "./support/processes.ts";
import { attack, expectHolds } from "./support/results.ts";
import type { Outcome, Target } from "./support/results.ts";
import { exchange, httpGet, metricSum, scrape } from "./support/wire.ts";

const IP = "127.0.4.2";
const LISTENER = "proxy transparent outbound (not redirected)";
const REFUSED = 'closed at once (< 2 s) with no byte answered, nothing reaching the app, counted in outbound_tcp_errors_total{error="no_original_destination"}';

describe("meshtls-proxy --transparent under attack (loopback, no nat rules)", () => {
  const servers: net.Server[] = [];
  let material: Material;
  let proxy: ProxyProcess;
  /** Requests the app behind the proxy received: a refused connection must add none. */
  let appRequests = 0;

  const refusals = async (): Promise<number> => metricSum(await scrape(proxy.admin), "outbound_tcp_errors_total", 'error="no_original_destination"');

  /** Still serving: admin /live, and a plaintext request through the inbound (a direct connection) reaches the app. */
  const target: Target = {
    get proc() {
      return proxy.proc;
    },
    serving: async () =>
      (await httpGet(proxy.admin, "/live"))?.status === 200 &&
      (await exchange(proxy.inbound, Buffer.from("GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n", "latin1"), { timeoutMs: 5000 })).bytes.toString("latin1").includes("transparent-app"),
  };

  beforeAll(async () => {
    const dir = tempDir("transparent");
    material = await createMaterial(dir);
    const app = http.createServer((_req, res) => {
      appRequests++;
      res.end("transparent-app\n");
    });
    servers.push(app);
    await new Promise<void>((resolve) => app.listen(0, IP, resolve));
    const registryFile = path.join(dir, "registry.yaml");
    writeFileSync(registryFile, "services: []\n");
    const [identity, destination] = await Promise.all([startIdentity(material, { name: "identity" }), startDestination(material, { name: "destination", registryFile })]);
    // No nat rules here: the redirect check would fail by design (and its probe would dial outside loopback), so it is off.
    proxy = await startProxy(material, { name: "proxy-transparent", sa: "t", ip: IP, workloadPort: (app.address() as net.AddressInfo).port, identity, destination, extra: ["--transparent", "--redirect-check-interval", "0"] });
  });
  afterAll(async () => {
    for (const server of servers) server.close();
    await stopAll();
  });

  /** Sends `data` to the transparent listener; refused: closed within 2 s, nothing answered, counted once, the app untouched. */
  async function refusedOnce(data: Buffer[]): Promise<Outcome> {
    const before = await refusals();
    const requestsBefore = appRequests;
    const answer = await exchange(proxy.outbound, data, { timeoutMs: 5000 });
    await sleep(100);
    const counted = (await refusals()) - before;
    const result = `${answer.closedByServer ? `closed after ${answer.closedAfterMs} ms` : "left open"}, ${answer.bytes.length} B answered, counted +${counted}, app requests +${appRequests - requestsBefore}`;
    return { result, ok: answer.closedByServer && (answer.closedAfterMs ?? Infinity) < 2000 && answer.bytes.length === 0 && counted === 1 && appRequests === requestsBefore };
  }

  const cases: [string, () => Buffer[]][] = [
    ["4 KiB of binary junk", () => [randomBytes(4096)]],
    ["an HTTP request for the app's own port", () => [Buffer.from(`GET / HTTP/1.1\r\nHost: ${IP}\r\nConnection: close\r\n\r\n`, "latin1")]],
    ["a CONNECT to the proxy's admin", () => [Buffer.from(`CONNECT ${proxy.admin} HTTP/1.1\r\nHost: ${proxy.admin}\r\n\r\n`, "latin1")]],
    ["a TLS ClientHello", () => [clientHello("c.default.svc.cluster.local", ["h2", "http/1.1"])]],
    ["nothing at all (connect and wait)", () => []],
  ];
  for (const [name, data] of cases) {
    it(`${LISTENER}: ${name}`, async () => {
      expectHolds(await attack(target, LISTENER, name, REFUSED, () => refusedOnce(data())));
    });
  }

  it(`${LISTENER}: a client trickling a request head, one byte a second`, async () => {
    const row = await attack(target, LISTENER, "request head trickled (1 B/s)", "closed by the server within 2 s (before a second byte)", async () => {
      const started = Date.now();
      const closedAfterMs = await new Promise<number | undefined>((resolve) => {
        const socket = net.connect({ host: hostOf(proxy.outbound), port: portOf(proxy.outbound) });
        const head = Buffer.from("GET / HTTP/1.1\r\nHost: app\r\n", "latin1");
        let sent = 0;
        const timer = setInterval(() => !socket.destroyed && socket.write(head.subarray(sent, ++sent)), 1000);
        const bound = setTimeout(() => done(undefined), 10_000);
        const done = (ms: number | undefined): void => {
          clearInterval(timer);
          clearTimeout(bound);
          socket.destroy();
          resolve(ms);
        };
        socket.on("error", () => undefined);
        socket.once("close", () => done(Date.now() - started));
      });
      return { result: closedAfterMs === undefined ? "still open after 10 s" : `closed after ${closedAfterMs} ms`, ok: closedAfterMs !== undefined && closedAfterMs < 2000 };
    });
    expectHolds(row);
  });

  it(`${LISTENER}: 3,000 connections from 50 source addresses, each sending junk`, async () => {
    const count = 3000;
    const expected = `every one closed and counted (+${count}); /metrics +1 KiB at most (no label takes a client's address), RSS +32 MiB at most`;
    const row = await attack(target, LISTENER, `${count} connections from 50 addresses`, expected, async () => {
      const metricsBefore = await scrape(proxy.admin);
      const before = metricSum(metricsBefore, "outbound_tcp_errors_total", 'error="no_original_destination"');
      const rssBefore = proxy.proc.rssKiB();
      let closed = 0;
      for (let batch = 0; batch < count; batch += 100) {
        await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            new Promise<void>((resolve) => {
              const socket = net.connect({ host: hostOf(proxy.outbound), port: portOf(proxy.outbound), localAddress: `127.0.4.${100 + ((batch + i) % 50)}` }, () => socket.write(randomBytes(64)));
              const timer = setTimeout(() => {
                socket.destroy();
                resolve();
              }, 5000);
              socket.on("error", () => undefined);
              socket.once("close", () => {
                clearTimeout(timer);
                closed++;
                resolve();
              });
            }),
          ),
        );
      }
      await sleep(300);
      const metricsAfter = await scrape(proxy.admin);
      const counted = metricSum(metricsAfter, "outbound_tcp_errors_total", 'error="no_original_destination"') - before;
      const rss = proxy.proc.rssKiB() - rssBefore;
      const grownBytes = metricsAfter.length - metricsBefore.length;
      return {
        result: `${closed} of ${count} closed; counted +${counted}; /metrics ${metricsBefore.length} → ${metricsAfter.length} B; RSS +${(rss / 1024).toFixed(1)} MiB`,
        ok: closed === count && counted === count && grownBytes <= 1024 && rss <= 32 * 1024,
      };
    });
    expectHolds(row);
  });
});
