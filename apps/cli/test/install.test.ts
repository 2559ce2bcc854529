import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseConfig as parseDestinationConfig } from "meshtls-destination/config";
import { parseConfig as parseIdentityConfig } from "meshtls-identity/config";
import { parseConfig as parseInjectorConfig } from "meshtls-injector/config";
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
      "CustomResourceDefinition/serverauthorizations.policy.linkerd.io",
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
      { apiGroups: ["policy.linkerd.io"], resources: ["servers", "serverauthorizations", "authorizationpolicies", "meshtlsauthentications", "networkauthentications"], verbs: ["list", "watch"] },
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

/** What the kubelet makes of a container's env: values as given, `valueFrom.fieldRef` from the pod, `$(VAR)` of earlier variables expanded. */
function kubeletEnv(env: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[] | undefined, pod: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env ?? []) {
    const raw = e.value ?? (e.valueFrom?.fieldRef === undefined ? undefined : pod[e.valueFrom.fieldRef.fieldPath]);
    if (raw === undefined) throw new Error(`env ${e.name}: no value this test knows how to resolve`);
    out[e.name] = raw.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => out[name] ?? all);
  }
  return out;
}

describe("meshtls install: each Deployment's arguments and env parse with its app's own parser (no drift between install and the apps)", () => {
  const CUSTOM = { namespace: "mesh-system", trustDomain: "example.org", clusterDomain: "corp.local", registry: "registry.example/mesh", tag: "9.9.9", defaultInboundPolicy: "cluster-authenticated" };
  const parsers = {
    identity: parseIdentityConfig,
    destination: parseDestinationConfig,
    injector: parseInjectorConfig,
  } as const;

  it.each([
    ["defaults, files", {}],
    ["every naming option changed, cert-manager, --ha", { ...CUSTOM, issuerFrom: "cert-manager" as const, ha: true }],
  ])("%s", async (_, args) => {
    const opts = { namespace: "meshtls", trustDomain: "cluster.local", clusterDomain: "cluster.local", registry: "ghcr.io/meshtls", tag: "0.1.0", defaultInboundPolicy: "all-unauthenticated", ...args };
    const manifests = await install("issuerFrom" in args ? { ...args, trustAnchorsFile: path.join(dir, "certs", "ca.crt") } : args);
    const of = (kind: string, name: string): Json | undefined => manifests.find((o) => o.kind === kind && (o.metadata as Json).name === name);
    const deployments = manifests.filter((o) => o.kind === "Deployment");
    expect(deployments.map((d) => (d.metadata as Json).name)).toEqual(["meshtls-identity", "meshtls-destination", "meshtls-injector"]);

    for (const deployment of deployments) {
      const podSpec = ((deployment.spec as Json).template as Json).spec as Json;
      const [container, ...others] = podSpec.containers as Json[];
      expect(others).toEqual([]);
      const image = /^(.+)\/([a-z]+):(.+)$/.exec(String(container!.image))!;
      expect([image[1], image[3]]).toEqual([opts.registry, opts.tag]);
      const app = image[2] as keyof typeof parsers;
      expect(Object.keys(parsers)).toContain(app);
      const pod = { "metadata.name": `${app}-5d4f-abcde`, "metadata.namespace": opts.namespace, "spec.nodeName": "node-1", "spec.serviceAccountName": String(podSpec.serviceAccountName) };
      // Only the container's env: the test runner's own MESHTLS_* variables must not fill a gap.
      const env = kubeletEnv(container!.env as never, pod);
      const argv = ["node", `meshtls-${app}`, ...(container!.args as string[])];
      const ports = (container!.ports as { name: string; containerPort: number }[]).map((p) => p.containerPort);
      const probePort = Number(((container!.readinessProbe as Json).httpGet as Json).port);
      expect(((container!.livenessProbe as Json).httpGet as Json).port).toBe(probePort);

      /** The object a file path in the container comes from, and that the object has that key. */
      const mounted = (file: string, asDirectory = false): void => {
        const mount = (container!.volumeMounts as { name: string; mountPath: string }[]).find((m) => (asDirectory ? file === m.mountPath : file.startsWith(`${m.mountPath}/`)));
        expect(mount, `${app}: ${file} is under a volume mount`).toBeDefined();
        const volume = (podSpec.volumes as Json[]).find((v) => v.name === mount!.name)!;
        const keys = asDirectory ? ["tls.crt", "tls.key"] : [file.slice(mount!.mountPath.length + 1)];
        if (volume.configMap !== undefined) {
          const data = of("ConfigMap", String((volume.configMap as Json).name))?.data as Json | undefined;
          for (const key of keys) expect(data?.[key], `${app}: ${file} from ConfigMap ${String((volume.configMap as Json).name)}`).toBeDefined();
          return;
        }
        const secretName = String((volume.secret as Json).secretName);
        const secret = of("Secret", secretName);
        if (secret !== undefined) for (const key of keys) expect((secret.data as Json)[key], `${app}: ${file} from Secret ${secretName}`).toBeDefined();
        // cert-manager writes tls.crt, tls.key and ca.crt into a Certificate's secretName.
        else expect(manifests.some((o) => o.kind === "Certificate" && (o.spec as Json).secretName === secretName) && keys.every((k) => ["tls.crt", "tls.key", "ca.crt"].includes(k)), `${app}: Secret ${secretName}`).toBe(true);
      };

      if (app === "identity") {
        const config = parseIdentityConfig(argv, env);
        expect(config).toMatchObject({ source: "kubernetes", trustDomain: opts.trustDomain, controlNamespace: opts.namespace, serviceAccount: podSpec.serviceAccountName, insecurePlaintext: false });
        expect(ports).toEqual(expect.arrayContaining([config.listen.port, config.admin.port]));
        expect(config.admin.port).toBe(probePort);
        expect([config.listen.host, config.admin.host]).toEqual(["0.0.0.0", "0.0.0.0"]);
        mounted(config.trustAnchorsFile);
        mounted(config.issuerDir, true);
      } else if (app === "destination") {
        const config = parseDestinationConfig(argv, env);
        expect(config).toMatchObject({ source: "kubernetes", trustDomain: opts.trustDomain, controlNamespace: opts.namespace, clusterDomain: opts.clusterDomain, defaultInboundPolicy: opts.defaultInboundPolicy, insecurePlaintext: false });
        expect(ports).toEqual(expect.arrayContaining([config.listen.port, config.policyListen.port, config.admin.port]));
        expect(config.admin.port).toBe(probePort);
        const service = of("Service", "meshtls-destination")!;
        expect(((service.spec as Json).ports as Json[]).map((p) => p.targetPort)).toEqual([config.listen.port, config.policyListen.port]);
        mounted(config.tls!.certFile);
        mounted(config.tls!.keyFile);
      } else {
        const config = parseInjectorConfig(argv, env);
        expect(config).toMatchObject({
          trustDomain: opts.trustDomain,
          controlNamespace: opts.namespace,
          clusterDomain: opts.clusterDomain,
          defaultInboundPolicy: opts.defaultInboundPolicy,
          proxyImage: `${opts.registry}/proxy:${opts.tag}`,
          initImage: `${opts.registry}/cli:${opts.tag}`,
          // Namespace lookups are on, and the injector's ClusterRole grants exactly them.
          namespaceLookup: true,
          denyOnError: false,
          nativeSidecar: true,
        });
        expect(ports).toEqual([config.listen.port]);
        expect(config.listen.port).toBe(probePort);
        const service = of("Service", "meshtls-injector")!;
        expect(((service.spec as Json).ports as Json[])[0]!.targetPort).toBe(config.listen.port);
        const webhook = (of("MutatingWebhookConfiguration", "meshtls-proxy-injector-webhook-config")!.webhooks as Json[])[0]!;
        expect(((webhook.clientConfig as Json).service as Json).namespace).toBe(opts.namespace);
        mounted(config.tlsCert);
        mounted(config.tlsKey);
        mounted(config.trustAnchors);
      }
    }
  });

  it("the parsers refuse what they do not know, so a flag install writes that an app dropped fails here", () => {
    const argv = (...args: string[]): string[] => ["node", "app", ...args];
    expect(() => parseIdentityConfig(argv("--source", "kubernetes", "--trust-anchors", "a", "--issuer-dir", "d", "--no-such-flag", "1"), {})).toThrow(/unknown option/);
    expect(() => parseDestinationConfig(argv("--source", "kubernetes", "--tls-cert", "c", "--tls-key", "k", "--no-such-flag", "1"), {})).toThrow(/unknown option/);
    expect(() => parseInjectorConfig(argv("--tls-cert", "c", "--tls-key", "k", "--trust-anchors", "a", "--no-such-flag", "1"), {})).toThrow(/unknown option/);
    expect(() => parseInjectorConfig(argv("--tls-cert", "c", "--tls-key", "k", "--trust-anchors", "a", "--default-inbound-policy", "everyone"), {})).toThrow(/--default-inbound-policy: "everyone" is not one of/);
  });
});
