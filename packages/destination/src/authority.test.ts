import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseAuthority, parseContextToken } from "./authority.js";
import { DestinationError } from "./errors.js";

describe("authority", () => {
  it("resolves the short forms as Kubernetes DNS would", () => {
    const svc = { kind: "service", name: "api", namespace: "default", port: 80 };
    for (const authority of ["api.default:80", "api.default.svc:80", "api.default.svc.cluster.local:80", "api.default.svc.cluster.local.:80"]) {
      expect(parseAuthority({ authority, contextNamespace: "other" })).toEqual(svc);
    }
    expect(parseAuthority({ authority: "api:80", contextNamespace: "default" })).toEqual(svc);
    expect(parseAuthority({ authority: "api:80" })).toEqual(svc);
    expect(parseAuthority({ authority: "api.default.svc.example.internal:80", clusterDomain: "example.internal" })).toEqual(svc);
    expect(parseAuthority({ authority: "10.0.0.1:8080" })).toEqual({ kind: "ip", ip: "10.0.0.1", port: 8080 });
    expect(parseAuthority({ authority: "[FD00::0:1]:443" })).toEqual({ kind: "ip", ip: "fd00::1", port: 443 });
  });

  it("reads an authority without a port as port 80, as Linkerd's destination does (server.go getHostAndPort)", () => {
    const svc = { kind: "service", name: "api", namespace: "default", port: 80 };
    expect(parseAuthority({ authority: "api.default.svc.cluster.local" })).toEqual(svc);
    expect(parseAuthority({ authority: "api" })).toEqual(svc);
    expect(parseAuthority({ authority: "10.0.0.1" })).toEqual({ kind: "ip", ip: "10.0.0.1", port: 80 });
    expect(parseAuthority({ authority: "[fd00::1]" })).toEqual({ kind: "ip", ip: "fd00::1", port: 80 });
  });

  it("reads <hostname>.<svc>.<ns>.svc.<domain> as one endpoint of a service (Linkerd's instance ID), fully qualified only", () => {
    expect(parseAuthority({ authority: "db-0.db.data.svc.cluster.local:5432" })).toEqual({ kind: "service", name: "db", namespace: "data", port: 5432, instance: "db-0" });
    expect(parseAuthority({ authority: "db-0.db.data.svc.example.internal.", clusterDomain: "example.internal" })).toEqual({ kind: "service", name: "db", namespace: "data", port: 80, instance: "db-0" });
  });

  it("refuses malformed authorities with ERR_AUTHORITY_INVALID", () => {
    for (const authority of ["", "api:", ":80", "fd00::1", "[fd00::1", "api:0", "api:65536", "api:+80", "fd00::1:80", "a.b.c:80", "api.default.svc.other.domain:80", "a b:80", "1.2.3:80", "[::1:80", "db-0.db.data.svc:80", "db-0.db.data.svc.other.domain:80"]) {
      expect(() => parseAuthority({ authority }), authority).toThrow(expect.objectContaining({ code: "ERR_AUTHORITY_INVALID" }));
    }
  });

  it("reads Linkerd context tokens and ignores anything else", () => {
    expect(parseContextToken('{"ns":"shop","nodeName":"n1","pod":"web-0"}')).toEqual({ namespace: "shop", nodeName: "n1", pod: "web-0" });
    // The older form Linkerd's destination still reads (server.go).
    expect(parseContextToken("ns:shop")).toEqual({ namespace: "shop" });
    for (const token of ["", "ns:Not A Label", "[]", "null", '{"ns":"Not A Label"}', "{".repeat(10000)]) {
      expect(parseContextToken(token).namespace).toBeUndefined();
    }
  });

  it("parses any input to a target or a coded error", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: fc.constantFrom(..."a.1:[]f-"), maxLength: 40 })), (authority) => {
        try {
          parseAuthority({ authority });
        } catch (error) {
          expect(error).toBeInstanceOf(DestinationError);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
