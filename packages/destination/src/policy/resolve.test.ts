import { describe, expect, it } from "vitest";
import { ipAddressToString, type Authz, type InboundServer, type Network } from "@meshtls/api";
import { DEFAULT_CLUSTER_NETWORKS, cidrContains, parseCidr } from "./cidr.js";
import { DEFAULT_POLICIES, EMPTY_POLICY_MODEL, type PolicyModel, type PolicyServer, type PolicyWorkload } from "./model.js";
import { resolveInboundServer, type ResolveOptions } from "./resolve.js";

const options: ResolveOptions = {
  trustDomain: "example.org",
  controlNamespace: "meshtls",
  clusterNetworks: DEFAULT_CLUSTER_NETWORKS,
  defaultPolicy: "all-unauthenticated",
  detectTimeoutMs: 10_000,
};

const web: PolicyWorkload = {
  name: "web-0",
  namespace: "shop",
  labels: { app: "web", tier: "front" },
  ports: [{ name: "http", port: 8080 }, { name: "admin", port: 9990 }],
  opaquePorts: [5432],
};

const server = (overrides: Partial<PolicyServer> = {}): PolicyServer => ({
  name: "web-http",
  namespace: "shop",
  podSelector: { matchLabels: { app: "web" }, matchExpressions: [] },
  port: 8080,
  proxyProtocol: "HTTP/1",
  accessPolicy: "deny",
  ...overrides,
});

const model = (parts: Partial<PolicyModel>): PolicyModel => ({ ...EMPTY_POLICY_MODEL, workloads: [web], ...parts });

const netText = (n: Network): string => {
  const text = (x: NonNullable<Network["net"]>) => `${ipAddressToString(x.ip!)}/${x.prefixLen}`;
  return [text(n.net!), ...n.except.map((e) => `!${text(e)}`)].join(" ");
};
const nets = (authz: Authz | undefined): string[] => (authz?.networks ?? []).map(netText);
const clients = (authz: Authz | undefined): unknown => {
  const permit = authz?.authentication?.permit;
  if (permit?.$case !== "meshTLS") return permit?.$case;
  const c = permit.value.clients;
  return c?.$case === "identities" ? { identities: c.value.identities.map((i) => i.name), suffixes: c.value.suffixes.map((s) => s.parts) } : c?.$case;
};
const resolve = (m: PolicyModel, port: number, o: Partial<ResolveOptions> = {}): InboundServer =>
  resolveInboundServer(m, { namespace: "shop", name: "web-0" }, port, { ...options, ...o })!;

