import { describe, expect, it } from "vitest";
import { createInboundPolicy, identityAllowed, inNetworks, parseNetworks } from "./policy.js";

const A = "a.default.serviceaccount.identity.meshtls.cluster.local";
const B = "b.other.serviceaccount.identity.meshtls.cluster.local";

describe("inbound policy", () => {
  it("all-unauthenticated allows everyone", () => {
    const p = createInboundPolicy();
    expect(p.authorize({ port: 80, clientAddress: "203.0.113.9" })).toEqual({ allow: true, policy: "all-unauthenticated", reason: "unauthenticated" });
    expect(p.authorize({ port: 80, clientAddress: "10.0.0.1", clientId: A })).toMatchObject({ allow: true, reason: "authenticated" });
  });

  it("all-authenticated requires a client identity", () => {
    const p = createInboundPolicy({ defaultPolicy: "all-authenticated" });
    expect(p.authorize({ port: 80, clientAddress: "10.0.0.1" })).toEqual({ allow: false, policy: "all-authenticated", reason: "unauthenticated" });
    expect(p.authorize({ port: 80, clientAddress: "10.0.0.1", clientId: A }).allow).toBe(true);
  });

  it("cluster-authenticated requires an identity from a cluster network", () => {
    const p = createInboundPolicy({ defaultPolicy: "cluster-authenticated", clusterNetworks: ["10.42.0.0/16", "fd00::/8"] });
    expect(p.authorize({ port: 80, clientAddress: "10.42.3.4", clientId: A }).allow).toBe(true);
    expect(p.authorize({ port: 80, clientAddress: "::ffff:10.42.3.4", clientId: A }).allow).toBe(true);
    expect(p.authorize({ port: 80, clientAddress: "fd00::1", clientId: A }).allow).toBe(true);
    expect(p.authorize({ port: 80, clientAddress: "10.43.0.1", clientId: A })).toMatchObject({ allow: false, reason: "not_in_cluster_networks" });
    expect(p.authorize({ port: 80, clientAddress: "10.42.3.4" })).toMatchObject({ allow: false, reason: "unauthenticated" });
  });

  it("deny denies, audit allows and says what it would deny", () => {
    expect(createInboundPolicy({ defaultPolicy: "deny" }).authorize({ port: 1, clientAddress: "10.0.0.1", clientId: A })).toMatchObject({ allow: false, reason: "deny" });
    const audit = createInboundPolicy({ defaultPolicy: "audit" });
    expect(audit.authorize({ port: 1, clientAddress: "10.0.0.1" })).toEqual({ allow: true, policy: "audit", reason: "audit", wouldDeny: "unauthenticated" });
    expect(audit.authorize({ port: 1, clientAddress: "10.0.0.1", clientId: A })).toEqual({ allow: true, policy: "audit", reason: "audit" });
  });

  it("per-port overrides: require identity, allowed identities exact and suffix, own policy", () => {
    const p = createInboundPolicy({
      ports: {
        8080: { requireIdentity: true },
        9090: { allowedIdentities: [`*.default.serviceaccount.identity.meshtls.cluster.local`] },
        9091: { allowedIdentities: [B] },
        9092: { policy: "deny" },
        5432: { opaque: true },
      },
    });
    expect(p.authorize({ port: 8080, clientAddress: "10.0.0.1" })).toMatchObject({ allow: false, reason: "unauthenticated" });
    expect(p.authorize({ port: 9090, clientAddress: "10.0.0.1", clientId: A }).allow).toBe(true);
    expect(p.authorize({ port: 9090, clientAddress: "10.0.0.1", clientId: B })).toMatchObject({ allow: false, reason: "identity_not_allowed" });
    expect(p.authorize({ port: 9091, clientAddress: "10.0.0.1", clientId: B }).allow).toBe(true);
    expect(p.authorize({ port: 9091, clientAddress: "10.0.0.1", clientId: A })).toMatchObject({ allow: false, reason: "identity_not_allowed" });
    expect(p.authorize({ port: 9092, clientAddress: "10.0.0.1", clientId: A })).toMatchObject({ allow: false, reason: "deny" });
    expect(p.authorize({ port: 80, clientAddress: "10.0.0.1" }).allow).toBe(true);
    expect(p.port(5432)).toEqual({ opaque: true });
    expect(p.port(1)).toEqual({});
  });

  it("suffix matching needs a whole label in front", () => {
    expect(identityAllowed("x.default.svc", ["*.default.svc"])).toBe(true);
    expect(identityAllowed(".default.svc", ["*.default.svc"])).toBe(false);
    expect(identityAllowed("xdefault.svc", ["*.default.svc"])).toBe(false);
    expect(identityAllowed("evil.default.svc.attacker", ["*.default.svc"])).toBe(false);
  });

  it("refuses bad configuration with a coded error", () => {
    expect(() => createInboundPolicy({ defaultPolicy: "allow" as never })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => createInboundPolicy({ clusterNetworks: ["10.0.0.0/33"] })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => createInboundPolicy({ clusterNetworks: ["nonsense"] })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => createInboundPolicy({ ports: { 70000: {} } })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => createInboundPolicy({ ports: { 80: { allowedIdentities: ["a.*.b"] } } })).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
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
