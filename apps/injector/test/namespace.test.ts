import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { injectObject } from "@meshtls/kubernetes";
import { fakeApiKubeconfig, startFakeApiServer, type FakeApiServer } from "@meshtls/kubernetes/testing";
import fastJsonPatch, { type Operation } from "fast-json-patch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { anchorsFile, podFromVector, reviewOf, servingCertDir, startInjector, type Injector, type Json } from "./harness.ts";

// The webhook inherits namespaces' annotations (GET /api/v1/namespaces/<ns>, as Linkerd's injector does) and
// follows the documented error policy when that lookup fails: the pod is allowed unmeshed with a warning,
// or refused with --deny-on-error. The API server is the loopback fake from @meshtls/kubernetes/testing.

const TOKEN = "injector-sa-token";

const SHOP_ANNOTATIONS = {
  "linkerd.io/inject": "enabled",
  "config.linkerd.io/opaque-ports": "5432",
  "config.linkerd.io/default-inbound-policy": "all-authenticated",
};

function namespace(name: string, annotations: Record<string, string>): { apiVersion: string; kind: string; metadata: { name: string; annotations: Record<string, string> } } {
  return { apiVersion: "v1", kind: "Namespace", metadata: { name, annotations } };
}

/** A review of the injectable pod vector in `ns`. */
function reviewIn(ns: string, annotations: Record<string, string>, uid: string): { pod: Json; review: Json } {
  const pod = podFromVector(annotations);
  (pod.metadata as Json).namespace = ns;
  const review = reviewOf(pod, uid);
  (review.request as Json).namespace = ns;
  return { pod, review };
}

interface Answer {
  response: { uid: string; allowed: boolean; patchType?: string; patch?: string; warnings?: string[]; status?: { code: number; message: string } };
}

