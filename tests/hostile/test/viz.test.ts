// `meshtls viz` (alias `dashboard`) under attack (issue #19): its loopback HTTP server (page, assets, /api/edges,
// /api/events SSE)
// gets a 17th viewer, viewers that never read their event stream, junk requests and a connection flood.
// It reads one proxy admin: a stand-in HTTP server on loopback whose /metrics names 1,000 edges, so that each
// event is ~0.35 MB and a viewer that does not read falls behind fast.
import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, it } from "vitest";
import { defineAdminAttacks } from "./support/admin-attacks.ts";
import { holdIdleConnections } from "./support/floods.ts";
import { hostOf, portOf } from "./support/mesh.ts";
import { bins, poll, sleep, startNode, stopAll } from "./support/processes.ts";
import type { Proc } from "./support/processes.ts";
import { attack, expectHolds } from "./support/results.ts";
import type { Target } from "./support/results.ts";
import { httpGet } from "./support/wire.ts";

const LISTENER = "meshtls viz";
/** MAX_VIZ_CLIENTS in apps/cli/src/mesh/viz-server.ts. */
const MAX_VIEWERS = 16;
const EDGES = 1000;

/** A proxy admin's /metrics with `EDGES` outbound mTLS edges, each to its own identity and address. */
const METRICS = Array.from({ length: EDGES }, (_, i) => {
  const labels = `direction="outbound",peer="dst",tls="true",server_id="svc-${i}.default.serviceaccount.identity.meshtls.cluster.local",target_addr="10.1.${Math.floor(i / 250)}.${i % 250}:8080"`;
  return `tcp_open_total{${labels}} ${i + 1}\ntcp_open_connections{${labels}} 1\ntcp_read_bytes_total{${labels}} ${1000 * i}\ntcp_write_bytes_total{${labels}} ${2000 * i}\n`;
}).join("");

interface Viewer {
  socket: net.Socket;
  /** The HTTP status of the events response, once its head arrived. */
  status: Promise<number | undefined>;
  /** Resolves once an `event: edges` arrived. */
  firstEvent: Promise<boolean>;
  /** The server closed the stream. */
  closed: () => boolean;
  received: () => number;
}

/** GET /api/events on a raw socket; with `read: false` the socket is paused after the response head (it never reads). */
function openViewer(address: string, options: { read?: boolean } = {}): Viewer {
  const socket = net.connect({ host: hostOf(address), port: portOf(address) });
  let text = "";
  let received = 0;
  let closed = false;
  let headSeen = false;
  let onHead: (status: number | undefined) => void = () => undefined;
  let onEvent: (ok: boolean) => void = () => undefined;
  const status = new Promise<number | undefined>((resolve) => (onHead = resolve));
  const firstEvent = new Promise<boolean>((resolve) => (onEvent = resolve));
  socket.on("connect", () => socket.write("GET /api/events HTTP/1.1\r\nHost: dashboard\r\nAccept: text/event-stream\r\n\r\n"));
  socket.on("data", (chunk: Buffer) => {
    received += chunk.length;
    if (text.length < 4096) text += chunk.toString("latin1");
    const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
    if (m !== null && !headSeen) {
      headSeen = true;
      onHead(Number(m[1]));
      if (options.read === false) socket.pause();
    }
    if (text.includes("event: edges")) onEvent(true);
  });
  socket.on("error", () => undefined);
  socket.on("close", () => {
    closed = true;
    onHead(undefined);
    onEvent(false);
  });
  return { socket, status, firstEvent, closed: () => closed, received: () => received };
}

const withinMs = <T,>(promise: Promise<T>, ms: number, fallback: T): Promise<T> => Promise.race([promise, sleep(ms).then(() => fallback)]);

/** Writes one byte on each socket and counts those reset within `waitMs` (their peer's kernel has no such connection). */
async function resetsOnProbe(sockets: net.Socket[], waitMs: number): Promise<number> {
  let reset = 0;
  for (const socket of sockets) {
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNRESET" || error.code === "EPIPE") reset++;
    });
    socket.write("\r");
  }
  await sleep(waitMs);
  return reset;
}

