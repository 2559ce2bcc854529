// The PKI changing under steady traffic A → b: the issuer replaced by an invalid one then a valid one, and the
// trust anchors rotated A → A+B → B, each followed by every proxy renewing. No request may fail.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { bins } from "@meshtls/hostile-suite/test/support/processes.ts";
import { afterAll, beforeAll, describe, it } from "vitest";
import { authorityB, renew, replaceFile, rssOf, sleep, startMesh, tempDir } from "./support/mesh.ts";
import type { Mesh, Proc } from "./support/mesh.ts";
import { figures, record } from "./support/results.ts";
import { requestVia, startTraffic } from "./support/traffic.ts";

const run = promisify(execFile);

/** Replaces the issuer the identity service reads: key first, then certificate, each file whole. */
function putIssuer(issuerDir: string, from: string): void {
  replaceFile(path.join(issuerDir, "issuer.key"), readFileSync(path.join(from, "issuer.key"), "utf8"));
  replaceFile(path.join(issuerDir, "issuer.crt"), readFileSync(path.join(from, "issuer.crt"), "utf8"));
}

/** Waits for a log line of `proc` after its first `since` lines. */
const logged = (proc: Proc, since: number, match: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<unknown> =>
  proc.waitFor((l) => proc.lines.indexOf(l) >= since && match(l), timeoutMs);

describe("PKI changes", () => {
  let mesh: Mesh;
  const renewAll = (): Promise<void[]> => Promise.all([mesh.a, ...mesh.b.map((e) => e.proxy)].map((p) => renew(p.admin)));

  beforeAll(async () => {
    mesh = await startMesh({ name: "pki", net: 5, endpoints: 1 });
  });

  afterAll(async () => {
    await mesh.close();
  });

  it("issuer replaced by an invalid one (another mesh's), then by a valid one: no request fails, proxies renew under each", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const identity = mesh.identity.proc;
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    const foreign = tempDir("foreign");
    await run(process.execPath, [bins.cli, "certs", "create", "--out", foreign], { timeout: 60_000 });
    let since = identity.lines.length;
    putIssuer(mesh.files.issuerDir, foreign);
    const refused = await logged(identity, since, (l) => /refused/.test(String(l["msg"])));
    // Still issuing with the current issuer: every proxy renews now.
    await renewAll();
    await sleep(1000);
    const next = tempDir("next-issuer");
    await run(process.execPath, [bins.cli, "certs", "issuer", "--ca-cert", path.join(mesh.files.dir, "ca.crt"), "--ca-key", path.join(mesh.files.dir, "ca.key"), "--out", next], { timeout: 60_000 });
    since = identity.lines.length;
    putIssuer(mesh.files.issuerDir, next);
    const loaded = await logged(identity, since, (l) => l["msg"] === "issuer loaded");
    await renewAll();
    await sleep(2000);
    const summary = await traffic.stop();
    record({
      case: "issuer: invalid (foreign), then a new valid one",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "0 failed; invalid refused; renewals succeed under both",
      holds: summary.failed === 0 && refused !== undefined && loaded !== undefined,
      note: "identity: 'issuer replacement refused; keeping the current issuer', then 'issuer loaded'",
    }, summary);
  });

  it("trust anchors A → A+B → B with the issuer moved to B: no request fails", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const procs = [mesh.identity.proc, ...mesh.proxies()];
    const anchorsLoaded = async (count: number): Promise<void> => {
      const since = procs.map((p) => p.lines.length);
      await Promise.all(procs.map((p, i) => logged(p, since[i] ?? 0, (l) => l["anchors"] === count || (Array.isArray(l["anchors"]) && l["anchors"].length === count))));
    };
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    const b = tempDir("anchor-b");
    await run(process.execPath, [bins.cli, "certs", "create", "--out", b], { timeout: 60_000 });
    const anchorA = readFileSync(path.join(mesh.files.dir, "ca.crt"), "utf8");
    const anchorB = readFileSync(path.join(b, "ca.crt"), "utf8");
    // 1. Both anchors everywhere.
    let waiting = anchorsLoaded(2);
    replaceFile(mesh.files.trustAnchorsFile, anchorA + anchorB);
    await waiting;
    // 2. The issuer under B; every proxy takes a leaf from it.
    const since = mesh.identity.proc.lines.length;
    putIssuer(mesh.files.issuerDir, b);
    await logged(mesh.identity.proc, since, (l) => l["msg"] === "issuer loaded");
    await renewAll();
    await sleep(1000);
    // 3. B alone.
    waiting = anchorsLoaded(1);
    replaceFile(mesh.files.trustAnchorsFile, anchorB);
    await waiting;
    await sleep(1000);
    // The identity service is still reachable and trusted under B alone.
    await renewAll();
    await sleep(2000);
    const summary = await traffic.stop();
    record({
      case: "trust anchors A → A+B → B, issuer moved to B",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "0 failed; renewals succeed under B alone",
      holds: summary.failed === 0 && mesh.proxies().every((p) => p.alive()),
    }, summary);
  });
});
