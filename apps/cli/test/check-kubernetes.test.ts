import { writeFile } from "node:fs/promises";
import path from "node:path";
import { injectObject, type Pod } from "@meshtls/kubernetes";
import { fakeApiKubeconfig, startFakeApiServer, type FakeApiServer, type KubeObject } from "@meshtls/kubernetes/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CheckReport } from "../src/commands/check.ts";
import { findUnmeshedPods } from "../src/commands/check-kubernetes.ts";
import { makeTempDir, runCli } from "./helpers.ts";

const ANCHORS = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/** A running pod with one app container on 8080; `injected` as the webhook would have written it. */
function pod(namespace: string, name: string, options: { injected?: boolean; annotations?: Record<string, string>; labels?: Record<string, string>; phase?: string; hostNetwork?: boolean } = {}): Pod {
  const plain = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, ...(options.annotations === undefined ? {} : { annotations: options.annotations }), ...(options.labels === undefined ? {} : { labels: options.labels }) },
    spec: { ...(options.hostNetwork === true ? { hostNetwork: true } : {}), containers: [{ name: "app", image: "app:1", ports: [{ containerPort: 8080 }] }] },
  };
  const object = (options.injected === true ? injectObject(plain, { trustAnchorsPem: ANCHORS, namespace }).object : plain) as Pod;
  return { ...object, status: { phase: options.phase ?? "Running", podIP: "10.0.0.1" } };
}

const namespace = (name: string, annotations: Record<string, string> = {}, labels: Record<string, string> = {}): KubeObject => ({ apiVersion: "v1", kind: "Namespace", metadata: { name, annotations, labels } });
const ENABLED = { "linkerd.io/inject": "enabled" };

describe("findUnmeshedPods: the injector's own decision on pods already running", () => {
  it("flags a pod the webhook would mesh that has no proxy, and nothing else", () => {
    const namespaces = [namespace("shop", ENABLED), namespace("plain"), namespace("kube-system", ENABLED), namespace("off", ENABLED, { "config.linkerd.io/admission-webhooks": "disabled" })];
    const pods = [
      pod("shop", "web-0", { injected: true }),
      pod("shop", "web-1"),
      pod("shop", "job-0", { phase: "Succeeded" }),
      pod("shop", "opted-out", { annotations: { "linkerd.io/inject": "disabled" } }),
      pod("shop", "host", { hostNetwork: true }),
      pod("shop", "identity-0", { labels: { "linkerd.io/control-plane-component": "identity" } }),
      pod("plain", "app-0"),
      pod("plain", "annotated-0", { annotations: ENABLED }),
      pod("kube-system", "dns-0"),
      pod("off", "app-0"),
      pod("shop", "broken", { annotations: { "config.linkerd.io/default-inbound-policy": "everyone" } }),
    ];
    const found = findUnmeshedPods(pods, namespaces as never);
    expect(found.unmeshed).toEqual([
      { namespace: "shop", name: "web-1", annotatedOn: "namespace" },
      { namespace: "plain", name: "annotated-0", annotatedOn: "pod" },
    ]);
    expect(found.unmeshable).toEqual([{ namespace: "shop", name: "broken", reason: expect.stringMatching(/default-inbound-policy: "everyone" is not one of/) as string }]);
    expect(found.injected).toBe(1);
  });
});

describe("meshtls check --kubernetes against the fake API server", () => {
  let api: FakeApiServer;
  let kubeconfig: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const temp = await makeTempDir();
    cleanup = temp.cleanup;
    api = await startFakeApiServer({ bearerToken: "cli-token" });
    kubeconfig = path.join(temp.dir, "kubeconfig");
    await writeFile(kubeconfig, fakeApiKubeconfig(api.url, "cli-token"));
    api.apply(namespace("shop", ENABLED));
    api.apply(namespace("plain"));
    api.apply(pod("shop", "web-0", { injected: true }) as KubeObject);
    api.apply(pod("plain", "app-0") as KubeObject);
  });

  afterAll(async () => {
    await api?.close();
    await cleanup?.();
  });

  it("healthy while every pod meant to be injected has its proxy; a pod admitted without one is an error naming it, exit 1", async () => {
    const healthy = await runCli(["check", "--kubernetes", "--kubeconfig", kubeconfig]);
    expect(healthy.stderr).toBe("");
    expect(healthy.stdout).toMatch(/\[ok\] +every pod meant to be injected in the cluster has its proxy \(1\)/);
    expect(healthy.code).toBe(0);

    // Created while the injector was down: the API server applied failurePolicy Ignore and admitted it as it was.
    api.apply(pod("shop", "web-1") as KubeObject);
    const failed = await runCli(["check", "--kubernetes", "--kubeconfig", kubeconfig]);
    expect(failed.stdout).toContain("[error] pod shop/web-1 in an injected namespace has no proxy (admitted while the injector was unreachable?) — restart it (kubectl -n shop delete pod web-1, or roll its workload out again)");
    expect(failed.stdout).toMatch(/Status: FAILED \(1 error, 0 warnings\)/);
    expect(failed.code).toBe(1);

    const json = await runCli(["check", "--kubernetes", "--kubeconfig", kubeconfig, "-n", "plain", "--json"]);
    const report = JSON.parse(json.stdout) as CheckReport;
    expect(report.ok).toBe(true);
    expect(report.findings).toEqual([{ check: "injected-pods", status: "ok", message: "no pod in namespace plain is meant to be injected (linkerd.io/inject: enabled on it or its namespace)" }]);
    api.remove("Pod", "shop", "web-1");
  });

  it("an unreachable API server is an error finding, not a crash; --kubeconfig without --kubernetes is a usage error", async () => {
    const gone = path.join(path.dirname(kubeconfig), "gone.kubeconfig");
    await writeFile(gone, fakeApiKubeconfig("http://127.0.0.1:1", "cli-token"));
    const result = await runCli(["check", "--kubernetes", "--kubeconfig", gone]);
    expect(result.stdout).toMatch(/\[error\] cannot list pods from the Kubernetes API: .*127\.0\.0\.1:1/);
    expect(result.code).toBe(1);
    const usage = await runCli(["check", "--anchors", kubeconfig, "--kubeconfig", kubeconfig]);
    expect(usage.stderr).toMatch(/--kubeconfig and --namespace need --kubernetes/);
    expect(usage.code).toBe(2);
  });
});
