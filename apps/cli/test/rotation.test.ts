// The trust-anchor rotation walkthrough, against live processes: anchor A →
// bundle A+B → issuer under B → old anchor A removed, with continuous requests
// from web to api through the proxies, none of which may fail or go without mTLS.
// Nothing is restarted: the proxies and the identity service follow the bundle file.
import { copyFile, rename } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InspectRemoteResult } from "../src/commands/inspect-remote.ts";
import { LocalMesh, type Workload } from "../src/demo/mesh.ts";
import { scrapeMetrics } from "../src/mesh/admin-client.ts";
import { sumSamples } from "../src/mesh/prometheus.ts";
import type { LogLine, ManagedProcess } from "../src/mesh/supervisor.ts";
import { makeTempDir, runCli } from "./helpers.ts";
import { alive, eventually, testBinaries } from "./mesh-helpers.ts";

/** Leaves live 10 s: proxies refresh every ~7 s, so every step is seen by several refreshes. */
const LEAF_LIFETIME_MS = 10_000;

describe("trust anchor rotation with zero failed requests (live identity, destination, two workloads)", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let mesh: LocalMesh;
  let api: Workload;
  let web: Workload;
  const calls = { ok: 0, failed: [] as string[] };
  const steps: string[] = [];

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
    mesh = await LocalMesh.create({ dir: path.join(dir, "mesh"), leafLifetimeMs: LEAF_LIFETIME_MS, skewMs: 0, binaries: testBinaries() });
    await mesh.startIdentity();
    await mesh.startDestination();
    api = await mesh.startWorkload({ name: "api", ip: "127.0.1.22" });
    web = await mesh.startWorkload({ name: "web", ip: "127.0.1.21", calls: "api", callIntervalMs: 200 });
    web.app.onLine((line) => {
      if (line.msg !== "call") return;
      if (line.ok === true) calls.ok++;
      else calls.failed.push(`${steps.at(-1) ?? "start"}: ${JSON.stringify(line)}`);
    });
  }, 120_000);

  afterAll(async () => {
    await mesh?.stop();
    await cleanup();
  });

  /** Replaces a file in one step, as a ConfigMap update or a careful operator does. */
  async function rollOut(source: string, target: string): Promise<void> {
    await copyFile(source, `${target}.new`);
    await rename(`${target}.new`, target);
  }

  /** The next line after now that matches (lines already seen do not count). */
  function next(proc: ManagedProcess, match: (line: LogLine) => boolean, what: string, timeoutMs = 20_000): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`${proc.name}: no ${what} within ${timeoutMs} ms; last output:\n${proc.lastLines().join("\n")}`));
      }, timeoutMs);
      const off = proc.onLine((line) => {
        if (match(line)) {
          clearTimeout(timer);
          off();
          resolve(line);
        }
      });
    });
  }

  /** What `meshtls inspect` says a workload's inbound port presents, verified against `anchors`. */
  async function presented(w: Workload, anchors: string): Promise<InspectRemoteResult> {
    const result = await runCli(["inspect", w.inbound, "--sni", w.identity, "--anchors", anchors, "--json"]);
    const inspected = JSON.parse(result.stdout) as InspectRemoteResult;
    // inspect exits 1 when the chain does not verify against --anchors.
    expect(result.code, result.stderr).toBe(inspected.verification?.ok === false ? 1 : 0);
    return inspected;
  }

  async function callsFor(ms: number): Promise<void> {
    const before = calls.ok;
    await new Promise((resolve) => setTimeout(resolve, ms));
    expect(calls.ok).toBeGreaterThan(before);
  }

  it("bundle rolled out, issuer switched, old anchor removed: every request succeeded over mTLS", async () => {
    const certsA = mesh.certsDir;
    const certsB = path.join(dir, "anchor-b");
    const bundleAB = path.join(dir, "bundle-ab.crt");
    const bundleB = path.join(dir, "bundle-b.crt");
    steps.push("anchor A only");
    await callsFor(3_000);
    expect((await presented(api, path.join(certsA, "ca.crt"))).verification).toMatchObject({ ok: true });

    // 1. A new anchor B (with an issuer under it) and the bundle A+B, both with the CLI.
    steps.push("create anchor B");
    expect((await runCli(["certs", "create", "--out", certsB])).code).toBe(0);
    // The guard, told where certificates run: B alone would strand every running certificate (all under A), so nothing is written.
    const running = ["--proxy-admin", api.admin, "--proxy-admin", web.admin, "--identity-addr", mesh.identity!.grpcAddress];
    const stranded = await runCli(["certs", "bundle", "--out", bundleB, path.join(certsB, "ca.crt"), ...running]);
    expect(stranded.code).toBe(1);
    expect(stranded.stderr).toMatch(/refusing to write .*bundle-b\.crt: running certificates would not verify under it/);
    expect(stranded.stderr.match(/would no longer verify/g)).toHaveLength(3);
    const bundled = await runCli(["certs", "bundle", "--out", bundleAB, path.join(certsA, "ca.crt"), path.join(certsB, "ca.crt"), ...running]);
    expect(bundled.code, bundled.stderr).toBe(0);
    expect(bundled.stdout.match(/^running: .* kept by this bundle$/gm)).toHaveLength(3);

    // 2. Roll the bundle out: the proxies and the identity service reload the trust-anchors file without a restart.
    steps.push("roll out bundle A+B");
    const pidsBefore = [api.proxy.pid, web.proxy.pid, mesh.identity!.proc.pid];
    const reloaded = [api, web].map((w) => next(w.proxy, (l) => l.msg === "trust anchors loaded" && l.anchors === 2, "reload of a 2-anchor bundle"));
    const identityReloaded = next(mesh.identity!.proc, (l) => l.msg === "trust anchors loaded" && l.anchors === 2, "identity service reload of the 2-anchor bundle");
    await rollOut(bundleAB, mesh.bundleFile);
    await Promise.all([...reloaded, identityReloaded]);
    await callsFor(2_000);

    // 3. Switch the issuer to the one under B; the identity service reloads its issuer folder and checks it against A+B.
    steps.push("switch issuer to B");
    // Key first, then certificate, each replaced in one step; a half-swapped folder is refused and kept out until both match.
    await rollOut(path.join(certsB, "issuer.key"), path.join(mesh.issuerDir, "issuer.key"));
    await rollOut(path.join(certsB, "issuer.crt"), path.join(mesh.issuerDir, "issuer.crt"));
    await eventually("the identity service serves a certificate under anchor B", async () => {
      const served = await runCli(["check", "--anchors", path.join(certsB, "ca.crt"), "--identity-addr", mesh.identity!.grpcAddress]);
      return served.code === 0 ? true : undefined;
    }, 20_000, 1_000);

    // 4. Wait until both proxies present leaves that chain to B (they refresh at 70 % of 10 s).
    steps.push("proxies refresh under B");
    for (const w of [api, web]) {
      const result = await eventually(`${w.name} presents a leaf under anchor B`, async () => {
        const r = await presented(w, path.join(certsB, "ca.crt"));
        return r.verification?.ok === true ? r : undefined;
      }, 30_000);
      expect(result.chain[0]).toMatchObject({ identity: w.identity });
    }

    // 5. Remove anchor A: bundle B only, rolled out to the proxies and the identity service.
    steps.push("remove anchor A");
    // Every running certificate is under B now: the guard lets the B-only bundle through.
    const guarded = await runCli(["certs", "bundle", "--out", bundleB, path.join(certsB, "ca.crt"), "--proxy-admin", api.admin, "--proxy-admin", web.admin, "--identity-addr", mesh.identity!.grpcAddress]);
    expect(guarded.code, guarded.stderr).toBe(0);
    const reloadedB = [api, web].map((w) => next(w.proxy, (l) => l.msg === "trust anchors loaded" && l.anchors === 1, "reload of the 1-anchor bundle"));
    const identityReloadedB = next(mesh.identity!.proc, (l) => l.msg === "trust anchors loaded" && l.anchors === 1, "identity service reload of the 1-anchor bundle");
    // The issuer under B stays in use under B alone (revalidated, not dropped).
    const revalidated = next(mesh.identity!.proc, (l) => l.msg === "issuer revalidated against the new trust anchors", "issuer revalidation under B alone");
    await rollOut(bundleB, mesh.bundleFile);
    await Promise.all([...reloadedB, identityReloadedB, revalidated]);

    // 6. Keep going across more refreshes with B alone trusted.
    steps.push("anchor B only");
    const refreshesBefore = await Promise.all([api, web].map(async (w) => sumSamples(await scrapeMetrics({ address: w.admin }), "identity_cert_refreshes_total", { result: "ok" })));
    await callsFor(9_000);
    const refreshesAfter = await Promise.all([api, web].map(async (w) => sumSamples(await scrapeMetrics({ address: w.admin }), "identity_cert_refreshes_total", { result: "ok" })));
    expect(refreshesAfter[0]).toBeGreaterThan(refreshesBefore[0]!);
    expect(refreshesAfter[1]).toBeGreaterThan(refreshesBefore[1]!);
    expect((await presented(api, bundleB)).verification).toMatchObject({ ok: true });
    const aRefused = await presented(api, path.join(certsA, "ca.crt"));
    expect(aRefused.verification).toMatchObject({ ok: false });

    // No process was restarted: the identity service and both proxies are the ones started at the beginning.
    expect([api.proxy.pid, web.proxy.pid, mesh.identity!.proc.pid]).toEqual(pidsBefore);
    expect(pidsBefore.every((pid) => alive(pid))).toBe(true);
    const identityMetrics = await scrapeMetrics({ address: mesh.identity!.adminAddress });
    expect(sumSamples(identityMetrics, "identity_trust_anchors", {})).toBe(1);

    // Every request of the whole sequence succeeded, and every connection between the proxies was mTLS.
    expect(calls.failed).toEqual([]);
    expect(calls.ok).toBeGreaterThan(50);
    const apiMetrics = await scrapeMetrics({ address: api.admin });
    const webMetrics = await scrapeMetrics({ address: web.admin });
    const inboundMtls = sumSamples(apiMetrics, "tcp_open_total", { direction: "inbound", peer: "src", tls: "true", client_id: web.identity });
    const inboundAll = sumSamples(apiMetrics, "tcp_open_total", { direction: "inbound", peer: "src" });
    const outboundMtls = sumSamples(webMetrics, "tcp_open_total", { direction: "outbound", peer: "dst", tls: "true", server_id: api.identity });
    const outboundAll = sumSamples(webMetrics, "tcp_open_total", { direction: "outbound", peer: "dst" });
    expect(inboundMtls).toBe(inboundAll);
    expect(outboundMtls).toBe(outboundAll);
    // Requests share pooled mesh connections (each closed when either leaf expires, so the rotation still makes
    // new handshakes under each bundle): count the requests, every one answered over mTLS.
    expect(outboundMtls).toBeGreaterThanOrEqual(1);
    const answered = sumSamples(webMetrics, "response_total", { direction: "outbound", tls: "true", server_id: api.identity, classification: "success" });
    expect(answered).toBeGreaterThanOrEqual(calls.ok);
    console.log(`rotation: ${calls.ok} requests, 0 failed; ${answered} answered over ${outboundMtls} mTLS connections web -> api; refreshes api ${refreshesAfter[0]}, web ${refreshesAfter[1]}`);

    // The end state passes meshtls check: files, identity service and both proxies.
    const check = await runCli(["check", "--anchors", mesh.bundleFile, "--issuer-dir", mesh.issuerDir, "--identity-addr", mesh.identity!.grpcAddress, "--proxy-admin", api.admin, "--proxy-admin", web.admin]);
    expect(check.stdout).toMatch(/Status: healthy/);
    expect(check.code).toBe(0);
  }, 180_000);
});
