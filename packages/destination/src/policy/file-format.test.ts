import { describe, expect, it } from "vitest";
import { parseRegistry } from "../registry-file-format.js";
import { resolveInboundServer } from "./resolve.js";
import { DEFAULT_CLUSTER_NETWORKS } from "./cidr.js";

const file = `services: []
workloads:
  - name: web-0
    namespace: shop
    labels: { app: web }
    ports: [{ name: http, port: 8080 }]
    defaultPolicy: all-authenticated
    opaquePorts: [5432]
servers:
  - name: web-http
    namespace: shop
    podSelector: { matchLabels: { app: web } }
    port: http
    proxyProtocol: HTTP/1
authorizationPolicies:
  - name: from-api
    namespace: shop
    targetRef: { kind: Server, name: web-http }
    requiredAuthenticationRefs:
      - { kind: MeshTLSAuthentication, name: api }
      - { kind: NetworkAuthentication, name: lan }
meshTLSAuthentications:
  - name: api
    namespace: shop
    identities: ["*.backend.serviceaccount.identity.meshtls.cluster.local"]
    identityRefs: []
networkAuthentications:
  - name: lan
    namespace: shop
    networks: [{ cidr: 127.0.0.0/8, except: [127.0.0.9] }]
`;

describe("the registry file's policy model", () => {
  it("parses workloads, servers, policies and authentications into what the controller serves", () => {
    const { policy } = parseRegistry({ file: "r.yaml", text: file });
    const options = { trustDomain: "cluster.local", controlNamespace: "meshtls", clusterNetworks: DEFAULT_CLUSTER_NETWORKS, defaultPolicy: "deny" as const, detectTimeoutMs: 10_000 };
    const selected = resolveInboundServer(policy!, { namespace: "shop", name: "web-0" }, 8080, options);
    expect(selected?.labels.name).toBe("web-http");
    expect(selected?.authorizations).toHaveLength(1);
    expect(resolveInboundServer(policy!, { namespace: "shop", name: "web-0" }, 9000, options)?.labels.name).toBe("all-authenticated");
    expect(resolveInboundServer(policy!, { namespace: "shop", name: "web-0" }, 5432, options)?.protocol?.kind?.$case).toBe("opaque");
  });

  it("a file without policy sections has no model (the controller serves an empty one)", () => {
    expect(parseRegistry({ file: "r.yaml", text: "services: []\n" }).policy).toBeUndefined();
  });

  it.each([
    ["proxyProtocol: HTTP/1", "proxyProtocol: HTTP/3", 14, /proxyProtocol "HTTP\/3" is not one of/],
    ["port: http", "port: 0", 13, /port must be an integer in 1\.\.65535/],
    ["defaultPolicy: all-authenticated", "defaultPolicy: allow", 7, /defaultPolicy "allow" is not one of/],
    ["except: [127.0.0.9]", "except: [10.0.0.1]", 30, /except\[0\] is not inside 127\.0\.0\.0\/8/],
    ["cidr: 127.0.0.0/8", "cidr: 127.0.0.0/33", 30, /prefix length must be 0\.\.32/],
    ["name: web-http }", "name: nope }", 18, /targetRef: no Server shop\/nope/],
    ["{ kind: NetworkAuthentication, name: lan }", "{ kind: NetworkAuthentication, name: wan }", 21, /no NetworkAuthentication shop\/wan/],
    ['identities: ["*.backend', 'identities: ["bad name', 25, /is not an identity name/],
    ["identityRefs: []", "identityRefs: [{ kind: ServiceAccount, name: x }]", 23, /exactly one of identities and identityRefs/],
    ["labels: { app: web }", "labels: { app: [web] }", 5, /labels\.app must be a string/],
  ])("refuses %s → %s at line %i", (from, to, line, reason) => {
    expect(file.includes(from)).toBe(true);
    let error: unknown;
    try {
      parseRegistry({ file: "r.yaml", text: file.replace(from, to) });
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: "ERR_REGISTRY_INVALID", file: "r.yaml", line });
    expect((error as Error).message).toMatch(reason);
  });
});
