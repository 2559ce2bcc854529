import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseConfig } from "meshtls-proxy/config";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { injectManifests } from "../src/commands/inject.ts";
import { createMemoryOutput } from "../src/output.ts";
import { appRoot, cliBin, runCli } from "./helpers.ts";
import { unknownFields, validateWithModels, vectorOf } from "./k8s-fields.ts";

const fixtures = path.join(appRoot, "test", "fixtures", "inject");
const anchors = path.join(fixtures, "ca.crt");
type Json = Record<string, unknown>;

async function inject(files: string[], extra: { format?: "yaml" | "json"; stdin?: NodeJS.ReadableStream } = {}) {
  const output = createMemoryOutput();
  const reports = await injectManifests({ inputs: files, trustAnchorsFile: anchors, format: extra.format ?? "yaml", ...(extra.stdin === undefined ? {} : { stdin: extra.stdin }) }, output);
  return { reports, stdout: output.stdout.join("\n"), stderr: output.stderr.join("\n") };
}

const objectsOf = (yaml: string): Json[] => parseAllDocuments(yaml).map((d) => d.toJS() as Json);

/** The pod spec of an injected object (Pod, workload template, CronJob's job template). */
function podSpecOf(object: Json): Json {
  const spec = object.spec as Json;
  if (object.kind === "Pod") return spec;
  if (object.kind === "CronJob") return (((spec.jobTemplate as Json).spec as Json).template as Json).spec as Json;
  return (spec.template as Json).spec as Json;
}

/** What the kubelet does to an env list: valueFrom from the pod, `$(VAR)` of earlier variables expanded. */
function kubeletEnv(env: { name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } }[], pod: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env) {
    const raw = e.value ?? pod[e.valueFrom!.fieldRef.fieldPath];
    if (raw === undefined) throw new Error(`no downward value for ${e.valueFrom!.fieldRef.fieldPath}`);
    out[e.name] = raw.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => out[name] ?? all);
  }
  return out;
}

const POD_FIELDS = { "metadata.name": "web-7d9c-x2x", "metadata.namespace": "shop", "spec.nodeName": "node-1", "spec.serviceAccountName": "web" };

