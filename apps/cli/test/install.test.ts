import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCerts } from "../src/commands/certs-create.ts";
import { injectManifests } from "../src/commands/inject.ts";
import { installManifests } from "../src/commands/install.ts";
import { createMemoryOutput } from "../src/output.ts";
import { runCli, runOpenssl } from "./helpers.ts";
import { unknownFields, validateWithModels, vectorOf } from "./k8s-fields.ts";

type Json = Record<string, unknown>;
type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };

let dir: string;
let objects: Json[];

const find = (kind: string, name: string): Json => {
  const found = objects.find((o) => o.kind === kind && (o.metadata as Json).name === name);
  if (found === undefined) throw new Error(`no ${kind} ${name}`);
  return found;
};
const decode = (b64: unknown): string => Buffer.from(String(b64), "base64").toString("utf8");

async function install(args: Partial<Parameters<typeof installManifests>[0]> = {}): Promise<Json[]> {
  const output = createMemoryOutput();
  await installManifests({ issuerFrom: "files", certsDir: path.join(dir, "certs"), format: "yaml", ...args }, output);
  return parseAllDocuments(output.stdout.join("\n")).map((d) => d.toJS() as Json);
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "meshtls-install-"));
  await createCerts({ outDir: path.join(dir, "certs") }, createMemoryOutput());
  objects = await install();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("meshtls install", () => {
  it("emits the namespace, the policy CRDs, trust roots, issuer, ServiceAccounts, RBAC, three Deployments and Services, and the webhook, in apply order", () => {
    expect(objects.map((o) => `${String(o.kind)}/${String((o.metadata as Json).name)}`)).toEqual([
      "Namespace/meshtls",
      "CustomResourceDefinition/servers.policy.linkerd.io",
      "CustomResourceDefinition/authorizationpolicies.policy.linkerd.io",
      "CustomResourceDefinition/meshtlsauthentications.policy.linkerd.io",
      "CustomResourceDefinition/networkauthentications.policy.linkerd.io",
      "ConfigMap/meshtls-identity-trust-roots",
      "Secret/meshtls-identity-issuer",
      "Secret/meshtls-destination-tls",
      "Secret/meshtls-injector-tls",
      "ServiceAccount/identity",
      "ServiceAccount/destination",
      "ServiceAccount/injector",
      "ClusterRole/meshtls-meshtls-identity",
      "ClusterRoleBinding/meshtls-meshtls-identity",
      "Role/meshtls-identity-issuer",
      "RoleBinding/meshtls-identity-issuer",
      "ClusterRole/meshtls-meshtls-destination",
      "ClusterRoleBinding/meshtls-meshtls-destination",
      "ClusterRole/meshtls-meshtls-proxy-injector",
      "ClusterRoleBinding/meshtls-meshtls-proxy-injector",
      "Deployment/meshtls-identity",
      "Service/meshtls-identity",
      "Deployment/meshtls-destination",
      "Service/meshtls-destination",
      "Deployment/meshtls-injector",
      "Service/meshtls-injector",
      "MutatingWebhookConfiguration/meshtls-proxy-injector-webhook-config",
    ]);
  });

  it("every object passes kubernetes-models validation; kinds with an API vector use only the API's fields", async () => {
    let fieldChecked = 0;
    for (const object of [...objects, ...(await install({ issuerFrom: "cert-manager", trustAnchorsFile: path.join(dir, "certs", "ca.crt"), ha: true }))]) {
      if (String(object.apiVersion).startsWith("cert-manager.io/")) continue; // not a Kubernetes API kind: checked below
      expect(await validateWithModels(object), `${String(object.kind)} has a model`).toBe(true);
      const vector = vectorOf(String(object.apiVersion), String(object.kind));
      if (vector === undefined) continue;
      expect(unknownFields(object, vector), `${String(object.kind)} ${String((object.metadata as Json).name)}`).toEqual([]);
      fieldChecked++;
    }
    expect(fieldChecked).toBeGreaterThanOrEqual(30);
  });

  it("least privilege: identity alone creates TokenReviews and reads the issuer Secret; destination only lists and watches what it follows; no wildcard", () => {
    const rulesOf = (kind: string, name: string): Rule[] => find(kind, name).rules as Rule[];
    const all = objects.filter((o) => o.kind === "ClusterRole" || o.kind === "Role").flatMap((o) => (o.rules as Rule[]).map((r) => ({ role: String((o.metadata as Json).name), ...r })));
    for (const rule of all) for (const field of [rule.apiGroups, rule.resources, rule.verbs]) expect(field).not.toContain("*");
    expect(all.filter((r) => r.resources.includes("tokenreviews")).map((r) => r.role)).toEqual(["meshtls-meshtls-identity"]);
    expect(all.filter((r) => r.resources.includes("secrets"))).toEqual([{ role: "meshtls-identity-issuer", apiGroups: [""], resources: ["secrets"], resourceNames: ["meshtls-identity-issuer"], verbs: ["get", "watch"] }]);
    expect((find("RoleBinding", "meshtls-identity-issuer").subjects as Json[])).toEqual([{ kind: "ServiceAccount", name: "identity", namespace: "meshtls" }]);
    expect(rulesOf("ClusterRole", "meshtls-meshtls-destination")).toEqual([
      { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
      { apiGroups: [""], resources: ["pods", "services", "namespaces"], verbs: ["list", "watch"] },
      { apiGroups: ["policy.linkerd.io"], resources: ["servers", "authorizationpolicies", "meshtlsauthentications", "networkauthentications"], verbs: ["list", "watch"] },
    ]);
    expect(rulesOf("ClusterRole", "meshtls-meshtls-proxy-injector")).toEqual([{ apiGroups: [""], resources: ["namespaces"], verbs: ["get"] }]);
  });

  it("certificates: the webhook's caBundle verifies the injector's serving certificate for its Service name; the destination's chains to the trust anchor as its mesh identity (openssl verify)", async () => {
    const webhook = (find("MutatingWebhookConfiguration", "meshtls-proxy-injector-webhook-config").webhooks as Json[])[0]!;
    await writeFile(path.join(dir, "bundle.pem"), decode((webhook.clientConfig as Json).caBundle));
    const injectorSecret = find("Secret", "meshtls-injector-tls").data as Json;
    await writeFile(path.join(dir, "injector.crt"), decode(injectorSecret["tls.crt"]));
    const injector = await runOpenssl(["verify", "-CAfile", path.join(dir, "bundle.pem"), "-verify_hostname", "meshtls-injector.meshtls.svc", path.join(dir, "injector.crt")]);
    expect(injector.stdout + injector.stderr).toContain(": OK");
    const destination = decode((find("Secret", "meshtls-destination-tls").data as Json)["tls.crt"]);
    const [leaf, ...chain] = destination.split(/(?=-----BEGIN CERTIFICATE-----)/);
    await writeFile(path.join(dir, "destination.crt"), leaf!);
    await writeFile(path.join(dir, "chain.crt"), chain.join(""));
    const dst = await runOpenssl(["verify", "-CAfile", path.join(dir, "certs", "ca.crt"), "-untrusted", path.join(dir, "chain.crt"), "-verify_hostname", "destination.meshtls.serviceaccount.identity.meshtls.cluster.local", path.join(dir, "destination.crt")]);
    expect(dst.stdout + dst.stderr).toContain(": OK");
    expect(decode((find("Secret", "meshtls-identity-issuer").data as Json)["tls.crt"])).toContain("BEGIN CERTIFICATE");
  });

  it("the webhook is Linkerd's: pods at CREATE, failurePolicy Ignore, sideEffects None, 10 s, never the control plane, kube-system or cert-manager", () => {
    const webhook = (find("MutatingWebhookConfiguration", "meshtls-proxy-injector-webhook-config").webhooks as Json[])[0]!;
    expect(webhook).toMatchObject({
      failurePolicy: "Ignore",
      sideEffects: "None",
      timeoutSeconds: 10,
      admissionReviewVersions: ["v1"],
      rules: [{ operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: "Namespaced" }],
      objectSelector: { matchExpressions: [{ key: "linkerd.io/control-plane-component", operator: "DoesNotExist" }] },
      clientConfig: { service: { name: "meshtls-injector", namespace: "meshtls", path: "/", port: 443 } },
    });
    expect(JSON.stringify(webhook.namespaceSelector)).toContain('"values":["kube-system","cert-manager"]');
    // Every control-plane pod carries the label the objectSelector excludes.
    for (const name of ["meshtls-identity", "meshtls-destination", "meshtls-injector"]) {
      const template = (find("Deployment", name).spec as Json).template as Json;
      expect(((template.metadata as Json).labels as Json)["linkerd.io/control-plane-component"]).toBeDefined();
    }
  });

  it("what inject points proxies at exists in install's output: Services and ports, the trust-roots ConfigMap and key, the control-plane identities", async () => {
    const output = createMemoryOutput();
    await injectManifests({ inputs: [path.join(path.dirname(new URL(import.meta.url).pathname), "fixtures", "inject", "pod.yaml")], trustAnchorsFile: path.join(dir, "certs", "ca.crt"), format: "json" }, output);
    const pod = JSON.parse(output.stdout.join("\n")) as Json;
    const proxy = ((pod.spec as Json).containers as Json[]).find((c) => c.name === "linkerd-proxy")!;
    const env = Object.fromEntries((proxy.env as { name: string; value?: string }[]).map((e) => [e.name, e.value]));
    for (const key of ["MESHTLS_PROXY_IDENTITY_ADDR", "MESHTLS_PROXY_DESTINATION_ADDR", "MESHTLS_PROXY_POLICY_ADDR"]) {
      const m = /^([^.]+)\.([^.]+)\.svc\.cluster\.local\.:(\d+)$/.exec(env[key]!)!;
      const service = find("Service", m[1]!);
      expect((service.metadata as Json).namespace).toBe(m[2]);
      expect(((service.spec as Json).ports as Json[]).map((p) => p.port)).toContain(Number(m[3]));
    }
    const volume = ((pod.spec as Json).volumes as Json[]).find((v) => v.name === "linkerd-trust-roots")!;
    const configMap = find("ConfigMap", String((volume.configMap as Json).name));
    expect(Object.keys(configMap.data as Json)).toEqual(["ca-bundle.crt"]);
    const args = (name: string): string[] => ((((find("Deployment", name).spec as Json).template as Json).spec as Json).containers as Json[])[0]!.args as string[];
    expect(args("meshtls-identity")).toEqual(expect.arrayContaining(["--source", "kubernetes", "--control-namespace", "meshtls"]));
    expect(env.MESHTLS_PROXY_IDENTITY_NAME).toBe("identity.meshtls.serviceaccount.identity.meshtls.cluster.local");
    expect(env.MESHTLS_PROXY_DESTINATION_NAME).toBe("destination.meshtls.serviceaccount.identity.meshtls.cluster.local");
    expect(((find("Deployment", "meshtls-identity").spec as Json).template as Json).spec).toMatchObject({ serviceAccountName: "identity" });
    expect(((find("Deployment", "meshtls-destination").spec as Json).template as Json).spec).toMatchObject({ serviceAccountName: "destination" });
  });

  it("--issuer-from cert-manager: Issuers and Certificates instead of key material, the CA injected by cert-manager; --ha: three replicas on different nodes", async () => {
    const cm = await install({ issuerFrom: "cert-manager", trustAnchorsFile: path.join(dir, "certs", "ca.crt"), ha: true });
    expect(cm.filter((o) => o.kind === "Secret")).toEqual([]);
    expect(cm.filter((o) => o.kind === "Certificate").map((o) => (o.spec as Json).secretName)).toEqual(["meshtls-identity-issuer", "meshtls-destination-tls", "meshtls-injector-tls"]);
    expect((cm.find((o) => o.kind === "Certificate")!.spec as Json).isCA).toBe(true);
    const webhook = cm.find((o) => o.kind === "MutatingWebhookConfiguration")!;
    expect(((webhook.metadata as Json).annotations as Json)["cert-manager.io/inject-ca-from"]).toBe("meshtls/meshtls-injector-tls");
    expect(((webhook.webhooks as Json[])[0]!.clientConfig as Json).caBundle).toBeUndefined();
    for (const d of cm.filter((o) => o.kind === "Deployment")) {
      expect((d.spec as Json).replicas).toBe(3);
      expect(JSON.stringify(((d.spec as Json).template as Json).spec)).toContain('"topologyKey":"kubernetes.io/hostname"');
    }
  });

  it("the binary: --output json is one List; without a certs folder or anchors it is a usage error", async () => {
    const json = await runCli(["install", "--certs-dir", path.join(dir, "certs"), "--output", "json", "--replicas", "2"]);
    expect(json.code, json.stderr).toBe(0);
    const list = JSON.parse(json.stdout) as { kind: string; items: Json[] };
    expect(list.kind).toBe("List");
    expect(list.items.filter((o) => o.kind === "Deployment").map((d) => (d.spec as Json).replicas)).toEqual([2, 2, 2]);
    const missing = await runCli(["install", "--issuer-from", "cert-manager"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("--trust-anchors (or --certs-dir) is required");
  });
});
