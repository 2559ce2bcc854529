import { describe, expect, it, vi } from "vitest";
import { ConfigError, parseConfig } from "../src/config.ts";

const base = [
  "--identity", "web.default.serviceaccount.identity.meshtls.cluster.local",
  "--token-file", "/t", "--trust-anchors", "/ca.crt",
  "--identity-addr", "127.0.0.1:8080", "--identity-name", "identity.meshtls.serviceaccount.identity.meshtls.cluster.local",
  "--destination-addr", "127.0.0.1:8086", "--destination-insecure-plaintext", "--workload", "127.0.0.1:8080",
];
const argv = (...args: string[]): string[] => ["node", "meshtls-proxy", ...args];

describe("meshtls-proxy configuration", () => {
  it("takes flags with the documented defaults", () => {
    const config = parseConfig(argv(...base), {});
    expect(config.inbound).toEqual({ host: "0.0.0.0", port: 4143 });
    expect(config.outbound).toEqual({ host: "127.0.0.1", port: 4140 });
    expect(config.admin).toEqual({ host: "127.0.0.1", port: 4191 });
    expect(config.policy.defaultPolicy).toBe("all-unauthenticated");
    expect(config.drainTimeoutMs).toBe(10_000);
    expect(config.workloadHost).toBe("127.0.0.1");
  });

  it("takes the transparent redirect check's flags: off by default (Linkerd's proxy-init adds no probe rule), on with an interval, bad values refused", () => {
    expect(parseConfig(argv(...base), {}).redirectCheck).toEqual({ intervalMs: 0, probe: { host: "1.1.1.1", port: 20001 } });
    const config = parseConfig(argv(...base, "--redirect-check-interval", "2s", "--redirect-check-addr", "10.77.0.99:20001"), {});
    expect(config.redirectCheck).toEqual({ intervalMs: 2000, probe: { host: "10.77.0.99", port: 20001 } });
    expect(parseConfig(argv(...base), { MESHTLS_PROXY_REDIRECT_CHECK_INTERVAL: "10s" }).redirectCheck.intervalMs).toBe(10_000);
    expect(() => parseConfig(argv(...base, "--redirect-check-addr", "example.com:20001"), {})).toThrow(/--redirect-check-addr: "example.com:20001" is not ip:port/);
    expect(() => parseConfig(argv(...base, "--redirect-check-user", "65534:65534"), {})).toThrow();
    expect(() => parseConfig(argv(...base, "--redirect-check-interval", "soon"), {})).toThrow(ConfigError);
  });

  it("reads MESHTLS_PROXY_* variables; flags win", () => {
    const env = {
      MESHTLS_PROXY_IDENTITY: "a.default.serviceaccount.identity.meshtls.cluster.local",
      MESHTLS_PROXY_TOKEN_FILE: "/t",
      MESHTLS_PROXY_TRUST_ANCHORS: "/ca",
      MESHTLS_PROXY_IDENTITY_ADDR: "127.0.0.1:1",
      MESHTLS_PROXY_IDENTITY_INSECURE_PLAINTEXT: "true",
      MESHTLS_PROXY_DESTINATION_ADDR: "127.0.0.1:2",
      MESHTLS_PROXY_DESTINATION_NAME: "destination.meshtls.serviceaccount.identity.meshtls.cluster.local",
      MESHTLS_PROXY_WORKLOAD: "127.0.0.1:9",
      MESHTLS_PROXY_DEFAULT_POLICY: "deny",
      MESHTLS_PROXY_ROUTES: "127.0.0.1:9000=api.default.svc.cluster.local:80; 127.0.0.1:9001=10.0.0.1:5432,opaque",
      MESHTLS_PROXY_ALLOW: "8080=*.default.serviceaccount.identity.meshtls.cluster.local",
      MESHTLS_PROXY_SKIP_PORTS: "25",
    };
    const config = parseConfig(argv("--default-policy", "audit"), env);
    expect(config.identity).toBe(env.MESHTLS_PROXY_IDENTITY);
    expect(config.policy.defaultPolicy).toBe("audit");
    expect(config.routes).toEqual([
      { listen: { host: "127.0.0.1", port: 9000 }, authority: "api.default.svc.cluster.local:80" },
      { listen: { host: "127.0.0.1", port: 9001 }, authority: "10.0.0.1:5432", protocol: "opaque" },
    ]);
    expect(config.policy.ports).toEqual({ 8080: { allowedIdentities: ["*.default.serviceaccount.identity.meshtls.cluster.local"] } });
    expect(config.skipPorts).toEqual([25]);
  });

  it("keeps open inbound connections across rotations unless --inbound-close-at-identity-end (flag or env)", () => {
    expect(parseConfig(argv(...base), {}).inboundCloseAtIdentityEnd).toBe(false);
    expect(parseConfig(argv(...base, "--inbound-close-at-identity-end"), {}).inboundCloseAtIdentityEnd).toBe(true);
    expect(parseConfig(argv(...base), { MESHTLS_PROXY_INBOUND_CLOSE_AT_IDENTITY_END: "true" }).inboundCloseAtIdentityEnd).toBe(true);
  });

  it("refuses bad or missing settings with a message naming the flag", () => {
    expect(() => parseConfig(argv(), {})).toThrow(ConfigError);
    expect(() => parseConfig(argv(...base.filter((a) => a !== "--destination-insecure-plaintext")), {})).toThrow(/--destination-name/);
    expect(() => parseConfig(argv(...base, "--default-policy", "allow-all"), {})).toThrow(/unknown policy/);
    expect(() => parseConfig(argv(...base, "--inbound", "nonsense"), {})).toThrow(/--inbound/);
    expect(() => parseConfig(argv(...base, "--route", "127.0.0.1:9000"), {})).toThrow(/--route/);
    expect(() => parseConfig(argv(...base, "--route", "127.0.0.1:9000=db:5432,raw"), {})).toThrow(/--route/);
    expect(() => parseConfig(argv(...base, "--skip-ports", "70000"), {})).toThrow(/--skip-ports/);
    expect(() => parseConfig(argv(...base, "--idle-timeout", "soon"), {})).toThrow(/--idle-timeout/);
    expect(() => parseConfig(argv(...base, "--identity-insecure-plaintext", "--identity-addr", "10.0.0.1:8080"), {})).toThrow(/loopback/);
  });

  it("takes the policy controller's address with Linkerd's workload string, and refuses either malformed or alone", () => {
    const workload = JSON.stringify({ ns: "default", pod: "web-0" });
    const config = parseConfig(argv(...base, "--policy-addr", "127.0.0.1:8090"), { MESHTLS_PROXY_WORKLOAD_NAME: workload });
    expect(config.policyAddress).toBe("127.0.0.1:8090");
    expect(config.workloadName).toBe(workload);
    expect(parseConfig(argv(...base), {}).policyAddress).toBeUndefined();
    expect(() => parseConfig(argv(...base, "--policy-addr", "127.0.0.1:8090"), {})).toThrow(/--workload-name .* is required with --policy-addr/);
    expect(() => parseConfig(argv(...base, "--policy-addr", "10.0.0.1:8090", "--workload-name", workload), {})).toThrow(/loopback --policy-addr/);
    for (const bad of ["default:web-0", '{"ns":"default"}', '{"ns":"Default","pod":"web-0"}', "{"]) {
      expect(() => parseConfig(argv(...base, "--policy-addr", "127.0.0.1:8090", "--workload-name", bad), {})).toThrow(/--workload-name/);
    }
  });

  it("takes inbound ports and connection caps (flags or MESHTLS_PROXY_*), with caps of 10000, 10000 and 100 by default", () => {
    const defaults = parseConfig(argv(...base), {});
    expect(defaults.inboundPorts).toEqual([]);
    expect([defaults.maxInboundConnections, defaults.maxOutboundConnections, defaults.maxAdminConnections]).toEqual([10_000, 10_000, 100]);
    const set = parseConfig(argv(...base, "--inbound-ports", "8080, 9090", "--max-admin-connections", "5"), { MESHTLS_PROXY_MAX_INBOUND_CONNECTIONS: "20", MESHTLS_PROXY_MAX_OUTBOUND_CONNECTIONS: "30" });
    expect(set.inboundPorts).toEqual([8080, 9090]);
    expect([set.maxInboundConnections, set.maxOutboundConnections, set.maxAdminConnections]).toEqual([20, 30, 5]);
    expect(parseConfig(argv(...base), { MESHTLS_PROXY_INBOUND_PORTS: "7000" }).inboundPorts).toEqual([7000]);
    expect(() => parseConfig(argv(...base, "--inbound-ports", "http"), {})).toThrow(/--inbound-ports/);
    for (const bad of ["0", "-1", "many", "1.5"]) expect(() => parseConfig(argv(...base, "--max-inbound-connections", bad), {})).toThrow(/--max-inbound-connections/);
  });

  it("takes mesh TLS key exchange groups (--tls-groups or MESHTLS_PROXY_TLS_GROUPS), X25519MLKEM768:X25519:P-256 by default, refusing names OpenSSL does not know", () => {
    expect(parseConfig(argv(...base), {}).tlsGroups).toEqual(["X25519MLKEM768", "X25519", "P-256"]);
    expect(parseConfig(argv(...base), { MESHTLS_PROXY_TLS_GROUPS: "X25519:P-256" }).tlsGroups).toEqual(["X25519", "P-256"]);
    expect(parseConfig(argv(...base, "--tls-groups", "P-256"), { MESHTLS_PROXY_TLS_GROUPS: "X25519" }).tlsGroups).toEqual(["P-256"]);
    expect(() => parseConfig(argv(...base, "--tls-groups", "X25519:NoSuchGroup"), {})).toThrow(/--tls-groups/);
    expect(() => parseConfig(argv(...base, "--tls-groups", "*X25519"), {})).toThrow(/--tls-groups/);
    expect(() => parseConfig(argv(...base, "--tls-groups", ":"), {})).toThrow(/--tls-groups/);
  });

  it("refuses a workload address on one of the proxy's own listeners (every connection would loop)", () => {
    const withWorkload = (workload: string, ...extra: string[]): string[] => argv(...base.slice(0, -1), workload, ...extra);
    expect(() => parseConfig(withWorkload("127.0.0.1:4191"), {})).toThrow(/--workload 127.0.0.1:4191 is the proxy's own --admin listener/);
    expect(() => parseConfig(withWorkload("127.0.0.1:4143"), {})).toThrow(/own --inbound listener/);
    expect(() => parseConfig(withWorkload("127.0.0.1:4140"), {})).toThrow(/own --outbound listener/);
    expect(() => parseConfig(withWorkload("127.0.0.1:9000", "--route", "127.0.0.1:9000=api.default.svc.cluster.local:80"), {})).toThrow(/own --route listener/);
    // Another address with the same port is another socket.
    expect(parseConfig(withWorkload("127.0.1.1:4191"), {}).workload).toEqual({ host: "127.0.1.1", port: 4191 });
  });

  it("refuses --tap-allow (or MESHTLS_PROXY_TAP_ALLOW) without --tap-addr: identities allowed on no listener", () => {
    expect(() => parseConfig(argv(...base, "--tap-allow", "*"), {})).toThrow(ConfigError);
    expect(() => parseConfig(argv(...base, "--tap-allow", "*"), {})).toThrow(/--tap-allow needs --tap-addr/);
    expect(() => parseConfig(argv(...base), { MESHTLS_PROXY_TAP_ALLOW: "web.default.serviceaccount.identity.meshtls.cluster.local" })).toThrow(/--tap-allow needs --tap-addr/);
    const config = parseConfig(argv(...base, "--tap-addr", "127.0.0.1:4190", "--tap-allow", "*"), {});
    expect([config.tapAddress, config.tapAllow]).toEqual([{ host: "127.0.0.1", port: 4190 }, ["*"]]);
  });

  it("parses boolean variables strictly: true/1 on, false/0/empty off, anything else refused by name", () => {
    const withoutFlag = base.filter((a) => a !== "--destination-insecure-plaintext");
    const named = ["--destination-name", "destination.meshtls.serviceaccount.identity.meshtls.cluster.local"];
    for (const [name, key] of [
      ["MESHTLS_PROXY_IDENTITY_INSECURE_PLAINTEXT", "identityInsecurePlaintext"],
      ["MESHTLS_PROXY_DESTINATION_INSECURE_PLAINTEXT", "destinationInsecurePlaintext"],
    ] as const) {
      for (const value of ["true", "1", "TRUE", " 1 "]) expect(parseConfig(argv(...withoutFlag, ...named), { [name]: value })[key]).toBe(true);
      for (const value of ["false", "0", "", "False"]) expect(parseConfig(argv(...withoutFlag, ...named), { [name]: value })[key]).toBe(false);
      expect(parseConfig(argv(...withoutFlag, ...named), {})[key]).toBe(false);
      for (const value of ["yes", "on", "2", "nope"]) {
        expect(() => parseConfig(argv(...withoutFlag, ...named), { [name]: value })).toThrow(ConfigError);
        expect(() => parseConfig(argv(...withoutFlag, ...named), { [name]: value })).toThrow(new RegExp(`${name}: "${value}" is not a boolean`));
      }
    }
    // false really is off: without a server name it is then required.
    expect(() => parseConfig(argv(...withoutFlag), { MESHTLS_PROXY_DESTINATION_INSECURE_PLAINTEXT: "false" })).toThrow(/--destination-name/);
    // The flag itself stays on whatever the variable says, but a malformed variable is still refused.
    expect(parseConfig(argv(...base), { MESHTLS_PROXY_DESTINATION_INSECURE_PLAINTEXT: "0" }).destinationInsecurePlaintext).toBe(true);
    expect(() => parseConfig(argv(...base), { MESHTLS_PROXY_DESTINATION_INSECURE_PLAINTEXT: "maybe" })).toThrow(/MESHTLS_PROXY_DESTINATION_INSECURE_PLAINTEXT/);
  });

  describe("--trust-anchors-poll-interval (MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL), the identity service's name; --trust-anchors-poll a deprecated alias", () => {
    const interval = (args: string[], env: NodeJS.ProcessEnv): { ms: number; deprecations: string[] } => {
      const config = parseConfig(argv(...base, ...args), env);
      return { ms: config.trustAnchorsPollIntervalMs, deprecations: config.deprecations };
    };

    it("defaults to 5s, with no deprecation", () => {
      expect(interval([], {})).toEqual({ ms: 5000, deprecations: [] });
    });

    it("takes the new flag and the new variable; the flag wins", () => {
      expect(interval(["--trust-anchors-poll-interval", "750ms"], {})).toEqual({ ms: 750, deprecations: [] });
      expect(interval([], { MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL: "2s" })).toEqual({ ms: 2000, deprecations: [] });
      expect(interval(["--trust-anchors-poll-interval", "3s"], { MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL: "2s" }).ms).toBe(3000);
    });

    it("takes the old flag and the old variable, each with one deprecation naming its replacement", () => {
      expect(interval(["--trust-anchors-poll", "1500ms"], {})).toEqual({ ms: 1500, deprecations: ["--trust-anchors-poll is deprecated: use --trust-anchors-poll-interval"] });
      expect(interval([], { MESHTLS_PROXY_TRUST_ANCHORS_POLL: "4s" })).toEqual({
        ms: 4000,
        deprecations: ["MESHTLS_PROXY_TRUST_ANCHORS_POLL is deprecated: use MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL"],
      });
      // Both old forms: the flag wins, as for every flag and its variable; still one warning.
      expect(interval(["--trust-anchors-poll", "1s"], { MESHTLS_PROXY_TRUST_ANCHORS_POLL: "4s" })).toEqual({ ms: 1000, deprecations: ["--trust-anchors-poll is deprecated: use --trust-anchors-poll-interval"] });
    });

    it("lets the new name win over the old one in any form, warning that the old one is ignored", () => {
      const ignored = (old: string): string => `${old} is deprecated and ignored: --trust-anchors-poll-interval (or MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL) is set and wins; remove ${old}`;
      expect(interval(["--trust-anchors-poll-interval", "750ms", "--trust-anchors-poll", "9s"], {})).toEqual({ ms: 750, deprecations: [ignored("--trust-anchors-poll")] });
      expect(interval(["--trust-anchors-poll", "9s"], { MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL: "2s" })).toEqual({ ms: 2000, deprecations: [ignored("--trust-anchors-poll")] });
      expect(interval([], { MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL: "2s", MESHTLS_PROXY_TRUST_ANCHORS_POLL: "9s" })).toEqual({ ms: 2000, deprecations: [ignored("MESHTLS_PROXY_TRUST_ANCHORS_POLL")] });
      // A bad value under the ignored old name is not read.
      expect(interval(["--trust-anchors-poll-interval", "1s", "--trust-anchors-poll", "often"], {}).ms).toBe(1000);
    });

    it("raises values below 100 ms to 100 ms, under either name", () => {
      expect(interval(["--trust-anchors-poll-interval", "10ms"], {}).ms).toBe(100);
      expect(interval(["--trust-anchors-poll", "1ms"], {}).ms).toBe(100);
    });

    it("refuses a value that is not a duration, naming the flag it came under", () => {
      expect(() => interval(["--trust-anchors-poll-interval", "often"], {})).toThrow(ConfigError);
      expect(() => interval(["--trust-anchors-poll-interval", "often"], {})).toThrow(/--trust-anchors-poll-interval: "often" is not a duration/);
      expect(() => interval([], { MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL: "-1s" })).toThrow(/--trust-anchors-poll-interval: /);
      expect(() => interval(["--trust-anchors-poll", "often"], {})).toThrow(/--trust-anchors-poll: "often" is not a duration/);
      expect(() => interval([], { MESHTLS_PROXY_TRUST_ANCHORS_POLL: "5 parsecs" })).toThrow(ConfigError);
    });

    it("shows the new flag in --help and hides the alias", () => {
      let help = "";
      const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
        help += String(chunk);
        return true;
      });
      try {
        expect(() => parseConfig(argv("--help"), {})).toThrow();
      } finally {
        write.mockRestore();
      }
      expect(help).toContain("--trust-anchors-poll-interval <duration>");
      expect(help).not.toMatch(/--trust-anchors-poll </);
      expect(help).toContain("env: MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL)");
      expect(help).not.toContain("env: MESHTLS_PROXY_TRUST_ANCHORS_POLL)");
    });
  });
});