function proxyEnv(patched: Json): Record<string, string> {
  const spec = patched.spec as { initContainers?: Json[]; containers: Json[] };
  const proxy = [...(spec.initContainers ?? []), ...spec.containers].find((c) => c.name === "linkerd-proxy");
  expect(proxy, "a linkerd-proxy container").toBeDefined();
  return Object.fromEntries((proxy!.env as { name: string; value?: string }[]).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
}

let cert: ReturnType<typeof servingCertDir>;
let api: FakeApiServer;
let allowing: Injector;
let denying: Injector;
let unreachable: Injector;
let blackHole: net.Server;

async function review(injector: Injector, body: Json): Promise<Answer> {
  const res = await injector.post(JSON.stringify(body));
  expect(res.status, res.body).toBe(200);
  return JSON.parse(res.body) as Answer;
}

function applied(pod: Json, answer: Answer): Json {
  expect(answer.response.patchType).toBe("JSONPatch");
  const patch = JSON.parse(Buffer.from(answer.response.patch!, "base64").toString("utf8")) as Operation[];
  return fastJsonPatch.applyPatch(structuredClone(pod), patch, true, false).newDocument;
}

beforeAll(async () => {
  cert = servingCertDir();
  api = await startFakeApiServer({ bearerToken: TOKEN });
  api.apply(namespace("shop", SHOP_ANNOTATIONS));
  api.apply(namespace("plain", {}));
  const config = path.join(cert.dir, "kubeconfig");
  writeFileSync(config, fakeApiKubeconfig(api.url, TOKEN));
  // A server that accepts connections and never answers: the lookup must give up before the API server's 10 s webhook timeout.
  blackHole = net.createServer(() => undefined);
  await new Promise<void>((resolve) => blackHole.listen(0, "127.0.0.1", resolve));
  const hung = path.join(cert.dir, "kubeconfig-hung");
  writeFileSync(hung, fakeApiKubeconfig(`http://127.0.0.1:${(blackHole.address() as net.AddressInfo).port}`, TOKEN));
  [allowing, denying, unreachable] = await Promise.all([
    startInjector(cert, ["--kubeconfig", config]),
    startInjector(cert, ["--kubeconfig", config, "--deny-on-error"]),
    startInjector(cert, ["--kubeconfig", hung]),
  ]);
}, 60_000);

afterAll(async () => {
  for (const injector of [allowing, denying, unreachable]) injector?.stop();
  blackHole?.close();
  await api?.close();
  cert?.remove();
});

describe("meshtls-injector inherits namespace annotations (fake API server)", () => {
  it("a pod without its own annotation in a namespace annotated linkerd.io/inject: enabled is meshed with the namespace's config.linkerd.io/* overrides", async () => {
    const before = api.requests().length;
    const { pod, review: body } = reviewIn("shop", {}, "ns-1");
    const answer = await review(allowing, body);
    expect(answer.response).toMatchObject({ uid: "ns-1", allowed: true });
    const patched = applied(pod, answer);
    const env = proxyEnv(patched);
    expect(env.MESHTLS_PROXY_OPAQUE_PORTS).toBe("5432");
    expect(env.MESHTLS_PROXY_DEFAULT_POLICY).toBe("all-authenticated");
    // The same pod as meshtls inject makes when given the namespace's annotations.
    expect(patched).toEqual(injectObject(pod, { trustAnchorsPem: readFileSync(anchorsFile, "utf8"), namespaceAnnotations: SHOP_ANNOTATIONS }).object);
    const lookups = api.requests().slice(before);
    expect(lookups.map((r) => `${r.method} ${r.path}`)).toEqual(["GET /api/v1/namespaces/shop"]);
    expect(lookups[0]!.headers.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it("the pod's own annotations win over its namespace's; its own disabled wins over the namespace's enabled", async () => {
    const own = reviewIn("shop", { "config.linkerd.io/default-inbound-policy": "deny" }, "ns-2");
    const env = proxyEnv(applied(own.pod, await review(allowing, own.review)));
    expect(env.MESHTLS_PROXY_DEFAULT_POLICY).toBe("deny");
    expect(env.MESHTLS_PROXY_OPAQUE_PORTS).toBe("5432");
    const disabled = reviewIn("shop", { "linkerd.io/inject": "disabled" }, "ns-3");
    expect((await review(allowing, disabled.review)).response).toEqual({ uid: "ns-3", allowed: true });
  });

  it("a namespace without linkerd.io/inject meshes nothing; a change to the namespace applies to the next pod (no stale cache)", async () => {
    expect((await review(allowing, reviewIn("plain", {}, "ns-4").review)).response).toEqual({ uid: "ns-4", allowed: true });
    api.apply(namespace("plain", { "linkerd.io/inject": "enabled" }));
    const now = reviewIn("plain", {}, "ns-5");
    expect(proxyEnv(applied(now.pod, await review(allowing, now.review))).MESHTLS_PROXY_DEFAULT_POLICY).toBe("all-unauthenticated");
    api.apply(namespace("plain", {}));
  });
});

describe("meshtls-injector when the namespace lookup fails", () => {
  it("an API server error: the pod is allowed unmeshed with a warning, and the next review is meshed again", async () => {
    api.failNext({ pathPrefix: "/api/v1/namespaces/shop", method: "GET", httpStatus: 500, message: "etcd is down" });
    const failed = await review(allowing, reviewIn("shop", {}, "fail-1").review);
    expect(failed.response.allowed).toBe(true);
    expect(failed.response.patch).toBeUndefined();
    expect(failed.response.warnings).toHaveLength(1);
    expect(failed.response.warnings![0]).toMatch(/not meshed.*HTTP 500: etcd is down/);
    // The log line goes out asynchronously: wait for it.
    await expect.poll(() => allowing.stdout(), { timeout: 5_000 }).toMatch(/"uid":"fail-1","outcome":"error"/);
    const again = reviewIn("shop", {}, "fail-2");
    expect(proxyEnv(applied(again.pod, await review(allowing, again.review))).MESHTLS_PROXY_OPAQUE_PORTS).toBe("5432");
  });

  it("a namespace the API server does not have (404) follows the same policy", async () => {
    const missing = await review(allowing, reviewIn("gone", { "linkerd.io/inject": "enabled" }, "fail-3").review);
    expect(missing.response.allowed).toBe(true);
    expect(missing.response.patch).toBeUndefined();
    expect(missing.response.warnings![0]).toMatch(/not meshed.*HTTP 404/);
  });

  it("with --deny-on-error the pod is refused (403, the reason in status.message); without an error it is meshed", async () => {
    api.failNext({ pathPrefix: "/api/v1/namespaces/shop", method: "GET", httpStatus: 503, message: "try later" });
    const refused = await review(denying, reviewIn("shop", {}, "deny-1").review);
    expect(refused.response.uid).toBe("deny-1");
    expect(refused.response.allowed).toBe(false);
    expect(refused.response.patch).toBeUndefined();
    expect(refused.response.status?.code).toBe(403);
    expect(refused.response.status?.message).toMatch(/not meshed.*HTTP 503: try later/);
    const ok = reviewIn("shop", {}, "deny-2");
    expect(proxyEnv(applied(ok.pod, await review(denying, ok.review))).MESHTLS_PROXY_DEFAULT_POLICY).toBe("all-authenticated");
  });

  it("an API server that never answers: the review is answered (allowed with a warning) before the API server's 10 s webhook timeout", async () => {
    const started = Date.now();
    const answer = await review(unreachable, reviewIn("shop", {}, "hung-1").review);
    const elapsedMs = Date.now() - started;
    expect(answer.response.allowed).toBe(true);
    expect(answer.response.patch).toBeUndefined();
    expect(answer.response.warnings![0]).toMatch(/not meshed.*no answer within/);
    expect(elapsedMs).toBeLessThan(9_000);
  }, 30_000);
});
