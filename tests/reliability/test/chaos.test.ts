// kill -9 of the control plane at random moments under steady traffic that policy allows: the identity service
// (30-second leaves, so refreshes fall during the run) and the destination service (discovery and the policy
// controller B's inbound follows, starting from deny). Seeded: RELIABILITY_SEED=<n> reruns one schedule.
import http from "node:http";
import { afterAll, beforeAll, describe, it } from "vitest";
import { authorityB, identityOf, outboundErrors, sleep, startMesh } from "./support/mesh.ts";
import type { ControlPlaneProcess, Mesh } from "./support/mesh.ts";
import { figures, record } from "./support/results.ts";
import { requestVia, startTraffic } from "./support/traffic.ts";

const KILLS = 6;
const WORKLOAD = JSON.stringify({ ns: "default", pod: "b-0" });

/** mulberry32: a small seeded generator, so that a failing schedule can be run again. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Only A may call b's app port: a Server denying by default and an authorization for A's identity. */
const onlyA = (port: number): string =>
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
  ].join("\n");

/** A plaintext request straight to an inbound (an outsider): its status. */
function outsider(inbound: string): Promise<number | string> {
  const [host, port] = [inbound.slice(0, inbound.lastIndexOf(":")), Number(inbound.slice(inbound.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: "/", agent: false, timeout: 5000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? "?");
    });
    req.on("timeout", () => req.destroy());
    req.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

describe("kill -9 of the control plane at random moments", () => {
  let mesh: Mesh;
  const seed = Number(process.env["RELIABILITY_SEED"] ?? Math.floor(Math.random() * 2 ** 31));

  beforeAll(async () => {
    mesh = await startMesh({
      name: "chaos",
      net: 6,
      endpoints: 2,
      lifetime: "30s",
      policy: onlyA,
      proxyArgs: (_ip, policyAddr) => ["--policy-addr", policyAddr, "--workload-name", WORKLOAD, "--default-policy", "deny"],
    });
  });

  afterAll(async () => {
    await mesh.close();
  });

  it(`${KILLS} kills: no proxy crashes, no allowed request fails, outsiders stay refused`, async () => {
    console.log(`chaos seed ${seed} (rerun with RELIABILITY_SEED=${seed})`);
    const random = seeded(seed);
    const pids = mesh.proxies().map((p) => p.pid);
    const rssBefore = mesh.proxies().reduce((sum, p) => sum + p.rssKiB(), 0);
    const logFrom = mesh.a.proc.lines.length;
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    const schedule: string[] = [];
    for (let i = 0; i < KILLS; i++) {
      const target: ControlPlaneProcess = random() < 0.5 ? mesh.identity : mesh.destination;
      const waitMs = Math.round(500 + random() * 2500);
      const downMs = Math.round(200 + random() * 2300);
      await sleep(waitMs);
      await target.kill();
      await sleep(downMs);
      await target.start();
      schedule.push(`${target.name} ${(downMs / 1000).toFixed(1)} s`);
    }
    await sleep(3000);
    const summary = await traffic.stop();
    // Denied at the connection (reset) or per request (403): never answered by the app.
    const refused = await outsider(mesh.b[0]?.proxy.inbound ?? "");
    const outsiderRefused = refused === 403 || refused === "ECONNRESET";
    const crashed = mesh.proxies().filter((p, i) => !p.alive() || p.pid !== pids[i]).map((p) => p.name);
    record({
      case: `kill -9 ×${KILLS} of identity/destination (seed ${seed})`,
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: mesh.proxies().reduce((sum, p) => sum + p.rssKiB(), 0),
      expected: "0 failed; no proxy restarted; outsider refused",
      holds: summary.failed === 0 && crashed.length === 0 && outsiderRefused,
      note: `${summary.failed > 0 ? `A logged: ${outboundErrors(mesh.a.proc, logFrom)}; ` : ""}${schedule.join(", ")}; outsider got ${refused}${crashed.length > 0 ? `; crashed: ${crashed.join(", ")}` : ""}`,
    }, summary);
  });
});
