// Shared by the injector's tests: review builders from the API vectors, and the built webhook started as a process.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const appRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const vectors = path.resolve(appRoot, "../../../shared/vectors/k8s-api");
export const anchorsFile = path.resolve(appRoot, "../cli/test/fixtures/inject/ca.crt");
export type Json = Record<string, unknown>;
export const vector = (name: string): Json => JSON.parse(readFileSync(path.join(vectors, `${name}.json`), "utf8")) as Json;

/** The Pod vector made injectable: no host network, no proxy yet, one TCP port, inject enabled (unless `annotations` say otherwise). */
export function podFromVector(annotations: Record<string, string> = { "linkerd.io/inject": "enabled" }): Json {
  const pod = vector("core.v1.Pod");
  const spec = pod.spec as Json;
  spec.hostNetwork = false;
  const containers = spec.containers as Json[];
  containers[0]!.ports = [{ name: "http", containerPort: 8080, protocol: "TCP" }];
  (pod.metadata as Json).annotations = annotations;
  (pod.metadata as Json).namespace = "shop";
  return pod;
}

export function reviewOf(pod: Json, uid: string): Json {
  const review = vector("admission.k8s.io.v1.AdmissionReview");
  delete review.response;
  const request = review.request as Json;
  Object.assign(request, { uid, kind: { group: "", version: "v1", kind: "Pod" }, resource: { group: "", version: "v1", resource: "pods" }, operation: "CREATE", namespace: "shop", object: pod, oldObject: null });
  return review;
}

/** A temporary folder with the webhook's serving certificate (`tls.crt`, `tls.key`, for `localhost`), made by openssl. */
export function servingCertDir(): { dir: string; ca: string; remove: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), "meshtls-injector-"));
  const made = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=meshtls-injector.meshtls.svc", "-addext", "subjectAltName=DNS:localhost,DNS:meshtls-injector.meshtls.svc", "-keyout", path.join(dir, "tls.key"), "-out", path.join(dir, "tls.crt")]);
  if (made.status !== 0) throw new Error(`openssl req failed: ${made.stderr.toString()}`);
  return { dir, ca: readFileSync(path.join(dir, "tls.crt"), "utf8"), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface Injector {
  child: ChildProcess;
  port: number;
  /** What the process wrote on stdout (pino lines) so far. */
  stdout: () => string;
  /** POSTs `body` to the webhook over HTTPS, checking its certificate. */
  post: (body: string | Buffer, pathname?: string) => Promise<{ status: number; body: string }>;
  stop: () => void;
}

/** Starts the built meshtls-injector on 127.0.0.1 with the certificate in `certDir` and `args`; resolves at its "listening" line. */
export async function startInjector(certDir: { dir: string; ca: string }, args: string[]): Promise<Injector> {
  const child = spawn(
    process.execPath,
    [path.join(appRoot, "dist", "main.js"), "--listen", "127.0.0.1:0", "--tls-cert", path.join(certDir.dir, "tls.crt"), "--tls-key", path.join(certDir.dir, "tls.key"), "--trust-anchors", anchorsFile, ...args],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${out}${err}`)), 30_000);
    child.stdout!.setEncoding("utf8").on("data", (c: string) => {
      out += c;
      const m = /"address":"127\.0\.0\.1:(\d+)"/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("exit", (code) => reject(new Error(`exited ${code}: ${out}${err}`)));
  });
  const post = (body: string | Buffer, pathname = "/"): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = https.request({ host: "127.0.0.1", port, path: pathname, method: "POST", ca: certDir.ca, servername: "localhost", headers: { "content-type": "application/json" } }, (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c: string) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on("error", reject);
      req.end(body);
    });
  return { child, port, stdout: () => out, post, stop: () => child.kill("SIGTERM") };
}
