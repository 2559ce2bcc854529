import { readFileSync } from "node:fs";
import { injectObject } from "@meshtls/kubernetes";
import fastJsonPatch, { type Operation } from "fast-json-patch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { anchorsFile, podFromVector, reviewOf, servingCertDir, startInjector, vector, type Injector, type Json } from "./harness.ts";

let cert: ReturnType<typeof servingCertDir>;
let injector: Injector;
const post = (body: string | Buffer): Promise<{ status: number; body: string }> => injector.post(body);

beforeAll(async () => {
  cert = servingCertDir();
  injector = await startInjector(cert, ["--no-namespace-lookup", "--max-body-bytes", "200000"]);
}, 60_000);

afterAll(() => {
  injector?.stop();
  cert?.remove();
});

describe("meshtls-injector over HTTPS", () => {
  it("a Pod CREATE review made from the vectors gets a base64 JSON Patch that, applied with fast-json-patch, equals meshtls inject's output; uid echoed", async () => {
    const pod = podFromVector();
    const res = await post(JSON.stringify(reviewOf(pod, "705ab4f5-6393-11e8-b7cc-42010a800002")));
    expect(res.status).toBe(200);
    const answer = JSON.parse(res.body) as { apiVersion: string; kind: string; response: { uid: string; allowed: boolean; patchType: string; patch: string } };
    expect(answer.apiVersion).toBe("admission.k8s.io/v1");
    expect(answer.kind).toBe("AdmissionReview");
    expect(answer.response.uid).toBe("705ab4f5-6393-11e8-b7cc-42010a800002");
    expect(answer.response.allowed).toBe(true);
    expect(answer.response.patchType).toBe("JSONPatch");
    const patch = JSON.parse(Buffer.from(answer.response.patch, "base64").toString("utf8")) as Operation[];
    const patched = fastJsonPatch.applyPatch(structuredClone(pod), patch, true, false).newDocument;
    const cli = injectObject(pod, { trustAnchorsPem: readFileSync(anchorsFile, "utf8") });
    expect(cli.reports[0]!.result).toBe("injected");
    expect(patched).toEqual(cli.object);
  });

  it("pods without linkerd.io/inject, or disabled, are allowed without a patch; other kinds are ignored", async () => {
    const plain = podFromVector();
    (plain.metadata as Json).annotations = {};
    const res = JSON.parse((await post(JSON.stringify(reviewOf(plain, "u-1")))).body) as { response: Json };
    expect(res.response).toEqual({ uid: "u-1", allowed: true });
    const service = reviewOf(vector("core.v1.Service"), "u-2");
    ((service.request as Json).kind as Json).kind = "Service";
    expect(JSON.parse((await post(JSON.stringify(service))).body)).toMatchObject({ response: { uid: "u-2", allowed: true } });
  });

  it("a bad annotation value does not block the pod: allowed with a warning", async () => {
    const pod = podFromVector();
    (pod.metadata as Json).annotations = { "linkerd.io/inject": "enabled", "config.linkerd.io/default-inbound-policy": "everyone" };
    const res = JSON.parse((await post(JSON.stringify(reviewOf(pod, "u-3")))).body) as { response: { allowed: boolean; patch?: string; warnings: string[] } };
    expect(res.response.allowed).toBe(true);
    expect(res.response.patch).toBeUndefined();
    expect(res.response.warnings[0]).toContain('"everyone" is not one of');
  });

  it("malformed reviews get 400, oversized bodies 413, and the process keeps serving", async () => {
    expect((await post("{not json")).status).toBe(400);
    expect((await post(JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview" }))).status).toBe(400);
    expect((await post(JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: { kind: { kind: "Pod" } } }))).status).toBe(400);
    expect((await post(JSON.stringify({ apiVersion: "admission.k8s.io/v1beta1", kind: "AdmissionReview", request: { uid: "x" } }))).status).toBe(400);
    expect((await post(Buffer.alloc(300_000, 32))).status).toBe(413);
    const res = await post(JSON.stringify(reviewOf(podFromVector(), "after")));
    expect(res.status).toBe(200);
    expect(injector.child.exitCode).toBeNull();
  });
});
