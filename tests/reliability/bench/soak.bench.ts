// The soak (not in CI): RELIABILITY_SOAK_MINUTES (default 10) of steady traffic A → b with 10-second
// certificates and the policy of b's port changed every minute (always allowing A). Every minute: each
// process's RSS and open file descriptors, and each proxy's metric series. No allowed request may fail;
// descriptors and series must stay flat.
import { readdirSync } from "node:fs";
import { afterAll, beforeAll, describe, it } from "vitest";
import { authorityB, identityOf, outboundErrors, replaceFile, sleep, startMesh } from "../test/support/mesh.ts";
import type { Mesh, Proc } from "../test/support/mesh.ts";
import { figures, record } from "../test/support/results.ts";
import { requestVia, startTraffic, summarize } from "../test/support/traffic.ts";

const MINUTES = Number(process.env["RELIABILITY_SOAK_MINUTES"] ?? 10);
const WORKLOAD = JSON.stringify({ ns: "default", pod: "b-0" });

/** Two policies of b's app port that both allow A: toggled every minute. */
const policies = (port: number): string[] => [
  [
    "servers:",
    `  - { name: b-http, namespace: default, podSelector: { matchLabels: { app: b } }, port: ${port}, accessPolicy: deny }`,
    "authorizationPolicies:",
    "  - name: b-from-a",
    "    namespace: default",
    "    targetRef: { kind: Server, name: b-http }",
    "    requiredAuthenticationRefs: [{ kind: MeshTLSAuthentication, name: a-only }]",
    "meshTLSAuthentications:",
    `  - { name: a-only, namespace: default, identities: ["${identityOf("a")}"] }`,
  ].join("\n"),
  ["servers:", `  - { name: b-http, namespace: default, podSelector: { matchLabels: { app: b } }, port: ${port}, accessPolicy: all-authenticated }`].join("\n"),
];

const fds = (proc: Proc): number => {
  try {
    return readdirSync(`/proc/${proc.pid}/fd`).length;
  } catch {
    return -1;
  }
};

/** A proxy's metric series: each sample line's name and labels (the value left out). */
async function series(admin: string): Promise<string[]> {
  const text = await (await fetch(`http://${admin}/metrics`)).text();
  return text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => line.slice(0, line.lastIndexOf(" ")));
}

interface Sample {
  minute: number;
  rssKiB: Record<string, number>;
  fds: Record<string, number>;
  series: Record<string, string[]>;
  sent: number;
  failed: number;
}

describe("soak", () => {
  let mesh: Mesh;
  let appPort = 0;

  beforeAll(async () => {
    mesh = await startMesh({
      name: "soak",
      net: 8,
      endpoints: 2,
      lifetime: "10s",
      policy: (port) => {
        appPort = port;
        return policies(port)[0] ?? "";
      },
      proxyArgs: (_ip, policyAddr) => ["--policy-addr", policyAddr, "--workload-name", WORKLOAD, "--default-policy", "deny"],
    });
  });

  afterAll(async () => {
    await mesh.close();
  });

  it(`${MINUTES} minutes: 0 failed, descriptors and metric series flat`, async () => {
    const procs = (): Proc[] => [mesh.identity.proc, mesh.destination.proc, ...mesh.proxies()];
    const proxies = [mesh.a, ...mesh.b.map((e) => e.proxy)];
    const logFrom = mesh.a.proc.lines.length;
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    const samples: Sample[] = [];
    const started = Date.now();
    const take = async (minute: number): Promise<Sample> => {
      const window = summarize(traffic.since(started + (minute - 1) * 60_000).filter((o) => o.at < started + minute * 60_000));
      const sample: Sample = {
        minute,
        rssKiB: Object.fromEntries(procs().map((p) => [p.name, p.rssKiB()])),
        fds: Object.fromEntries(procs().map((p) => [p.name, fds(p)])),
        series: Object.fromEntries(await Promise.all(proxies.map(async (p) => [p.proc.name, await series(p.admin)] as const))),
        sent: window.sent,
        failed: window.failed,
      };
      const line = (values: Record<string, number>, unit: (n: number) => string): string => Object.entries(values).map(([k, v]) => `${k.replace(/#\d+$/, "")} ${unit(v)}`).join(", ");
      console.log(
        `minute ${minute}: ${sample.sent} sent, ${sample.failed} failed | RSS ${line(sample.rssKiB, (v) => `${(v / 1024).toFixed(0)}M`)} | fds ${line(sample.fds, String)} | series ${line(Object.fromEntries(Object.entries(sample.series).map(([k, v]) => [k, v.length])), String)}`,
      );
      samples.push(sample);
      return sample;
    };
    const rssBefore = mesh.proxies().reduce((sum, p) => sum + p.rssKiB(), 0);
    for (let minute = 1; minute <= MINUTES; minute++) {
      await sleep(started + minute * 60_000 - Date.now());
      replaceFile(mesh.files.registryFile, mesh.registry({ policy: policies(appPort)[minute % 2] ?? "" }));
      await take(minute);
    }
    const summary = await traffic.stop();
    // The baseline is minute 2: by then both policies have been in force once (each adds its own label values).
    const first = samples[Math.min(1, samples.length - 1)];
    const last = samples.at(-1);
    if (first === undefined || last === undefined) throw new Error("no samples");
    // Flat: no process holds more than 10 more descriptors than at minute 2, no proxy more series.
    const fdGrowth = Object.entries(last.fds).filter(([name, n]) => n > (first.fds[name] ?? 0) + 10);
    // Growth named: the series a proxy has at the end that it did not have at minute 2.
    const seriesGrowth = Object.entries(last.series)
      .map(([name, lines]) => [name, lines.filter((l) => !(first.series[name] ?? []).includes(l))] as const)
      .filter(([, added]) => added.length > 0);
    const rssFirst = Object.values(first.rssKiB).reduce((a, b) => a + b, 0);
    const rssLast = Object.values(last.rssKiB).reduce((a, b) => a + b, 0);
    const refreshes = await Promise.all(proxies.map(async (p) => (await (await fetch(`http://${p.admin}/metrics`)).text()).split("\n").find((l) => l.startsWith("identity_cert_refreshes_total") && l.includes('result="ok"'))));
    console.log(`soak: ${summary.sent} sent, ${summary.failed} failed; RSS all processes minute ${first.minute} ${(rssFirst / 1024).toFixed(0)} MiB → minute ${last.minute} ${(rssLast / 1024).toFixed(0)} MiB; certificate refreshes (A, B1, B2): ${refreshes.map((l) => l?.split(" ").at(-1) ?? "-").join(", ")}`);
    record({
      case: `soak ${MINUTES} min: 10 s leaves, policy change each minute`,
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: mesh.proxies().reduce((sum, p) => sum + p.rssKiB(), 0),
      expected: "0 failed; fds and metric series flat",
      holds: summary.failed === 0 && fdGrowth.length === 0 && seriesGrowth.length === 0,
      note: `${summary.failed > 0 ? `A logged: ${outboundErrors(mesh.a.proc, logFrom)}; ` : ""}all processes' RSS minute ${first.minute} → ${last.minute}: ${(rssFirst / 1024).toFixed(0)} → ${(rssLast / 1024).toFixed(0)} MiB${fdGrowth.length > 0 ? `; fds grew: ${JSON.stringify(fdGrowth)}` : ""}${seriesGrowth.length > 0 ? `; series grew: ${JSON.stringify(seriesGrowth)}` : ""}`,
    }, summary);
  });
});
