import { describe, expect, it } from "vitest";
import type { AuthorizeInput, ServerPolicy } from "./policy.js";
import { authorize, checkServerPolicy, defaultServerPolicy, identityAllowed, inNetworks, meshTlsAuthentication, parseNetworks } from "./policy.js";
import { createPolicyStore } from "./policy-store.js";
import type { StaticPolicyOptions } from "./static-policy.js";
import { createStaticPolicySource, flagPolicies } from "./static-policy.js";

const A = "a.default.serviceaccount.identity.meshtls.cluster.local";
const B = "b.other.serviceaccount.identity.meshtls.cluster.local";

/** The flags' decision for a connection to `port`; a client with an identity came over mesh TLS. */
function decide(options: StaticPolicyOptions, port: number, input: Omit<AuthorizeInput, "meshTls">) {
  return authorize(flagPolicies(options)(port), { meshTls: input.clientId !== undefined, ...input });
}

describe("inbound policy from flags (the default policies, Linkerd's names)", () => {
  it("all-unauthenticated allows everyone, labelled with the default server and authorization", () => {
    expect(decide({}, 80, { clientAddress: "203.0.113.9" })).toEqual({
      allow: true,
      reason: "unauthenticated",
      server: { group: "", kind: "default", name: "all-unauthenticated" },
      authz: { group: "", kind: "default", name: "all-unauthenticated" },
    });
    expect(decide({}, 80, { clientAddress: "10.0.0.1", clientId: A })).toMatchObject({ allow: true, reason: "authenticated" });
  });

  it("all-authenticated requires a client identity", () => {
    expect(decide({ defaultPolicy: "all-authenticated" }, 80, { clientAddress: "10.0.0.1" })).toEqual({ allow: false, reason: "unauthenticated", server: { group: "", kind: "default", name: "all-authenticated" } });
    expect(decide({ defaultPolicy: "all-authenticated" }, 80, { clientAddress: "10.0.0.1", clientId: A }).allow).toBe(true);
  });

  it("cluster-authenticated requires an identity from a cluster network; cluster-unauthenticated only the network", () => {
    const o: StaticPolicyOptions = { defaultPolicy: "cluster-authenticated", clusterNetworks: ["10.42.0.0/16", "fd00::/8"] };
    expect(decide(o, 80, { clientAddress: "10.42.3.4", clientId: A }).allow).toBe(true);
    expect(decide(o, 80, { clientAddress: "::ffff:10.42.3.4", clientId: A }).allow).toBe(true);
    expect(decide(o, 80, { clientAddress: "fd00::1", clientId: A }).allow).toBe(true);
    expect(decide(o, 80, { clientAddress: "10.43.0.1", clientId: A })).toMatchObject({ allow: false, reason: "not_in_cluster_networks" });
    expect(decide(o, 80, { clientAddress: "10.42.3.4" })).toMatchObject({ allow: false, reason: "unauthenticated" });
    const u: StaticPolicyOptions = { defaultPolicy: "cluster-unauthenticated", clusterNetworks: ["10.42.0.0/16"] };
    expect(decide(u, 80, { clientAddress: "10.42.3.4" })).toMatchObject({ allow: true, reason: "unauthenticated" });
    expect(decide(u, 80, { clientAddress: "10.43.3.4" })).toMatchObject({ allow: false, reason: "not_in_cluster_networks" });
  });

  it("deny denies, audit allows and says what it would deny", () => {
    expect(decide({ defaultPolicy: "deny" }, 1, { clientAddress: "10.0.0.1", clientId: A })).toMatchObject({ allow: false, reason: "deny" });
    expect(decide({ defaultPolicy: "audit" }, 1, { clientAddress: "10.0.0.1" })).toMatchObject({ allow: true, reason: "audit", wouldDeny: "unauthenticated" });
    const withId = decide({ defaultPolicy: "audit" }, 1, { clientAddress: "10.0.0.1", clientId: A });
    expect(withId).toMatchObject({ allow: true, reason: "audit" });
    expect(withId).not.toHaveProperty("wouldDeny");
  });

  it("per-port overrides: require identity, allowed identities exact and suffix, own policy, opaque", () => {
    const o: StaticPolicyOptions = {
      ports: {
        8080: { requireIdentity: true },
        9090: { allowedIdentities: [`*.default.serviceaccount.identity.meshtls.cluster.local`] },
        9091: { allowedIdentities: [B] },
        9092: { policy: "deny" },
        9093: { allowedIdentities: ["*"] },
        5432: { opaque: true },
      },
    };
    expect(decide(o, 8080, { clientAddress: "10.0.0.1" })).toMatchObject({ allow: false, reason: "unauthenticated" });
    expect(decide(o, 9090, { clientAddress: "10.0.0.1", clientId: A }).allow).toBe(true);
    expect(decide(o, 9090, { clientAddress: "10.0.0.1", clientId: B })).toMatchObject({ allow: false, reason: "identity_not_allowed" });
    expect(decide(o, 9091, { clientAddress: "10.0.0.1", clientId: B }).allow).toBe(true);
    expect(decide(o, 9091, { clientAddress: "10.0.0.1", clientId: A })).toMatchObject({ allow: false, reason: "identity_not_allowed" });
    expect(decide(o, 9092, { clientAddress: "10.0.0.1", clientId: A })).toMatchObject({ allow: false, reason: "deny" });
    expect(decide(o, 9093, { clientAddress: "10.0.0.1", clientId: B }).allow).toBe(true);
    expect(decide(o, 9093, { clientAddress: "10.0.0.1" })).toMatchObject({ allow: false, reason: "unauthenticated" });
    expect(decide(o, 80, { clientAddress: "10.0.0.1" }).allow).toBe(true);
    const ports = flagPolicies(o);
    expect(ports(5432).protocol).toEqual({ kind: "opaque" });
    expect(ports(1).protocol).toEqual({ kind: "detect" });
  });

  it("refuses bad configuration with a coded error", () => {
    expect(() => flagPolicies({ defaultPolicy: "allow" as never })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => flagPolicies({ clusterNetworks: ["10.0.0.0/33"] })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => flagPolicies({ clusterNetworks: ["nonsense"] })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => flagPolicies({ ports: { 70000: {} } })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => flagPolicies({ ports: { 80: { allowedIdentities: ["a.*.b"] } } })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => checkServerPolicy({ ...defaultServerPolicy("deny"), authorizations: [{ networks: [{ net: "10.0.0.0/99", except: [] }], authentication: { kind: "unauthenticated" }, meta: { group: "", kind: "default", name: "x" } }] })).toThrow(
      expect.objectContaining({ code: "ERR_CONFIG_INVALID" }),
    );
  });
});

