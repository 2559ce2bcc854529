import { DEFAULT_CLUSTER_NETWORKS, EMPTY_POLICY_MODEL, resolveInboundServer, type PolicyModel, type ResolveOptions } from "@meshtls/destination";
import { describe, expect, it } from "vitest";
import { toAuthorizationPolicy, toServer, toServerAuthorization } from "./policy-crds.ts";
import type { KubeObject } from "./types.ts";

const options: ResolveOptions = { trustDomain: "cluster.local", controlNamespace: "meshtls", clusterNetworks: DEFAULT_CLUSTER_NETWORKS, defaultPolicy: "all-unauthenticated", detectTimeoutMs: 10_000 };

const crd = (kind: string, name: string, spec: Record<string, unknown>, labels?: Record<string, string>, namespace = "shop"): KubeObject =>
  ({ apiVersion: "policy.linkerd.io/v1beta1", kind, metadata: { name, namespace, ...(labels === undefined ? {} : { labels }) }, spec }) as KubeObject;

const ok = <T>(result: { ok: true; value: T } | { ok: false; reason: string }): T => {
  if (!result.ok) throw new Error(result.reason);
  return result.value;
};

/** Two Servers on the pod web-0 (8080 labelled tier=front, 9090 unlabelled), a third Server in another namespace. */
const servers = [
  ok(toServer(crd("Server", "web-http", { podSelector: { matchLabels: { app: "web" } }, port: 8080, proxyProtocol: "HTTP/1" }, { tier: "front" }))),
  ok(toServer(crd("Server", "web-admin", { podSelector: { matchLabels: { app: "web" } }, port: 9090 }))),
  ok(toServer(crd("Server", "web-http", { podSelector: { matchLabels: { app: "web" } }, port: 8080 }, { tier: "front" }, "other"))),
];

const modelWith = (sazs: KubeObject[], more: Partial<PolicyModel> = {}): PolicyModel => ({
  ...EMPTY_POLICY_MODEL,
  workloads: [{ name: "web-0", namespace: "shop", labels: { app: "web" }, ports: [], opaquePorts: [] }],
  servers,
  serverAuthorizations: sazs.map((o) => ok(toServerAuthorization(o))),
  ...more,
});

type Authz = NonNullable<ReturnType<typeof resolveInboundServer>>["authorizations"][number];
type Network = Authz["networks"][number];
const authzOn = (model: PolicyModel, port: number): Authz[] => resolveInboundServer(model, { namespace: "shop", name: "web-0" }, port, options)!.authorizations;
/** "a.b.c.d/len" for IPv4 networks, "v6/len" for IPv6 ones (@meshtls/api is not a dependency of this package). */
const netText = (n: Network): string => {
  const text = (x: NonNullable<Network["net"]>): string => {
    const ip = x.ip?.ip;
    const address = ip?.$case === "ipv4" ? [24, 16, 8, 0].map((shift) => (ip.value >>> shift) & 255).join(".") : "v6";
    return `${address}/${x.prefixLen}`;
  };
  return [text(n.net!), ...n.except.map((e) => `!${text(e)}`)].join(" ");
};

