// The injector webhook killed while meshed traffic A → b runs (destination in Kubernetes mode): the data plane
// does not depend on it, so nothing fails; a review sent meanwhile cannot connect, and the API server (failurePolicy
// Ignore, as Linkerd) admits the pod as it is, without a proxy: `meshtls check --kubernetes` must name that pod.
// Once the injector is back (same address), the next review is answered with the patch, and the pod re-created
// through it leaves the check healthy.
import { execFile, execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, it } from "vitest";
import { applyPatch, type JsonPatch } from "@meshtls/kubernetes";
import type { KubeObject } from "@meshtls/kubernetes/testing";
import { bins, startNode } from "@meshtls/hostile-suite/test/support/processes.ts";
import { authorityB, freePort, rssOf, sleep } from "./support/mesh.ts";
import type { Proc } from "./support/mesh.ts";
import { NAMESPACE, startKubernetesMesh } from "./support/kubernetes-mesh.ts";
import type { KubernetesMesh } from "./support/kubernetes-mesh.ts";
import { figures, record } from "./support/results.ts";
import { requestVia, startTraffic } from "./support/traffic.ts";

const run = promisify(execFile);
/** How long the injector stays down. */
const DOWN_MS = 5000;

type Review = { status: number; patch: JsonPatch | undefined; allowed: boolean } | { error: string };