describe("meshtls inject", () => {
  it.each(["deployment", "statefulset", "cronjob", "pod"])("%s: the output equals its golden file", async (name) => {
    const { stdout, reports } = await inject([path.join(fixtures, `${name}.yaml`)]);
    const golden = path.join(appRoot, "test", "fixtures", "inject-golden", `${name}.yaml`);
    if (process.env.UPDATE_GOLDEN === "1" || !existsSync(golden)) writeFileSync(golden, `${stdout}\n`);
    expect(`${stdout}\n`).toBe(readFileSync(golden, "utf8"));
    expect(reports.filter((r) => r.result === "injected").length).toBe(1);
  });

  it("every object it writes passes kubernetes-models validation and uses only fields the API has", async () => {
    const { stdout } = await inject(["deployment", "statefulset", "cronjob", "pod", "skipped"].map((n) => path.join(fixtures, `${n}.yaml`)));
    const objects = objectsOf(stdout).flatMap((o) => (o.kind === "List" ? (o.items as Json[]) : [o]));
    let checked = 0;
    for (const object of objects) {
      expect(await validateWithModels(object), `${String(object.kind)} has a model`).toBe(true);
      const vector = vectorOf(String(object.apiVersion), String(object.kind));
      expect(vector, `vector for ${String(object.kind)}`).toBeDefined();
      expect(unknownFields(object, vector), String(object.kind)).toEqual([]);
      checked++;
    }
    expect(checked).toBe(8);
    // The field check does catch a field the API does not have.
    expect(unknownFields({ spec: { template: { spec: { containers: [{ name: "x", restartPolicy: "Always", bogus: 1 }] } } } }, vectorOf("apps/v1", "Deployment"))).toEqual([".spec.template.spec.containers[0].bogus"]);
  });

  it("meshes with the proxy as a native sidecar by default: init container, then the proxy with restartPolicy Always and a startup probe; token, in-memory and trust-roots volumes", async () => {
    const [deployment] = objectsOf((await inject([path.join(fixtures, "deployment.yaml")])).stdout) as [Json];
    const spec = podSpecOf(deployment);
    const inits = spec.initContainers as Json[];
    expect(inits.map((c) => c.name)).toEqual(["linkerd-init", "linkerd-proxy"]);
    expect(inits[1]!.restartPolicy).toBe("Always");
    expect((inits[1]!.startupProbe as Json).httpGet).toEqual({ path: "/ready", port: 4191 });
    expect((spec.containers as Json[]).map((c) => c.name)).toEqual(["web"]);
    const volumes = spec.volumes as Json[];
    expect(volumes.find((v) => v.name === "linkerd-identity-token")).toEqual({
      name: "linkerd-identity-token",
      projected: { sources: [{ serviceAccountToken: { path: "linkerd-identity-token", expirationSeconds: 86400, audience: "identity.l5d.io" } }] },
    });
    expect(volumes.find((v) => v.name === "linkerd-identity-end-entity")).toEqual({ name: "linkerd-identity-end-entity", emptyDir: { medium: "Memory" } });
    const sha = /linkerd\.io\/trust-root-sha256: ([0-9a-f]{64})/.exec((await inject([path.join(fixtures, "deployment.yaml")])).stdout)?.[1];
    const { createHash } = await import("node:crypto");
    expect(sha).toBe(createHash("sha256").update(readFileSync(anchors, "utf8")).digest("hex"));
    // config.linkerd.io/proxy-enable-native-sidecar: "false": a regular container, first.
    const [pod] = objectsOf((await inject([path.join(fixtures, "pod.yaml")])).stdout) as [Json];
    expect(((pod.spec as Json).containers as Json[]).map((c) => c.name)).toEqual(["linkerd-proxy", "shell"]);
    expect(((pod.spec as Json).initContainers as Json[]).map((c) => c.name)).toEqual(["linkerd-init"]);
  });

  it("injecting twice equals injecting once (the second run reports already-meshed and passes everything through)", async () => {
    const files = ["deployment", "statefulset", "cronjob", "pod", "skipped"].map((n) => path.join(fixtures, `${n}.yaml`));
    const once = await inject(files);
    const { Readable } = await import("node:stream");
    const twice = await inject(["-"], { stdin: Readable.from([once.stdout]) });
    expect(twice.stdout).toBe(once.stdout);
    expect(twice.reports.filter((r) => r.result === "injected")).toEqual([]);
    expect(twice.reports.filter((r) => r.result === "already-meshed").map((r) => r.name)).toEqual(["web", "db", "report", "debug"]);
  });

  it("objects it does not mesh pass through untouched and are reported: hostNetwork, disabled, kinds without pods", async () => {
    const { stdout, stderr, reports } = await inject([path.join(fixtures, "skipped.yaml")]);
    expect(objectsOf(stdout)).toEqual(objectsOf(readFileSync(path.join(fixtures, "skipped.yaml"), "utf8")));
    expect(reports.map((r) => `${r.kind}/${r.name}: ${r.result}`)).toEqual(["DaemonSet/node-agent: host-network", "Job/migrate: disabled", "ConfigMap/settings: unsupported-kind"]);
    expect(stderr).toContain('daemonset "node-agent" in kube-system skipped (host-network)');
    expect(stderr).toContain("0 of 2 workloads injected, 1 other object passed through");
  });

  it("the env it writes is exactly what meshtls-proxy's own parser accepts: it parses, and every MESHTLS_PROXY_* variable changes the result", async () => {
    for (const name of ["deployment", "statefulset", "cronjob", "pod"]) {
      const [object] = objectsOf((await inject([path.join(fixtures, `${name}.yaml`)])).stdout) as [Json];
      const spec = podSpecOf(object);
      const proxy = [...(spec.initContainers as Json[]), ...(spec.containers as Json[])].find((c) => c.name === "linkerd-proxy")!;
      expect(proxy.args).toBeUndefined();
      expect(proxy.command).toBeUndefined();
      const env = kubeletEnv(proxy.env as never, POD_FIELDS);
      for (const key of Object.keys(env)) expect(key, "only the proxy's variables and the downward-API helpers").toMatch(/^(MESHTLS_PROXY_[A-Z_]+|_pod_[A-Za-z]+)$/);
      const config = parseConfig([], env);
      expect(config.identity).toBe("web.shop.serviceaccount.identity.meshtls.cluster.local");
      expect(config.tokenFile).toBe("/var/run/secrets/tokens/linkerd-identity-token");
      expect(config.workloadName).toBe('{"ns":"shop","pod":"web-7d9c-x2x"}');
      expect(config.contextToken).toBe('{"ns":"shop","nodeName":"node-1","pod":"web-7d9c-x2x"}');
      expect(config.identityServerName).toBe("identity.meshtls.serviceaccount.identity.meshtls.cluster.local");
      expect(config.policyAddress).toBe("meshtls-destination.meshtls.svc.cluster.local.:8090");
      // A variable the proxy ignored would leave the result unchanged when spoiled.
      for (const key of Object.keys(env).filter((k) => k.startsWith("MESHTLS_PROXY_"))) {
        const spoiled = { ...env, [key]: `${env[key]}x` };
        let changed: boolean;
        try {
          changed = JSON.stringify(parseConfig([], spoiled)) !== JSON.stringify(config);
        } catch {
          changed = true;
        }
        expect(changed, `${key} is read by meshtls-proxy`).toBe(true);
      }
    }
  });

  it("linkerd-init's arguments are ones meshtls init accepts (its --dry-run prints the rules), and its proxy UID is the proxy container's", async () => {
    const [deployment] = objectsOf((await inject([path.join(fixtures, "deployment.yaml")])).stdout) as [Json];
    const inits = podSpecOf(deployment).initContainers as Json[];
    const init = inits.find((c) => c.name === "linkerd-init")!;
    const args = init.args as string[];
    expect(args[0]).toBe("init");
    const result = await runCli([...args, "--dry-run"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain("-j REDIRECT --to-port 4143");
    expect(result.stdout).toContain("-j REDIRECT --to-port 4140");
    expect(result.stdout).toContain("--dports 4190,4191,4567,4568,9100 -j RETURN");
    const proxy = inits.find((c) => c.name === "linkerd-proxy")!;
    // The proxy's redirect check is on only because these rules redirect its probe address (its default, as meshtls init's).
    const env = kubeletEnv(proxy.env as never, POD_FIELDS);
    expect(parseConfig([], env).redirectCheck).toEqual({ intervalMs: 10_000, probe: { host: "1.1.1.1", port: 20001 } });
    expect(result.stdout).toContain("-d 1.1.1.1/32 --destination-port 20001 -j REDIRECT --to-port 4140 -m comment --comment meshtls/redirect-check");
    expect(result.stdout).toContain(`--uid-owner ${String((proxy.securityContext as Json).runAsUser)} -j RETURN`);
  });

  it("the binary: folders and stdin, --output json, the summary on stderr", async () => {
    const child = spawn(process.execPath, [cliBin, "inject", "--trust-anchors", anchors, "--output", "json", "-"], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.stdin.end(readFileSync(path.join(fixtures, "deployment.yaml")));
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code, stderr).toBe(0);
    const list = JSON.parse(stdout) as Json;
    expect(list.kind).toBe("List");
    expect((list.items as Json[]).map((i) => i.kind)).toEqual(["Deployment", "Service"]);
    expect(stderr).toContain('deployment "web" in shop injected');
    expect(stderr).toContain("1 of 1 workloads injected, 1 other object passed through");
    const bad = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [cliBin, "inject", "--trust-anchors", anchors, fixtures], { stdio: ["ignore", "pipe", "pipe"] });
      let err = "";
      c.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
      c.once("exit", (exit) => resolve({ code: exit, stderr: err }));
    });
    expect(bad.code, bad.stderr).toBe(0);
    expect(bad.stderr).toContain("4 of 6 workloads injected");
  });
});