describe("meshtls viz under attack", () => {
  let admin: http.Server;
  let proc: Proc;
  let address: string;

  /** Still serving: the page, /api/edges with the 1,000 edges, and a new viewer's first event. */
  const target: Target = {
    get proc() {
      return proc;
    },
    serving: async () => {
      const page = await httpGet(address, "/");
      const edges = await httpGet(address, "/api/edges", 10_000);
      const viewer = openViewer(address);
      const event = await withinMs(viewer.firstEvent, 10_000, false);
      viewer.socket.destroy();
      return page?.status === 200 && edges?.status === 200 && (JSON.parse(edges.text) as { edges: unknown[] }).edges.length === EDGES && event;
    },
  };

  beforeAll(async () => {
    admin = http.createServer((req, res) => {
      if (req.url === "/metrics") res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(METRICS);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => admin.listen(0, "127.0.0.1", resolve));
    const adminAddress = `127.0.0.1:${(admin.address() as net.AddressInfo).port}`;
    proc = startNode("viz", bins.cli, ["viz", "--proxy-admin", adminAddress, "--listen", "127.0.0.1:0", "--interval", "200ms"]);
    // It prints its "listening" JSON line on stderr (stdout is for people).
    const listening = await poll(() => /"msg":"listening".*?"address":"([^"]+)"/.exec(proc.stderr())?.[1], 30_000, 100);
    if (listening === undefined) throw new Error(`meshtls viz did not start: ${proc.stderr()}`);
    address = listening;
    await poll(async () => ((await httpGet(address, "/api/edges"))?.status === 200 ? true : undefined), 30_000, 200);
  });
  afterAll(async () => {
    await stopAll();
    admin.close();
  });

  it(`${LISTENER}: a ${MAX_VIEWERS + 1}th viewer while ${MAX_VIEWERS} watch`, async () => {
    const row = await attack(target, LISTENER, `viewer ${MAX_VIEWERS + 1} (cap ${MAX_VIEWERS})`, `503 with a message naming the cap; a freed slot admits a new viewer`, async () => {
      const viewers = Array.from({ length: MAX_VIEWERS }, () => openViewer(address));
      const statuses = await Promise.all(viewers.map((v) => withinMs(v.status, 10_000, undefined)));
      const extra = await new Promise<{ status: number; text: string } | undefined>((resolve) => {
        http.get(`http://${address}/api/events`, (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (c: string) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
        }).on("error", () => resolve(undefined));
      });
      viewers[0]?.socket.destroy();
      await sleep(300);
      const next = openViewer(address);
      const nextStatus = await withinMs(next.status, 10_000, undefined);
      for (const v of [...viewers, next]) v.socket.destroy();
      await sleep(300);
      const admitted = statuses.filter((s) => s === 200).length;
      return {
        result: `${admitted} admitted; viewer ${MAX_VIEWERS + 1}: ${extra === undefined ? "no answer" : `${extra.status} "${extra.text.trim()}"`}; after one left: ${String(nextStatus)}`,
        ok: admitted === MAX_VIEWERS && extra?.status === 503 && extra.text.includes(String(MAX_VIEWERS)) && nextStatus === 200,
      };
    });
    expectHolds(row);
  });

  it(`${LISTENER}: ${MAX_VIEWERS} viewers that never read their event stream (~0.35 MB every 200 ms)`, async () => {
    // Before each viewer's backlog was bounded (0.7 MB events): no slot freed in 30 s, RSS +190 MiB and growing with every event.
    const expected = "every one dropped by the server within 30 s (all its slots admit new viewers), RSS peak +160 MiB at most";
    const row = await attack(target, LISTENER, `${MAX_VIEWERS} viewers that never read`, expected, async () => {
      const before = proc.rssKiB();
      const stalled = Array.from({ length: MAX_VIEWERS }, () => openViewer(address, { read: false }));
      const admitted = (await Promise.all(stalled.map((v) => withinMs(v.status, 10_000, undefined)))).filter((s) => s === 200).length;
      const startedAt = Date.now();
      let peak = 0;
      // Every slot is free once the server dropped every stalled viewer: ${MAX_VIEWERS} new (reading) viewers are admitted.
      const freed = await poll(async () => {
        peak = Math.max(peak, proc.rssKiB() - before);
        const probes = Array.from({ length: MAX_VIEWERS }, () => openViewer(address));
        const statuses = await Promise.all(probes.map((p) => withinMs(p.status, 5000, undefined)));
        for (const p of probes) p.socket.destroy();
        return statuses.every((s) => s === 200) ? true : undefined;
      }, 30_000, 1000);
      const freedAfterS = ((Date.now() - startedAt) / 1000).toFixed(1);
      // What reached each stalled viewer before it was dropped is what the kernel's socket buffers held.
      for (const v of stalled) v.socket.resume();
      await poll(() => (stalled.every((v) => v.closed()) ? true : undefined), 10_000, 200);
      const mib = Math.max(...stalled.map((v) => v.received())) / 1024 / 1024;
      for (const v of stalled) v.socket.destroy();
      return {
        result: `${admitted} stalled viewers admitted; ${freed === true ? `all dropped, every slot free after ${freedAfterS} s` : "not every slot free after 30 s"}; at most ${mib.toFixed(1)} MiB reached one; RSS peak +${(peak / 1024).toFixed(1)} MiB`,
        ok: admitted === MAX_VIEWERS && freed === true && peak <= 160 * 1024,
      };
    });
    expectHolds(row);
  });

  defineAdminAttacks(LISTENER, () => ({ admin: address, target }));

  it(`${LISTENER}: 200 connections that never send a byte`, async () => {
    // Before: node's headersTimeout starts at a request's first byte, so a silent connection was held until the client went.
    // Runs before the 2,000-connection flood below, not after it: that flood overflows the listen queue (about 60
    // TcpExtListenOverflows a run) and the server goes on admitting its tail for seconds; run after it, this row saw
    // 0 of 200 closed within 20 s once in a CI run and once in 34 runs here under load, and passed otherwise. A failure
    // now says whether the connections still open ever reached the server.
    const count = 200;
    const boundMs = 20_000;
    const row = await attack(target, LISTENER, `${count} silent connections`, `every one closed by the server within ${boundMs / 1000} s (its first-request timeout is 10 s)`, async () => {
      const started = Date.now();
      const closedAt: number[] = [];
      const sockets = await Promise.all(
        Array.from({ length: count }, () =>
          new Promise<net.Socket>((resolve) => {
            const socket = net.connect({ host: hostOf(address), port: portOf(address) }, () => resolve(socket));
            socket.on("error", () => resolve(socket));
            socket.once("close", () => closedAt.push(Date.now() - started));
          }),
        ),
      );
      const connectedMs = Date.now() - started;
      await poll(() => (closedAt.length >= count ? true : undefined), boundMs, 250);
      const closed = closedAt.length;
      const lookedMs = Date.now() - started;
      // Any still open: does the server's kernel know them (one byte each: a connection it never admitted is reset), and
      // does the server close them a moment later (it was late, or this process was not scheduled)?
      const open = sockets.filter((socket) => !socket.destroyed);
      const reset = open.length === 0 ? 0 : await resetsOnProbe(open, 1000);
      const closedLate = closedAt.length - closed - reset;
      for (const socket of sockets) socket.destroy();
      // closedAt is in the order the closes came: its first entry is the quickest, entry `closed - 1` the slowest in time.
      const slowest = closedAt[closed - 1] ?? 0;
      const stillOpen = open.length === 0
        ? ""
        : `; at ${(lookedMs / 1000).toFixed(1)} s ${open.length} open: ${reset} reset by a byte (never admitted), ${closedLate} closed in the next 1 s`;
      return {
        result: `connected in ${connectedMs} ms; ${closed} of ${count} closed by the server${closed === 0 ? "" : `, the first after ${((closedAt[0] ?? 0) / 1000).toFixed(1)} s, the last after ${(slowest / 1000).toFixed(1)} s`}${stillOpen}`,
        ok: closed === count && slowest <= boundMs,
      };
    });
    expectHolds(row);
  });

  it(`${LISTENER}: 2,000 idle connections while a viewer watches`, async () => {
    const count = 2000;
    // Held for the few seconds serving takes; the silent-connection row above checks that the server closes idle ones itself.
    const row = await attack(target, LISTENER, `${count} idle connections`, "the page, /api/edges and a new viewer served while they are held; RSS +64 MiB at most", async () => {
      const before = proc.rssKiB();
      const held = await holdIdleConnections(address, count);
      const served = await target.serving();
      const rss = proc.rssKiB() - before;
      const closedByServer = held.closedByServer();
      await held.release();
      return {
        result: `${served ? "served" : "NOT served"} while held; ${closedByServer} closed by the server meanwhile; RSS +${(rss / 1024).toFixed(1)} MiB`,
        ok: served && rss <= 64 * 1024,
      };
    });
    expectHolds(row);
  });
});
