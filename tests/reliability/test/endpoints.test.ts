// Endpoints of service b dying under steady traffic A → b with long responses in flight: an app killed, a proxy
// killed with SIGKILL, a proxy stopped with SIGTERM (it drains), and A itself stopped with SIGTERM.
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authorityB, poll, replaceFile, rssOf, sleep, startApp, startMesh } from "./support/mesh.ts";
import type { Endpoint, Mesh } from "./support/mesh.ts";
import { figures, record } from "./support/results.ts";
import { requestVia, startTraffic, summarize } from "./support/traffic.ts";

/** A long response through A: which endpoint answered (from its first chunk), then how it ended. */
interface Stream {
  /** `b1`, `b2`, … once the head and first chunk arrived. */
  endpoint: Promise<string>;
  /** `ok`, or how it failed (`aborted`, `ECONNRESET`, `cut body`, …), and when. */
  done: Promise<{ result: string; at: number }>;
}

function slowStream(outbound: string, ms: number): Stream {
  const [host, port] = [outbound.slice(0, outbound.lastIndexOf(":")), Number(outbound.slice(outbound.lastIndexOf(":") + 1))];
  let named: (name: string) => void = () => undefined;
  const endpoint = new Promise<string>((resolve) => (named = resolve));
  const done = new Promise<{ result: string; at: number }>((resolve) => {
    let settled = false;
    const settle = (result: string): void => {
      if (settled) return;
      settled = true;
      named("none");
      resolve({ result, at: Date.now() });
    };
    const req = http.request({ host, port, path: `http://${authorityB}/slow?ms=${ms}`, headers: { host: authorityB }, agent: false, timeout: ms + 15_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
        const name = /^(b\d+) /.exec(body)?.[1];
        if (name !== undefined) named(name);
      });
      res.on("end", () => settle(res.statusCode === 200 && body.endsWith("ok\n") ? "ok" : `${res.statusCode ?? "?"} cut body (${JSON.stringify(body)})`));
      res.on("aborted", () => settle("aborted"));
      res.on("error", (error: NodeJS.ErrnoException) => settle(error.code ?? error.message));
    });
    req.on("timeout", () => {
      settle("timeout");
      req.destroy();
    });
    req.on("error", (error: NodeJS.ErrnoException) => settle(error.code ?? error.message));
    req.end();
  });
  return { endpoint, done };
}

/** `n` long responses through A, returned once each has its endpoint's first chunk. */
async function slowStreams(outbound: string, n: number, ms: number): Promise<{ endpoint: string; done: Stream["done"] }[]> {
  const streams = Array.from({ length: n }, () => slowStream(outbound, ms));
  return Promise.all(streams.map(async (s) => ({ endpoint: await s.endpoint, done: s.done })));
}

/** A proxy's `outbound_connect_retries_total` by reason, from its admin `/metrics`. */
async function retriesOf(admin: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://${admin}/metrics`)).text();
  // Every reason is exported from the start at 0: only those that happened.
  return Object.fromEntries([...text.matchAll(/^outbound_connect_retries_total\{reason="([a-z_]+)"\} (\d+)$/gm)].map((m) => [m[1] ?? "", Number(m[2])]).filter(([, n]) => n !== 0));
}

