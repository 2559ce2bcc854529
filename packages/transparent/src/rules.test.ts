import { describe, expect, it } from "vitest";
import { buildRules, formatCommands, saveLine, splitMultiport, TransparentError } from "./index.ts";

describe("buildRules and formatCommands (--dry-run)", () => {
  it("prints proxy-init's commands for Linkerd's injector defaults", () => {
    // linkerd2-proxy-init pkg/iptables/iptables.go, as listed in LINKERD-FACTS §4.1.
    const rules = buildRules({ inboundPortsToIgnore: ["4190", "4191", "4567", "4568"], subnetsToIgnore: ["10.0.0.0/8"] });
    expect(formatCommands(rules, "iptables")).toBe(
      [
        "iptables -t nat -N PROXY_INIT_REDIRECT",
        "iptables -t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 4190,4191,4567,4568 -j RETURN -m comment --comment proxy-init/ignore-port-4190,4191,4567,4568",
        "iptables -t nat -A PROXY_INIT_REDIRECT -p all -j RETURN -s 10.0.0.0/8 -m comment --comment proxy-init/ignore-subnet-10.0.0.0/8",
        "iptables -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-all-incoming-to-proxy-port",
        "iptables -t nat -A PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment proxy-init/install-proxy-init-prerouting",
        "iptables -t nat -N PROXY_INIT_OUTPUT",
        "iptables -t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment proxy-init/ignore-proxy-user-id",
        "iptables -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment proxy-init/ignore-loopback",
        "iptables -t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140 -m comment --comment proxy-init/redirect-all-outgoing-to-proxy-port",
        "iptables -t nat -A OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment proxy-init/install-proxy-init-output",
        "",
      ].join("\n"),
    );
  });

  it("adds the GID rule, outbound ignores and listed inbound ports; subnets go to their own family", () => {
    const options = {
      proxyUid: 1234,
      proxyGid: 4321,
      inboundPort: 5143,
      outboundPort: 5140,
      inboundPortsToIgnore: [],
      outboundPortsToIgnore: ["443", "6000:6010"],
      portsToRedirect: [8080, 9090],
      subnetsToIgnore: ["192.0.2.0/24", "fd00:1::/64"],
    };
    expect(formatCommands(buildRules(options, 6), "ip6tables-nft")).toBe(
      [
        "ip6tables-nft -t nat -N PROXY_INIT_REDIRECT",
        "ip6tables-nft -t nat -A PROXY_INIT_REDIRECT -p all -j RETURN -s fd00:1::/64 -m comment --comment proxy-init/ignore-subnet-fd00:1::/64",
        "ip6tables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp --destination-port 8080 -j REDIRECT --to-port 5143 -m comment --comment proxy-init/redirect-port-8080-to-proxy-port",
        "ip6tables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp --destination-port 9090 -j REDIRECT --to-port 5143 -m comment --comment proxy-init/redirect-port-9090-to-proxy-port",
        "ip6tables-nft -t nat -A PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment proxy-init/install-proxy-init-prerouting",
        "ip6tables-nft -t nat -N PROXY_INIT_OUTPUT",
        "ip6tables-nft -t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 1234 -j RETURN -m comment --comment proxy-init/ignore-proxy-user-id",
        "ip6tables-nft -t nat -A PROXY_INIT_OUTPUT -m owner --gid-owner 4321 -j RETURN -m comment --comment proxy-init/ignore-proxy-group-id",
        "ip6tables-nft -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment proxy-init/ignore-loopback",
        "ip6tables-nft -t nat -A PROXY_INIT_OUTPUT -p tcp --match multiport --dports 443,6000:6010 -j RETURN -m comment --comment proxy-init/ignore-port-443,6000:6010",
        "ip6tables-nft -t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 5140 -m comment --comment proxy-init/redirect-all-outgoing-to-proxy-port",
        "ip6tables-nft -t nat -A OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment proxy-init/install-proxy-init-output",
        "",
      ].join("\n"),
    );
    expect(buildRules(options, 4).inbound.map((rule) => rule.name)).toContain("ignore-subnet-192.0.2.0/24");
    expect(buildRules(options, 4).inbound.map((rule) => rule.name)).not.toContain("ignore-subnet-fd00:1::/64");
  });

  it("adds the redirect check's rule first in PROXY_INIT_OUTPUT, before the UID exclusion, in the probe's family only", () => {
    const options = { redirectCheckProbe: { host: "1.1.1.1", port: 20001 } };
    const v4 = formatCommands(buildRules(options, 4), "iptables").split("\n");
    expect(v4.slice(4, 7)).toEqual([
      "iptables -t nat -N PROXY_INIT_OUTPUT",
      "iptables -t nat -A PROXY_INIT_OUTPUT -p tcp -d 1.1.1.1/32 --destination-port 20001 -j REDIRECT --to-port 4140 -m comment --comment meshtls/redirect-check",
      "iptables -t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment proxy-init/ignore-proxy-user-id",
    ]);
    expect(saveLine(buildRules(options, 4).outbound[0]!)).toBe('-A PROXY_INIT_OUTPUT -d 1.1.1.1/32 -p tcp -m tcp --dport 20001 -m comment --comment "meshtls/redirect-check" -j REDIRECT --to-ports 4140');
    expect(buildRules(options, 6)).toEqual(buildRules({}, 6));
    expect(buildRules({ redirectCheckProbe: { host: "fd00::99", port: 20001 } }, 6).outbound[0]).toMatchObject({ destination: "fd00::99/128", dport: 20001, toPort: 4140 });
    expect(() => buildRules({ redirectCheckProbe: { host: "example.com", port: 20001 } })).toThrow(/redirect check address: "example.com" is not an IP address/);
    expect(() => buildRules({ redirectCheckProbe: { host: "1.1.1.1", port: 0 } })).toThrow(/redirect check port/);
  });

  it("adds no UID rule for UID 0, as proxy-init", () => {
    expect(buildRules({ proxyUid: 0 }).outbound.map((rule) => rule.name)).not.toContain("ignore-proxy-user-id");
  });
});