describe("injector down", () => {
  let mesh: KubernetesMesh;
  let injector: Proc;
  let address: string;
  let caPem: string;
  let starts = 0;
  let injectorArgs: string[];

  /** meshtls-injector on its fixed address, reading namespaces through the mesh's kubeconfig. */
  async function startInjector(): Promise<void> {
    injector = startNode(`injector#${++starts}`, bins.injector, injectorArgs);
    await injector.waitForMsg("listening", 30_000);
  }

  beforeAll(async () => {
    // The pods of namespace default are injected through its annotation, as `kubectl annotate ns default linkerd.io/inject=enabled`.
    mesh = await startKubernetesMesh({ name: "injector-down", net: 22, endpoints: 2, namespaceAnnotations: { "linkerd.io/inject": "enabled" } });
    const cert = path.join(mesh.files.dir, "injector.crt");
    const key = path.join(mesh.files.dir, "injector.key");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=meshtls-injector.meshtls.svc", "-addext", "subjectAltName=DNS:meshtls-injector.meshtls.svc", "-keyout", key, "-out", cert], { stdio: "pipe" });
    caPem = readFileSync(cert, "utf8");
    address = `127.0.0.1:${await freePort("127.0.0.1")}`;
    injectorArgs = ["--listen", address, "--tls-cert", cert, "--tls-key", key, "--trust-anchors", mesh.files.material.caFile, "--kubeconfig", mesh.kubeconfig];
    await startInjector();
  });

  afterAll(async () => {
    await mesh?.close();
  });

  /** A Pod CREATE review, sent as the API server sends it (HTTPS, the webhook's caBundle, its service name). */
  function review(pod: KubeObject): Promise<Review> {
    const body = JSON.stringify({
      apiVersion: "admission.k8s.io/v1",
      kind: "AdmissionReview",
      request: { uid: randomUUID(), kind: { group: "", version: "v1", kind: "Pod" }, resource: { group: "", version: "v1", resource: "pods" }, operation: "CREATE", namespace: NAMESPACE, object: pod },
    });
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    return new Promise((resolve) => {
      const req = https.request({ host: "127.0.0.1", port, path: "/", method: "POST", ca: caPem, servername: "meshtls-injector.meshtls.svc", headers: { "content-type": "application/json" }, agent: false, timeout: 10_000 }, (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c: string) => (text += c));
        res.on("end", () => {
          const response = (JSON.parse(text) as { response?: { allowed?: boolean; patch?: string } }).response;
          resolve({ status: res.statusCode ?? 0, allowed: response?.allowed === true, patch: response?.patch === undefined ? undefined : (JSON.parse(Buffer.from(response.patch, "base64").toString("utf8")) as JsonPatch) });
        });
      });
      req.on("timeout", () => req.destroy(new Error("timeout")));
      req.on("error", (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
      req.end(body);
    });
  }

  /** `meshtls check --kubernetes` through the mesh's kubeconfig: exit code and what it printed. */
  async function check(): Promise<{ code: number; stdout: string }> {
    try {
      const { stdout } = await run(process.execPath, [bins.cli, "check", "--kubernetes", "--kubeconfig", mesh.kubeconfig], { env: { PATH: process.env["PATH"] }, timeout: 30_000 });
      return { code: 0, stdout };
    } catch (error) {
      const failed = error as { code?: number; stdout?: string };
      return { code: typeof failed.code === "number" ? failed.code : -1, stdout: failed.stdout ?? String(error) };
    }
  }

  const hasProxy = (patch: JsonPatch | undefined): boolean => (patch ?? []).some((op) => (op.value as { name?: unknown } | undefined)?.name === "linkerd-proxy");

  it("killed (SIGKILL) 5 s while meshed traffic runs: 0 failed; a pod admitted meanwhile is named by meshtls check; the next review after the restart is patched", async () => {
    // A third pod of b (a scale-up), as the API server asks the webhook about it: no proxy yet.
    const scaled = mesh.pod("b-3", "127.0.22.3", { injected: false });
    const healthyBefore = await check();
    const first = await review(scaled);
    const rssBefore = rssOf(mesh.proxies());
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    await sleep(500);

    injector.child.kill("SIGKILL");
    await injector.exited;
    const killedAt = Date.now();
    const whileDown = await review(scaled);
    // failurePolicy: Ignore — the API server creates the pod as it was sent.
    mesh.api.apply(scaled);
    const found = await check();
    const named = found.stdout.includes(`pod ${NAMESPACE}/b-3 in an injected namespace has no proxy (admitted while the injector was unreachable?) — restart it`);
    await sleep(Math.max(0, killedAt + DOWN_MS - Date.now()));

    await startInjector();
    const restartedAt = Date.now();
    const after = await review(scaled);
    // The remedy the check names: the pod deleted and created again, this time through the webhook.
    mesh.api.remove("Pod", NAMESPACE, "b-3");
    const recreated = "patch" in after && after.patch !== undefined ? applyPatch(scaled, after.patch) : scaled;
    mesh.api.apply(recreated);
    const healthyAfter = await check();
    await sleep(1000);
    const summary = await traffic.stop();

    const patched = (r: Review): boolean => "status" in r && r.status === 200 && r.allowed && hasProxy(r.patch);
    const refused = "error" in whileDown ? whileDown.error : `answered ${whileDown.status}`;
    const alive = mesh.proxies().every((p) => p.alive()) && mesh.destination.proc.alive();
    record({
      case: "injector killed 5 s, a pod created meanwhile",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "0 failed (the data plane does not use it); a review meanwhile cannot connect; meshtls check names the unmeshed pod; patched after the restart",
      holds:
        summary.failed === 0 &&
        alive &&
        healthyBefore.code === 0 &&
        patched(first) &&
        "error" in whileDown &&
        found.code === 1 &&
        named &&
        patched(after) &&
        healthyAfter.code === 0,
      note: `review while down: ${refused}; meshtls check: ${named ? "'pod default/b-3 in an injected namespace has no proxy … restart it', exit 1" : `did not name b-3 (exit ${found.code}): ${found.stdout.replace(/\s+/g, " ").slice(0, 200)}`}; after the restart (${((restartedAt - killedAt) / 1000).toFixed(1)} s down): ${patched(after) ? "patched" : "NOT patched"}, check ${healthyAfter.code === 0 ? "healthy" : `exit ${healthyAfter.code}`} once b-3 is re-created`,
    }, summary);
  });
});