describe("endpoints dying under traffic", () => {
  let mesh: Mesh;
  let b1: Endpoint;
  let b2: Endpoint;
  let b3: Endpoint;

  beforeAll(async () => {
    mesh = await startMesh({ name: "endpoints", net: 3, endpoints: 3, proxyArgs: () => ["--drain-timeout", "10s"], clientArgs: ["--drain-timeout", "10s"] });
    [b1, b2, b3] = mesh.b as [Endpoint, Endpoint, Endpoint];
  });

  afterAll(async () => {
    await mesh.close();
  });

  it("an endpoint's app killed mid-stream: its streams end in a clean error, the next requests go to the healthy endpoints", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    const streams = await slowStreams(mesh.a.outbound, 9, 4000);
    const killedAt = Date.now();
    await b1.app.close();
    const ends = await Promise.all(streams.map((s) => s.done));
    await sleep(3000);
    const summary = await traffic.stop();
    const onKilled = streams.map((s, i) => ({ endpoint: s.endpoint, end: ends[i] })).filter((s) => s.endpoint === "b1");
    const others = streams.map((s, i) => ({ endpoint: s.endpoint, end: ends[i] })).filter((s) => s.endpoint !== "b1");
    // Clean: an error the client sees at once (no success with a cut body, no hang until a timeout).
    const clean = onKilled.every((s) => s.end !== undefined && s.end.result !== "ok" && !/cut body|timeout/.test(s.end.result) && s.end.at - killedAt < 3000);
    const afterFirstSecond = summarize(traffic.since(killedAt + 1000));
    // The pod comes back on the same address.
    b1.app = await startApp(b1.ip, "b1", b1.app.port);
    record({
      case: "b1's app killed mid-stream (3 endpoints)",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "its streams: clean error; others complete; 0 failed from 1 s after",
      holds: onKilled.length > 0 && clean && others.every((s) => s.end?.result === "ok") && afterFirstSecond.failed === 0,
      note: `streams on b1: ${onKilled.map((s) => s.end?.result).join(", ")}; others: ${others.filter((s) => s.end?.result === "ok").length}/${others.length} ok`,
    }, summary);
  });

  it("an endpoint's proxy killed (SIGKILL) mid-stream: its streams end in a clean error, no other request fails", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    const streams = await slowStreams(mesh.a.outbound, 9, 4000);
    const killedAt = Date.now();
    b2.proxy.proc.child.kill("SIGKILL");
    await b2.proxy.proc.exited;
    const ends = await Promise.all(streams.map((s) => s.done));
    await sleep(3000);
    const summary = await traffic.stop();
    const onKilled = streams.map((s, i) => ({ endpoint: s.endpoint, end: ends[i] })).filter((s) => s.endpoint === "b2");
    const others = streams.map((s, i) => ({ endpoint: s.endpoint, end: ends[i] })).filter((s) => s.endpoint !== "b2");
    const clean = onKilled.every((s) => s.end !== undefined && s.end.result !== "ok" && !/cut body|timeout/.test(s.end.result) && s.end.at - killedAt < 3000);
    // Requests in flight on b2 when it died fail like its streams; none sent a second later may.
    const afterFirstSecond = summarize(traffic.since(killedAt + 1000));
    // Kubernetes drops the dead pod from the endpoints.
    replaceFile(mesh.files.registryFile, mesh.registry({ endpoints: [b1, b3] }));
    record({
      case: "b2's proxy killed (SIGKILL) mid-stream",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "its streams: clean error; others complete; 0 failed from 1 s after",
      holds: onKilled.length > 0 && clean && others.every((s) => s.end?.result === "ok") && afterFirstSecond.failed === 0,
      note: `streams on b2: ${onKilled.map((s) => s.end?.result).join(", ")}; others: ${others.filter((s) => s.end?.result === "ok").length}/${others.length} ok`,
    }, summary);
  });

  it("SIGTERM of an endpoint's proxy under load drains: no request in flight is cut, no request fails", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const retriesBefore = await retriesOf(mesh.a.admin);
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB), { workers: 4, intervalMs: 5 });
    const streams = await slowStreams(mesh.a.outbound, 8, 3000);
    b3.proxy.proc.child.kill("SIGTERM");
    const code = await b3.proxy.proc.exited;
    const ends = await Promise.all(streams.map((s) => s.done));
    const summary = await traffic.stop();
    const onDrained = ends.filter((_, i) => streams[i]?.endpoint === "b3");
    // A request A sends to b3 once its listener has closed (connect refused), or on a kept-alive connection b3 closes
    // as it drains, was never processed: A sends it to another endpoint (outbound_connect_retries_total), so none fails.
    const retriesAfter = await retriesOf(mesh.a.admin);
    const retried = Object.entries(retriesAfter)
      .map(([reason, n]) => [reason, n - (retriesBefore[reason] ?? 0)] as const)
      .filter(([, n]) => n > 0)
      .map(([reason, n]) => `${reason} ${n}`)
      .join(", ");
    replaceFile(mesh.files.registryFile, mesh.registry({ endpoints: [b1] }));
    record({
      case: "b3's proxy SIGTERM under load (drain 10 s)",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "every stream completes; 0 failed; exit 0",
      holds: onDrained.length > 0 && ends.every((e) => e.result === "ok") && summary.failed === 0 && code === 0,
      note: `streams on b3: ${onDrained.map((e) => e.result).join(", ")}; exit ${String(code)}; A retried on another endpoint: ${retried === "" ? "none" : retried}`,
    }, summary);
  });

  it("SIGTERM of the client's proxy under load: every request in flight completes", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const ok = await poll(async () => ((await requestVia(mesh.a.outbound, authorityB)).ok ? true : undefined), 10_000, 200);
    expect(ok).toBe(true);
    const streams = await slowStreams(mesh.a.outbound, 20, 2000);
    const rssAfter = rssOf(mesh.proxies());
    mesh.a.proc.child.kill("SIGTERM");
    const code = await mesh.a.proc.exited;
    const ends = await Promise.all(streams.map((s) => s.done));
    const outcomes = ends.map((e) => ({ at: e.at, ok: e.result === "ok", result: e.result }));
    const summary = summarize(outcomes);
    record({
      case: "A's proxy SIGTERM with 20 responses in flight",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssAfter,
      expected: "every one completes; exit 0",
      holds: summary.failed === 0 && code === 0,
      note: `exit ${String(code)}`,
    }, summary);
  });
});