describe("resolveInboundServer: ports without a Server get the default policy", () => {
  it("an unknown workload has no policy (the caller answers NOT_FOUND)", () => {
    expect(resolveInboundServer(model({}), { namespace: "shop", name: "nope" }, 80, options)).toBeUndefined();
    expect(resolveInboundServer(model({}), { namespace: "other", name: "web-0" }, 80, options)).toBeUndefined();
  });

  it.each(DEFAULT_POLICIES)("%s: labels, metadata, networks and authentication as Linkerd's controller", (policy) => {
    const s = resolve(model({}), 8080, { defaultPolicy: policy });
    expect(s.labels).toEqual({ group: "", kind: "default", name: policy });
    expect(s.protocol?.kind?.$case).toBe("detect");
    if (policy === "deny") {
      expect(s.authorizations).toEqual([]);
      return;
    }
    expect(s.authorizations).toHaveLength(1);
    const [authz] = s.authorizations;
    expect(authz?.metadata).toEqual({ kind: { $case: "default", value: policy } });
    expect(authz?.labels).toEqual({ group: "", kind: "default", name: policy });
    const cluster = policy.startsWith("cluster-");
    expect(nets(authz)).toEqual(cluster ? ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"] : ["0.0.0.0/0", "::/0"]);
    expect(clients(authz)).toEqual(policy.endsWith("-authenticated") ? { identities: [], suffixes: [[]] } : "unauthenticated");
  });

  it("the workload's own defaultPolicy wins over the controller's", () => {
    const s = resolve({ ...model({}), workloads: [{ ...web, defaultPolicy: "deny" }] }, 8080);
    expect(s.labels.name).toBe("deny");
    expect(s.authorizations).toEqual([]);
  });

  it("detect carries a 10 s timeout and the default route; opaque ports are opaque", () => {
    const detect = resolve(model({}), 8080).protocol?.kind;
    expect(detect?.$case === "detect" && detect.value.timeout).toEqual({ seconds: 10n, nanos: 0 });
    expect(detect?.$case === "detect" && detect.value.httpRoutes[0]?.rules[0]?.matches[0]?.path?.kind).toEqual({ $case: "prefix", value: "/" });
    expect(resolve(model({}), 5432).protocol?.kind?.$case).toBe("opaque");
  });
});

describe("resolveInboundServer: ports a Server selects", () => {
  it("a Server with no authorization and accessPolicy deny permits nothing; labels name the Server", () => {
    const s = resolve(model({ servers: [server()] }), 8080);
    expect(s.labels).toEqual({ group: "policy.linkerd.io", kind: "server", name: "web-http" });
    expect(s.protocol?.kind?.$case).toBe("http1");
    expect(s.authorizations).toEqual([]);
    // Another port of the same workload keeps the default policy.
    expect(resolve(model({ servers: [server()] }), 9990).labels.kind).toBe("default");
  });

  it.each([
    ["unknown", "detect"],
    ["HTTP/1", "http1"],
    ["HTTP/2", "http2"],
    ["gRPC", "grpc"],
    ["opaque", "opaque"],
    ["TLS", "tls"],
  ] as const)("proxyProtocol %s is sent as %s", (proxyProtocol, $case) => {
    expect(resolve(model({ servers: [server({ proxyProtocol })] }), 8080).protocol?.kind?.$case).toBe($case);
  });

  it.each(DEFAULT_POLICIES.filter((p) => p !== "deny"))("accessPolicy %s adds that default's authorization", (accessPolicy) => {
    const s = resolve(model({ servers: [server({ accessPolicy })] }), 8080);
    expect(s.authorizations.map((a) => a.metadata)).toEqual([{ kind: { $case: "default", value: accessPolicy } }]);
  });

  it("selects a port by name, and by label expressions", () => {
    const byName = server({ port: "admin", podSelector: { matchLabels: {}, matchExpressions: [{ key: "tier", operator: "In", values: ["front", "edge"] }] } });
    expect(resolve(model({ servers: [byName] }), 9990).labels.name).toBe("web-http");
    expect(resolve(model({ servers: [byName] }), 8080).labels.kind).toBe("default");
    const notIn = server({ podSelector: { matchLabels: {}, matchExpressions: [{ key: "app", operator: "NotIn", values: ["web"] }] } });
    expect(resolve(model({ servers: [notIn] }), 8080).labels.kind).toBe("default");
    const missingName = server({ port: "grpc" });
    expect(resolve(model({ servers: [missingName] }), 8080).labels.kind).toBe("default");
    const otherNamespace = server({ namespace: "other" });
    expect(resolve(model({ servers: [otherNamespace] }), 8080).labels.kind).toBe("default");
  });

  it("meshTLS identities: exact names, *, *.suffix and service accounts (refs and identityRefs)", () => {
    const m = model({
      servers: [server()],
      authorizationPolicies: [
        { name: "from-mesh", namespace: "shop", targetRef: { kind: "Server", name: "web-http" }, requiredAuthenticationRefs: [{ kind: "MeshTLSAuthentication", name: "ids" }] },
        { name: "from-sa", namespace: "shop", targetRef: { kind: "Server", name: "web-http" }, requiredAuthenticationRefs: [{ kind: "ServiceAccount", name: "api", namespace: "backend" }] },
        { name: "from-ns", namespace: "shop", targetRef: { kind: "Namespace" }, requiredAuthenticationRefs: [{ kind: "MeshTLSAuthentication", name: "refs" }] },
      ],
      meshTLSAuthentications: [
        { name: "ids", namespace: "shop", identities: ["a.b.serviceaccount.identity.meshtls.example.org", "*", "*.ops.example.org"], identityRefs: [] },
        { name: "refs", namespace: "shop", identities: [], identityRefs: [{ kind: "ServiceAccount", name: "cron" }, { kind: "Namespace", name: "ops" }] },
      ],
    });
    const s = resolve(m, 8080);
    expect(s.authorizations.map((a) => a.metadata?.kind)).toEqual(
      ["from-mesh", "from-sa", "from-ns"].map((name) => ({
        $case: "resource",
        value: { group: "policy.linkerd.io", kind: "authorizationpolicy", name, namespace: "", section: "", port: 0 },
      })),
    );
    expect(s.authorizations[0]?.labels).toEqual({ group: "policy.linkerd.io", kind: "authorizationpolicy", name: "from-mesh" });
    expect(clients(s.authorizations[0])).toEqual({
      identities: ["a.b.serviceaccount.identity.meshtls.example.org"],
      suffixes: [[], ["ops", "example", "org"]],
    });
    expect(clients(s.authorizations[1])).toEqual({ identities: ["api.backend.serviceaccount.identity.meshtls.example.org"], suffixes: [] });
    expect(clients(s.authorizations[2])).toEqual({
      identities: ["cron.shop.serviceaccount.identity.meshtls.example.org"],
      suffixes: [["ops", "serviceaccount", "identity", "meshtls", "example", "org"]],
    });
    // No NetworkAuthentication: the cluster networks.
    expect(nets(s.authorizations[0])).toEqual(DEFAULT_CLUSTER_NETWORKS.map((n) => `${n.address}/${n.prefixLength}`));
  });

  it("network CIDRs with except, unauthenticated; a policy with a missing reference is ignored", () => {
    const m = model({
      servers: [server()],
      authorizationPolicies: [
        { name: "lan", namespace: "shop", targetRef: { kind: "Server", name: "web-http" }, requiredAuthenticationRefs: [{ kind: "NetworkAuthentication", name: "lan" }] },
        { name: "broken", namespace: "shop", targetRef: { kind: "Server", name: "web-http" }, requiredAuthenticationRefs: [{ kind: "NetworkAuthentication", name: "missing" }] },
        { name: "other-server", namespace: "shop", targetRef: { kind: "Server", name: "nope" }, requiredAuthenticationRefs: [] },
      ],
      networkAuthentications: [
        { name: "lan", namespace: "shop", networks: [{ cidr: parseCidr("10.0.0.0/8"), except: [parseCidr("10.1.0.0/16"), parseCidr("10.2.3.4")] }, { cidr: parseCidr("fd00::/8"), except: [] }] },
      ],
    });
    const s = resolve(m, 8080);
    expect(s.authorizations).toHaveLength(1);
    expect(nets(s.authorizations[0])).toEqual(["10.0.0.0/8 !10.1.0.0/16 !10.2.3.4/32", "fd00::/8"]);
    expect(clients(s.authorizations[0])).toBe("unauthenticated");
  });
});

describe("CIDRs", () => {
  it("parses networks and bare IPs, refuses bad prefixes, tests containment", () => {
    expect(parseCidr("192.0.2.1")).toEqual({ address: "192.0.2.1", prefixLength: 32 });
    expect(parseCidr("FD00::/8")).toEqual({ address: "fd00::", prefixLength: 8 });
    for (const bad of ["10.0.0.0/33", "::/129", "10.0.0.0/", "nope/8", "10.0.0.0/08x"]) expect(() => parseCidr(bad), bad).toThrow(/ERR|network|prefix/);
    expect(cidrContains(parseCidr("10.0.0.0/8"), parseCidr("10.1.0.0/16"))).toBe(true);
    expect(cidrContains(parseCidr("10.0.0.0/8"), parseCidr("11.0.0.0/16"))).toBe(false);
    expect(cidrContains(parseCidr("10.0.0.0/8"), parseCidr("0.0.0.0/0"))).toBe(false);
    expect(cidrContains(parseCidr("::/0"), parseCidr("10.0.0.0/8"))).toBe(false);
  });
});
