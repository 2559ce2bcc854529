// meshtls-injector (the admission webhook) as the API server sees it: HTTPS with its serving certificate from openssl.
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import { bins, startNode } from "./processes.ts";
import type { Proc } from "./processes.ts";

export interface Webhook {
  proc: Proc;
  /** `127.0.0.1:port`. */
  address: string;
  /** The serving certificate (self-signed, for `localhost`), as the webhook configuration's caBundle. */
  caPem: string;
}

/** Starts the built webhook on 127.0.0.1:0 with a serving certificate made by openssl in `dir`; `extra` flags added. */
export async function startInjector(dir: string, name: string, extra: string[] = []): Promise<Webhook> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=meshtls-injector.meshtls.svc", "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert], { stdio: "pipe" });
  // The serving certificate doubles as the trust anchors whose hash the webhook puts on each pod.
  const proc = startNode(name, bins.injector, ["--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, "--trust-anchors", cert, "--no-namespace-lookup", ...extra]);
  const listening = await proc.waitForMsg("listening");
  return { proc, address: String(listening["address"]), caPem: readFileSync(cert, "utf8") };
}

/** A Pod CREATE review for a pod annotated for injection, with a fresh uid. */
export function podReview(uid = randomUUID()): Record<string, unknown> {
  return {
    apiVersion: "admission.k8s.io/v1",
    kind: "AdmissionReview",
    request: {
      uid,
      kind: { group: "", version: "v1", kind: "Pod" },
      resource: { group: "", version: "v1", resource: "pods" },
      operation: "CREATE",
      namespace: "shop",
      object: {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "web-0", namespace: "shop", annotations: { "linkerd.io/inject": "enabled" } },
        spec: { containers: [{ name: "app", image: "registry.local/web:1", ports: [{ name: "http", containerPort: 8080, protocol: "TCP" }] }] },
      },
    },
  };
}

/** POSTs `body` to the webhook over HTTPS (its certificate checked), with a deadline; undefined when nothing answered. */
export function postReview(webhook: Webhook, body: string | Buffer, options: { path?: string; method?: string; timeoutMs?: number } = {}): Promise<{ status: number; body: string } | undefined> {
  const [host, port] = [webhook.address.slice(0, webhook.address.lastIndexOf(":")), Number(webhook.address.slice(webhook.address.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    const req = https.request(
      { host, port, path: options.path ?? "/", method: options.method ?? "POST", ca: webhook.caPem, servername: "localhost", headers: { "content-type": "application/json" }, agent: false, timeout: options.timeoutMs ?? 10_000 },
      (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c: string) => (text += c.length + text.length > 1_000_000 ? "" : c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on("error", () => resolve(undefined));
      },
    );
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(undefined));
    req.end(body);
  });
}

/** The webhook meshes a well-formed review: 200, the uid echoed, allowed, a JSONPatch. */
export async function reviewWorks(webhook: Webhook): Promise<boolean> {
  const uid = randomUUID();
  const answer = await postReview(webhook, JSON.stringify(podReview(uid)));
  if (answer?.status !== 200) return false;
  const response = (JSON.parse(answer.body) as { response?: { uid?: string; allowed?: boolean; patchType?: string; patch?: string } }).response;
  return response?.uid === uid && response.allowed === true && response.patchType === "JSONPatch" && (response.patch ?? "").length > 0;
}