describe("inbound policy model (Linkerd's Server and Authz)", () => {
  const meta = (name: string) => ({ group: "policy.linkerd.io", kind: "authorizationpolicy", name });
  const server = (authorizations: ServerPolicy["authorizations"]): ServerPolicy => ({ protocol: { kind: "detect" }, meta: { group: "policy.linkerd.io", kind: "server", name: "web-http" }, authorizations });

  it("networks with except: the client's address inside a network and outside its exceptions", () => {
    const p = server([{ networks: [{ net: "10.0.0.0/8", except: ["10.1.0.0/16", "10.2.3.4"] }], authentication: { kind: "unauthenticated" }, meta: meta("from-ten") }]);
    expect(authorize(p, { clientAddress: "10.9.0.1", meshTls: false })).toMatchObject({ allow: true, authz: meta("from-ten") });
    expect(authorize(p, { clientAddress: "10.1.0.1", meshTls: false })).toMatchObject({ allow: false, reason: "not_in_cluster_networks" });
    expect(authorize(p, { clientAddress: "10.2.3.4", meshTls: false })).toMatchObject({ allow: false });
    expect(authorize(p, { clientAddress: "10.2.3.5", meshTls: false }).allow).toBe(true);
  });

  it("meshTLS identities and suffixes; a suffix needs a whole label; the first authorization that admits wins", () => {
    const p = server([
      { networks: [{ net: "0.0.0.0/0", except: [] }], authentication: meshTlsAuthentication([A]), meta: meta("only-a") },
      { networks: [{ net: "0.0.0.0/0", except: [] }], authentication: { kind: "mesh-tls", identities: [], suffixes: ["other.serviceaccount.identity.meshtls.cluster.local"] }, meta: meta("other-ns") },
    ]);
    expect(authorize(p, { clientAddress: "127.0.0.1", meshTls: true, clientId: A })).toMatchObject({ allow: true, authz: meta("only-a") });
    expect(authorize(p, { clientAddress: "127.0.0.1", meshTls: true, clientId: B })).toMatchObject({ allow: true, authz: meta("other-ns") });
    expect(authorize(p, { clientAddress: "127.0.0.1", meshTls: true, clientId: "xother.serviceaccount.identity.meshtls.cluster.local" })).toMatchObject({ allow: false, reason: "identity_not_allowed" });
    expect(authorize(p, { clientAddress: "127.0.0.1", meshTls: false })).toMatchObject({ allow: false, reason: "unauthenticated", server: { kind: "server", name: "web-http" } });
  });

  it("tls-unauthenticated admits mesh TLS without a client certificate, not plaintext; no authorizations admit nobody", () => {
    const p = server([{ networks: [{ net: "::/0", except: [] }, { net: "0.0.0.0/0", except: [] }], authentication: { kind: "tls-unauthenticated" }, meta: meta("tls") }]);
    expect(authorize(p, { clientAddress: "127.0.0.1", meshTls: true }).allow).toBe(true);
    expect(authorize(p, { clientAddress: "127.0.0.1", meshTls: false })).toMatchObject({ allow: false, reason: "unauthenticated" });
    expect(authorize(server([]), { clientAddress: "127.0.0.1", meshTls: true, clientId: A })).toMatchObject({ allow: false, reason: "deny" });
  });

  it("suffix matching of the flags' allow lists needs a whole label in front", () => {
    expect(identityAllowed("x.default.svc", ["*.default.svc"])).toBe(true);
    expect(identityAllowed(".default.svc", ["*.default.svc"])).toBe(false);
    expect(identityAllowed("xdefault.svc", ["*.default.svc"])).toBe(false);
    expect(identityAllowed("evil.default.svc.attacker", ["*.default.svc"])).toBe(false);
    expect(identityAllowed("anything", ["*"])).toBe(true);
  });

  it("matches networks for v4, v6 and mapped addresses", () => {
    const n = parseNetworks(["127.0.0.0/8", "::1/128"]);
    expect(inNetworks(n, "127.0.1.2")).toBe(true);
    expect(inNetworks(n, "::1")).toBe(true);
    expect(inNetworks(n, "::ffff:127.0.0.1")).toBe(true);
    expect(inNetworks(n, "128.0.0.1")).toBe(false);
    expect(inNetworks(n, "garbage")).toBe(false);
  });
});

describe("policy sources", () => {
  it("a static source from flags never changes; a store tells subscribers of each new policy", () => {
    const fixed = createStaticPolicySource({ defaultPolicy: "deny" });
    expect(fixed.current(80).meta.name).toBe("deny");
    const store = createPolicyStore({ defaults: () => defaultServerPolicy("all-unauthenticated") });
    const heard: [number, string][] = [];
    store.subscribe((port, policy) => heard.push([port, policy.meta.name]));
    expect(store.current(80).meta.name).toBe("all-unauthenticated");
    store.set(80, defaultServerPolicy("deny"));
    expect(store.current(80).meta.name).toBe("deny");
    store.reset(80);
    expect(store.current(80).meta.name).toBe("all-unauthenticated");
    expect(heard).toEqual([[80, "deny"], [80, "all-unauthenticated"]]);
  });
});