describe("ServerAuthorization (policy.linkerd.io/v1beta1) into the policy core, as Linkerd's policy controller indexes it", () => {
  it("server.name; meshTLS identities (exact and *.suffix) and serviceAccounts (namespace defaulting to its own); networks with except", () => {
    const saz = crd("ServerAuthorization", "web-clients", {
      server: { name: "web-http" },
      client: {
        networks: [{ cidr: "10.0.0.0/8", except: ["10.9.0.0/16"] }, { cidr: "192.168.1.7" }],
        meshTLS: { identities: ["api.backend.serviceaccount.identity.meshtls.cluster.local", "*.ops.serviceaccount.identity.meshtls.cluster.local"], serviceAccounts: [{ name: "web" }, { name: "batch", namespace: "jobs" }] },
      },
    });
    const [authz, ...rest] = authzOn(modelWith([saz]), 8080);
    expect(rest).toEqual([]);
    expect(authz!.labels).toEqual({ group: "policy.linkerd.io", kind: "serverauthorization", name: "web-clients" });
    expect(authz!.metadata).toEqual({ kind: { $case: "resource", value: { group: "policy.linkerd.io", kind: "serverauthorization", name: "web-clients", namespace: "", section: "", port: 0 } } });
    expect(authz!.networks.map(netText)).toEqual(["10.0.0.0/8 !10.9.0.0/16", "192.168.1.7/32"]);
    expect(authz!.authentication).toEqual({
      permit: {
        $case: "meshTLS",
        value: {
          clients: {
            $case: "identities",
            value: {
              identities: [
                { name: "api.backend.serviceaccount.identity.meshtls.cluster.local" },
                { name: "web.shop.serviceaccount.identity.meshtls.cluster.local" },
                { name: "batch.jobs.serviceaccount.identity.meshtls.cluster.local" },
              ],
              suffixes: [{ parts: ["ops", "serviceaccount", "identity", "meshtls", "cluster", "local"] }],
            },
          },
        },
      },
    });
    // The other Server of the pod is not named: no authorization (its accessPolicy is deny).
    expect(authzOn(modelWith([saz]), 9090)).toEqual([]);
  });

  it("server.selector matches the Servers' own labels in its namespace; no selector selects every Server of the namespace; name wins over selector", () => {
    const bySelector = crd("ServerAuthorization", "front", { server: { selector: { matchLabels: { tier: "front" } } }, client: { unauthenticated: true } });
    const everyServer = crd("ServerAuthorization", "all", { server: {}, client: { unauthenticated: true } });
    const nameWins = crd("ServerAuthorization", "named", { server: { name: "web-admin", selector: { matchLabels: { tier: "front" } } }, client: { unauthenticated: true } });
    const names = (port: number, sazs: KubeObject[]) => authzOn(modelWith(sazs), port).map((a) => a.labels.name);
    expect(names(8080, [bySelector])).toEqual(["front"]);
    expect(names(9090, [bySelector])).toEqual([]);
    expect(names(8080, [everyServer])).toEqual(["all"]);
    expect(names(9090, [everyServer])).toEqual(["all"]);
    expect(names(8080, [nameWins])).toEqual([]);
    expect(names(9090, [nameWins])).toEqual(["named"]);
    // The Server web-http of namespace "other" has the label too, but a ServerAuthorization only reaches its own namespace.
    const elsewhere = crd("ServerAuthorization", "front", { server: { selector: { matchLabels: { tier: "front" } } }, client: { unauthenticated: true } }, undefined, "other");
    expect(names(8080, [elsewhere])).toEqual([]);
  });

  it("unauthenticated: any client on the cluster's networks when none are given; unauthenticatedTLS: any TLS client", () => {
    const open = crd("ServerAuthorization", "open", { server: { name: "web-http" }, client: { unauthenticated: true } });
    const tls = crd("ServerAuthorization", "tls", { server: { name: "web-http" }, client: { meshTLS: { unauthenticatedTLS: true } } });
    const [a, b] = authzOn(modelWith([open, tls]), 8080);
    expect(a!.networks.map(netText)).toEqual(DEFAULT_CLUSTER_NETWORKS.map((n) => `${n.address.includes(":") ? "v6" : n.address}/${n.prefixLength}`));
    expect(a!.authentication).toEqual({ permit: { $case: "unauthenticated", value: {} } });
    expect(b!.authentication).toEqual({ permit: { $case: "meshTLS", value: { clients: { $case: "unauthenticated", value: {} } } } });
  });

  it("comes before the AuthorizationPolicies of the same Server", () => {
    const saz = crd("ServerAuthorization", "old", { server: { name: "web-http" }, client: { unauthenticated: true } });
    const policy = ok(toAuthorizationPolicy(crd("AuthorizationPolicy", "new", { targetRef: { kind: "Server", name: "web-http" }, requiredAuthenticationRefs: [] })));
    expect(authzOn(modelWith([saz], { authorizationPolicies: [policy] }), 8080).map((a) => a.labels.kind)).toEqual(["serverauthorization", "authorizationpolicy"]);
  });

  it("refuses, with Linkerd's reasons, what its controller refuses", () => {
    const reason = (client: unknown, server: unknown = { name: "web-http" }) => {
      const result = toServerAuthorization(crd("ServerAuthorization", "x", { server, client }));
      return result.ok ? "accepted" : result.reason;
    };
    expect(reason({})).toBe("no client authentication configured (client.unauthenticated or client.meshTLS)");
    expect(reason({ meshTLS: {} })).toBe("authorization authorizes no clients");
    expect(reason({ meshTLS: { identities: [], serviceAccounts: [] } })).toBe("authorization authorizes no clients");
    expect(reason({ meshTLS: { serviceAccounts: [{ namespace: "x" }] } })).toBe("a meshTLS.serviceAccounts entry has no name");
    expect(reason({ unauthenticated: true, networks: [{ cidr: "10.0.0.0/33" }] })).toMatch(/10\.0\.0\.0\/33/);
    expect(reason({ unauthenticated: true }, { selector: "app=web" })).toBe("server.selector is not an object");
  });
});
