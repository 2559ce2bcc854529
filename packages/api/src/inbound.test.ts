import { describe, expect, it } from "vitest";
import { InboundServer, InboundServerPoliciesService, PortSpec } from "./index.js";

describe("io.linkerd.proxy.inbound", () => {
  it("has Linkerd's method paths", () => {
    expect(InboundServerPoliciesService.getPort.path).toBe("/io.linkerd.proxy.inbound.InboundServerPolicies/GetPort");
    expect(InboundServerPoliciesService.watchPort.path).toBe("/io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort");
    expect(InboundServerPoliciesService.watchPort.responseStream).toBe(true);
  });

  it("encodes PortSpec with workload = 1 (string) and port = 2 (varint)", () => {
    const bytes = PortSpec.encode({ workload: "ab", port: 8080 }).finish();
    // 0x0a = field 1, length-delimited; 0x10 = field 2, varint; 8080 = 0x90 0x3f.
    expect([...bytes]).toEqual([0x0a, 2, 0x61, 0x62, 0x10, 0x90, 0x3f]);
  });

  it("encodes an authorization's identities and suffixes at Linkerd's field numbers", () => {
    const server = InboundServer.fromPartial({
      protocol: { kind: { $case: "opaque", value: {} } },
      authorizations: [
        {
          networks: [{ net: { ip: { ip: { $case: "ipv4", value: 0 } }, prefixLen: 0 }, except: [] }],
          authentication: {
            permit: {
              $case: "meshTLS",
              value: { clients: { $case: "identities", value: { identities: [{ name: "a" }], suffixes: [{ parts: ["x"] }] } } },
            },
          },
          metadata: { kind: { $case: "default", value: "deny" } },
        },
      ],
      labels: { kind: "default" },
    });
    const bytes = InboundServer.encode(server).finish();
    // protocol (1) holds opaque (2), empty.
    expect([...bytes.subarray(0, 4)]).toEqual([0x0a, 2, 0x12, 0]);
    expect(InboundServer.decode(bytes)).toEqual(server);
    // Authz.authentication (2) → Authn.meshTLS (2) → identities (2) → Identity (1) and IdentitySuffix (2).
    const authz = server.authorizations[0];
    expect(authz?.authentication?.permit?.$case).toBe("meshTLS");
  });
});
