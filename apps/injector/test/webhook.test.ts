import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { injectObject } from "@meshtls/kubernetes";
import fastJsonPatch, { type Operation } from "fast-json-patch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const appRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const vectors = path.resolve(appRoot, "../../../shared/vectors/k8s-api");
const anchorsFile = path.resolve(appRoot, "../cli/test/fixtures/inject/ca.crt");
type Json = Record<string, unknown>;
const vector = (name: string): Json => JSON.parse(readFileSync(path.join(vectors, `${name}.json`), "utf8")) as Json;

/** The Pod vector made injectable: no host network, no proxy yet, one TCP port, inject enabled. */
function podFromVector(): Json {
  const pod = vector("core.v1.Pod");
  const spec = pod.spec as Json;
  spec.hostNetwork = false;
  const containers = spec.containers as Json[];
  containers[0]!.ports = [{ name: "http", containerPort: 8080, protocol: "TCP" }];
  (pod.metadata as Json).annotations = { "linkerd.io/inject": "enabled" };
  (pod.metadata as Json).namespace = "shop";
  return pod;
}

function reviewOf(pod: Json, uid: string): Json {
  const review = vector("admission.k8s.io.v1.AdmissionReview");
  delete review.response;
  const request = review.request as Json;
  Object.assign(request, { uid, kind: { group: "", version: "v1", kind: "Pod" }, resource: { group: "", version: "v1", resource: "pods" }, operation: "CREATE", namespace: "shop", object: pod, oldObject: null });
  return review;
}

let dir: string;
let child: ChildProcess;
let port: number;
let ca: string;

function post(body: string | Buffer, pathname = "/"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path: pathname, method: "POST", ca, servername: "localhost", headers: { "content-type": "application/json" } }, (res) => {
      let text = "";
      res.setEncoding("utf8").on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "meshtls-injector-"));
  const made = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=meshtls-injector.meshtls.svc", "-addext", "subjectAltName=DNS:localhost,DNS:meshtls-injector.meshtls.svc", "-keyout", path.join(dir, "tls.key"), "-out", path.join(dir, "tls.crt")]);
  expect(made.status, made.stderr.toString()).toBe(0);
  ca = readFileSync(path.join(dir, "tls.crt"), "utf8");
  child = spawn(process.execPath, [path.join(appRoot, "dist", "main.js"), "--listen", "127.0.0.1:0", "--tls-cert", path.join(dir, "tls.crt"), "--tls-key", path.join(dir, "tls.key"), "--trust-anchors", anchorsFile, "--no-namespace-lookup", "--max-body-bytes", "200000"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 30_000);
    child.stdout!.setEncoding("utf8").on("data", (c: string) => {
      out += c;
      const m = /"address":"127\.0\.0\.1:(\d+)"/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
}, 60_000);

afterAll(() => {
  child?.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
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
    expect(child.exitCode).toBeNull();
  });
});