describe("splitMultiport", () => {
  it("splits at 15 port references, a range counting 2 and a one-port range 1", () => {
    const ports = Array.from({ length: 16 }, (_, i) => String(1000 + i));
    expect(splitMultiport(ports)).toEqual([ports.slice(0, 15), ports.slice(15)]);
    expect(splitMultiport([...Array.from({ length: 14 }, (_, i) => String(i + 1)), "20:30"])).toEqual([
      Array.from({ length: 14 }, (_, i) => String(i + 1)),
      ["20:30"],
    ]);
    expect(splitMultiport(["7:7", "8-9"])).toEqual([["7", "8:9"]]);
  });

  it("splits long ignore lists into several rules whose comments name their ports", () => {
    const ports = Array.from({ length: 20 }, (_, i) => String(2000 + i));
    const names = buildRules({ outboundPortsToIgnore: ports }).outbound.map((rule) => rule.name).filter((name) => name.startsWith("ignore-port-"));
    expect(names).toEqual([`ignore-port-${ports.slice(0, 15).join(",")}`, `ignore-port-${ports.slice(15).join(",")}`]);
  });
});

describe("bad options", () => {
  it.each([
    [{ inboundPortsToIgnore: ["0"] }, /not a port/],
    [{ outboundPortsToIgnore: ["80:70"] }, /end is below its start/],
    [{ outboundPortsToIgnore: ["http"] }, /not a port or a range/],
    [{ subnetsToIgnore: ["10.0.0.0/33"] }, /not a CIDR/],
    [{ subnetsToIgnore: ["example.com/8"] }, /not a CIDR/],
    [{ proxyUid: -1 }, /UID/],
    [{ inboundPort: 70000 }, /not a port/],
    [{ portsToRedirect: [1.5] }, /not a port/],
  ])("refuses %j with ERR_TRANSPARENT_OPTIONS", (options, message) => {
    expect(() => buildRules(options)).toThrow(message);
    try {
      buildRules(options);
    } catch (error) {
      expect(error).toBeInstanceOf(TransparentError);
      expect((error as TransparentError).code).toBe("ERR_TRANSPARENT_OPTIONS");
    }
  });
});
