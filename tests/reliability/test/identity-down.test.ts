// The identity service away, with steady traffic A → B: longer than a refresh interval (proxies serve on
// and renew when it returns), then until the leaves expire (the proxies fail closed, /ready says why, and
// traffic resumes on the first retry after it returns).
import { afterAll, beforeAll, describe, it } from "vitest";
import { adminGet, authorityB, createDestination, createIdentity, createMeshFiles, metricSum, poll, registryText, renew, replaceFile, rssOf, sleep, startApp, startProxy, stopAll } from "./support/mesh.ts";
import type { ControlPlaneProcess, MeshFiles, ProxyProcess } from "./support/mesh.ts";
import { figures, record } from "./support/results.ts";
import { requestVia, startTraffic, summarize } from "./support/traffic.ts";

/** Leaves of 40 s are refreshed at 70 %: 28 s. */
const LIFETIME_S = 40;
/** The documented bound on recovery once the identity service answers again: the next retry, ≤ 60 s (docs/operations.md). */
const RECOVERY_BOUND_MS = 60_000;

describe("identity service down", () => {
  let files: MeshFiles;
  let identity: ControlPlaneProcess;
  let a: ProxyProcess;
  let b: ProxyProcess;
  const closers: (() => Promise<void>)[] = [];

  /** When each proxy's certificate expires (ms since the epoch), from its metrics. */
  const notAfter = async (proxy: ProxyProcess): Promise<number> =>
    1000 * metricSum(await (await fetch(`http://${proxy.admin}/metrics`)).text(), "identity_cert_expiration_timestamp_seconds");
  const refreshFailures = async (proxy: ProxyProcess): Promise<number> =>
    metricSum(await (await fetch(`http://${proxy.admin}/metrics`)).text(), "identity_cert_refreshes_total", 'result="failure"');

  beforeAll(async () => {
    files = await createMeshFiles("identity-down");
    identity = await createIdentity(files, { lifetime: `${LIFETIME_S}s` });
    const destination = await createDestination(files);
    const app = await startApp("127.0.2.1", "b");
    closers.push(app.close);
    b = await startProxy(files.material, { name: "proxy-b", sa: "b", ip: "127.0.2.1", workloadPort: app.port, identity, destination });
    a = await startProxy(files.material, { name: "proxy-a", sa: "a", ip: "127.0.2.2", workloadPort: 1, identity, destination });
    replaceFile(files.registryFile, registryText([{ name: "b", targetPort: app.port, endpoints: [{ address: "127.0.2.1", sa: "b", inboundPort: Number(b.inbound.split(":")[1]) }] }]));
    const up = await poll(async () => ((await requestVia(a.outbound, authorityB)).ok ? true : undefined), 30_000, 300);
    if (up !== true) throw new Error("A never reached B: the mesh did not come up");
  });

  afterAll(async () => {
    await Promise.all(closers.map((close) => close()));
    await stopAll();
  });

  it("longer than a refresh interval: no request fails, and both proxies renew once it returns", async () => {
    // Both leaves start now, so both refreshes (at 28 s) fall while the service is away.
    await Promise.all([renew(a.admin), renew(b.admin)]);
    const rssBefore = rssOf([a.proc, b.proc]);
    const expiries = await Promise.all([notAfter(a), notAfter(b)]);
    const failuresBefore = await Promise.all([refreshFailures(a), refreshFailures(b)]);
    const traffic = startTraffic(() => requestVia(a.outbound, authorityB));
    const downAt = Date.now();
    await identity.kill();
    // Away until each proxy's refresh has failed at least once: longer than its refresh interval.
    const bothFailed = await poll(async () => {
      const now = await Promise.all([refreshFailures(a), refreshFailures(b)]);
      return now.every((n, i) => n > (failuresBefore[i] ?? 0)) ? true : undefined;
    }, LIFETIME_S * 1000, 250);
    // The restarted service issues 10-second leaves, so that the next case needs to wait only 10 s for them to expire.
    await identity.start(["--issuance-lifetime", "10s"]);
    const awayMs = Date.now() - downAt;
    const renewed = await poll(async () => {
      const now = await Promise.all([notAfter(a), notAfter(b)]);
      return now.every((t, i) => t !== (expiries[i] ?? 0)) ? now : undefined;
    }, 30_000, 200);
    const summary = await traffic.stop();
    const lastExpiry = Math.max(...expiries);
    record({
      case: `identity down ${(awayMs / 1000).toFixed(0)} s, past both refreshes (${0.7 * LIFETIME_S} s into ${LIFETIME_S} s leaves)`,
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf([a.proc, b.proc]),
      expected: "0 failed; both renew before expiry",
      holds: bothFailed === true && renewed !== undefined && summary.failed === 0 && Date.now() < lastExpiry + 1000,
      note: `renewed ${renewed === undefined ? "NOT" : `${((lastExpiry - Date.now()) / 1000).toFixed(1)} s before the old leaves' expiry`}`,
    }, summary);
  });

  it("until the leaves expire: the proxies fail closed with /ready saying why, and recover on the service's return", async () => {
    const rssBefore = rssOf([a.proc, b.proc]);
    // Both now hold 10-second leaves from the restarted service: take it away at once.
    await identity.kill();
    // A request A → B needs both leaves: it fails closed from the earlier notAfter on (the two can be seconds apart).
    const [expiryA, expiryB] = [await notAfter(a), await notAfter(b)];
    const earliest = Math.min(expiryA, expiryB);
    const expiry = Math.max(expiryA, expiryB);
    const traffic = startTraffic(() => requestVia(a.outbound, authorityB));
    await sleep(Math.max(0, expiry - Date.now()) + 1500);
    const readyA = await adminGet(a.admin, "/ready");
    const readyB = await adminGet(b.admin, "/ready");
    await sleep(1500);
    const returnedAt = Date.now();
    await identity.start(["--issuance-lifetime", `${LIFETIME_S}s`]);
    const recovered = await poll(() => traffic.outcomes.find((o) => o.ok && o.at >= returnedAt), RECOVERY_BOUND_MS + 10_000, 100);
    await sleep(2000);
    await traffic.stop();

    // Before the leaves expired: nothing failed; after (until the service returned): nothing got through.
    const beforeExpiry = summarize(traffic.outcomes.filter((o) => o.at < earliest - 500));
    const whileExpired = traffic.outcomes.filter((o) => o.at > earliest + 500 && o.at < returnedAt);
    const leaked = whileExpired.filter((o) => o.ok).length;
    const closed = whileExpired.filter((o) => /^502 ERR_TLS_(LOCAL|PEER)_CERT_EXPIRED$/.test(o.result)).length;
    const readySays = (r: { status: number; text: string } | undefined): boolean => r?.status === 503 && /certificate expired/.test(r.text);
    record({
      case: "identity down past leaf expiry (10 s leaves)",
      ...figures(summarize(traffic.outcomes.filter((o) => o.at < returnedAt), returnedAt)),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf([a.proc, b.proc]),
      expected: "0 failed before expiry; after: every request 502 …CERT_EXPIRED, /ready 503 'certificate expired'",
      holds: beforeExpiry.failed === 0 && leaked === 0 && whileExpired.length > 0 && closed === whileExpired.length && readySays(readyA) && readySays(readyB),
      note: `A /ready: ${readyA?.status ?? "-"} ${readyA?.text.trim() ?? ""}; B /ready: ${readyB?.status ?? "-"}`,
    }, summarize(whileExpired));
    const recoveryMs = (recovered?.at ?? Infinity) - returnedAt;
    const afterReturn = summarize(traffic.since(returnedAt));
    record({
      case: "identity back after expiry: recovery",
      ...figures(afterReturn),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf([a.proc, b.proc]),
      expected: `traffic resumes within ${RECOVERY_BOUND_MS / 1000} s (next retry), then 0 failed`,
      holds: recoveryMs <= RECOVERY_BOUND_MS && traffic.outcomes.filter((o) => recovered !== undefined && o.at > recovered.at + 1000 && !o.ok).length === 0,
      note: `first success ${(recoveryMs / 1000).toFixed(1)} s after the service returned`,
    }, afterReturn);
  });
});
