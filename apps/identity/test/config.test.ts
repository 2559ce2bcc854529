import { describe, expect, it } from "vitest";
import { ConfigError, MAX_WORKERS, parseAddress, parseBooleanEnv, parseConfig, parseDurationMs, parseWorkers } from "../src/config.ts";

const base = ["node", "meshtls-identity"];
const required = ["--trust-anchors", "ca.crt", "--issuer-dir", "issuer", "--token-jwks", "jwks.json", "--token-issuer", "https://meshtls.local"];

describe("meshtls-identity configuration", () => {
  it("has the documented defaults", () => {
    const config = parseConfig([...base, ...required], {});
    expect(config).toMatchObject({
      trustDomain: "cluster.local",
      controlNamespace: "meshtls",
      serviceAccount: "identity",
      tokenAudience: "identity.l5d.io",
      lifetimeMs: 24 * 3600_000,
      skewMs: 20_000,
      issuerPollIntervalMs: 5000,
      trustAnchorsPollIntervalMs: 5000,
      listen: { host: "0.0.0.0", port: 8080 },
      admin: { host: "127.0.0.1", port: 9990, maxConnections: 256 },
      handshakeTimeoutMs: 10_000,
      insecurePlaintext: false,
      workers: 1,
      tokenJwksAllowInsecureLoopback: false,
      limits: {
        maxConcurrentStreams: 100,
        certifyDeadlineMs: 10_000,
        maxCalls: 1000,
        maxCallsPerPeer: 100,
        maxConnectionIdleMs: 300_000,
        maxConnectionAgeMs: 3_600_000,
        maxConnectionAgeGraceMs: 15_000,
      },
    });
  });

  it("names its own certificate as Linkerd's proxies expect in a linkerd control namespace, unless --service-account says otherwise", () => {
    expect(parseConfig([...base, ...required, "--control-namespace", "linkerd"], {}).serviceAccount).toBe("linkerd-identity");
    expect(parseConfig([...base, ...required, "--control-namespace", "linkerd"], { MESHTLS_SERVICE_ACCOUNT: "ident" }).serviceAccount).toBe("ident");
    expect(() => parseConfig([...base, ...required, "--service-account", "Not_A_Label"], {})).toThrow(/--service-account/);
    expect(() => parseConfig([...base, ...required, "--control-namespace", "a.b"], {})).toThrow(/--control-namespace/);
  });

  it("reads the gRPC limits from flags and MESHTLS_* variables, and refuses bad ones naming the flag", () => {
    const config = parseConfig(
      [...base, ...required, "--max-concurrent-streams", "10", "--certify-deadline", "2s", "--max-certify-calls", "50", "--max-connection-age", "30m"],
      { MESHTLS_MAX_CERTIFY_CALLS_PER_PEER: "5", MESHTLS_MAX_CONNECTION_IDLE: "1m", MESHTLS_MAX_CONNECTION_AGE_GRACE: "3s" },
    );
    expect(config.limits).toEqual({
      maxConcurrentStreams: 10,
      certifyDeadlineMs: 2000,
      maxCalls: 50,
      maxCallsPerPeer: 5,
      maxConnectionIdleMs: 60_000,
      maxConnectionAgeMs: 1_800_000,
      maxConnectionAgeGraceMs: 3000,
    });
    expect(parseConfig([...base, ...required, "--handshake-timeout", "3s"], { MESHTLS_ADMIN_MAX_CONNECTIONS: "64" })).toMatchObject({ handshakeTimeoutMs: 3000, admin: { maxConnections: 64 } });
    expect(() => parseConfig([...base, ...required, "--handshake-timeout", "0s"], {})).toThrow("--handshake-timeout must be at least 1ms");
    expect(() => parseConfig([...base, ...required], { MESHTLS_ADMIN_MAX_CONNECTIONS: "0" })).toThrow('--admin-max-connections: "0" is not a whole number from 1 to 1000000');
    expect(() => parseConfig([...base, ...required, "--max-concurrent-streams", "0"], {})).toThrow('--max-concurrent-streams: "0" is not a whole number from 1 to 1000000');
    expect(() => parseConfig([...base, ...required, "--certify-deadline", "0s"], {})).toThrow("--certify-deadline must be at least 1ms");
    expect(() => parseConfig([...base, ...required], { MESHTLS_CERTIFY_DEADLINE: "soon" })).toThrow('--certify-deadline: "soon" is not a duration');
    expect(() => parseConfig([...base, ...required, "--max-certify-calls", "10", "--max-certify-calls-per-peer", "11"], {})).toThrow(
      "--max-certify-calls-per-peer (11) must not exceed --max-certify-calls (10)",
    );
  });

  it("--token-jwks: a file or https; http only on a loopback host with --token-jwks-allow-insecure-loopback", () => {
    const withJwks = (jwks: string) => ["--trust-anchors", "ca.crt", "--issuer-dir", "issuer", "--token-jwks", jwks, "--token-issuer", "https://meshtls.local"];
    expect(parseConfig([...base, ...withJwks("https://keys.example/jwks.json")], {}).tokenJwks).toBe("https://keys.example/jwks.json");
    expect(parseConfig([...base, ...withJwks("./tokens/jwks.json")], {}).tokenJwks).toBe("./tokens/jwks.json");
    expect(parseConfig([...base, ...withJwks("http://127.0.0.1:8000/jwks.json"), "--token-jwks-allow-insecure-loopback"], {}).tokenJwksAllowInsecureLoopback).toBe(true);
    expect(parseConfig([...base, ...withJwks("http://[::1]:8000/jwks.json")], { MESHTLS_TOKEN_JWKS_ALLOW_INSECURE_LOOPBACK: "1" }).tokenJwks).toBe("http://[::1]:8000/jwks.json");
    expect(() => parseConfig([...base, ...withJwks("http://127.0.0.1:8000/jwks.json")], {})).toThrow(
      '--token-jwks: "http://127.0.0.1:8000/jwks.json" is http://; use https://, or add --token-jwks-allow-insecure-loopback to accept http on this loopback host',
    );
    expect(() => parseConfig([...base, ...withJwks("http://keys.example/jwks.json"), "--token-jwks-allow-insecure-loopback"], {})).toThrow(
      /is http:\/\/; a remote JWKS must be fetched over https:\/\//,
    );
    expect(() => parseConfig([...base, ...withJwks("ftp://127.0.0.1/jwks.json")], {})).toThrow(/is not a file or an https:\/\/ URL/);
    expect(() => parseConfig([...base, ...withJwks("http://127.0.0.1/j")], { MESHTLS_TOKEN_JWKS_ALLOW_INSECURE_LOOPBACK: "yes" })).toThrow(/MESHTLS_TOKEN_JWKS_ALLOW_INSECURE_LOOPBACK: "yes" is not a boolean/);
  });

  it("--workers / MESHTLS_WORKERS: 1 to 64 or auto (one per CPU, capped); anything else is a ConfigError", () => {
    expect(parseConfig([...base, ...required, "--workers", "3"], {}).workers).toBe(3);
    expect(parseConfig([...base, ...required], { MESHTLS_WORKERS: "2" }).workers).toBe(2);
    expect(parseConfig([...base, ...required, "--workers", "1"], { MESHTLS_WORKERS: "4" }).workers).toBe(1);
    expect(parseWorkers("auto", "--workers", () => 6)).toBe(6);
    expect(parseWorkers(" AUTO ", "--workers", () => 500)).toBe(MAX_WORKERS);
    expect(parseWorkers("auto", "--workers", () => 0)).toBe(1);
    for (const bad of ["0", "-1", "1.5", "65", "two", "", "0x2"]) {
      expect(() => parseWorkers(bad, "--workers"), bad).toThrow(ConfigError);
    }
    expect(() => parseConfig([...base, ...required], { MESHTLS_WORKERS: "many" })).toThrow('--workers: "many" is not a number of workers (1 to 64, or auto)');
  });

  it("reads MESHTLS_* variables, and flags win over them", () => {
    const env = {
      MESHTLS_TRUST_ANCHORS: "/etc/anchors.pem",
      MESHTLS_ISSUER_DIR: "/var/run/issuer",
      MESHTLS_TOKEN_JWKS: "https://kubernetes.default.svc/openid/v1/jwks",
      MESHTLS_TOKEN_ISSUER: "https://kubernetes.default.svc",
      MESHTLS_TRUST_DOMAIN: "example.org",
      MESHTLS_ISSUANCE_LIFETIME: "1h30m",
      MESHTLS_LISTEN: "[::1]:8443",
      MESHTLS_INSECURE_PLAINTEXT: "true",
    };
    const config = parseConfig([...base, "--trust-domain", "flag.example"], env);
    expect(config).toMatchObject({
      trustAnchorsFile: "/etc/anchors.pem",
      tokenJwks: "https://kubernetes.default.svc/openid/v1/jwks",
      trustDomain: "flag.example",
      lifetimeMs: 90 * 60_000,
      listen: { host: "::1", port: 8443 },
      insecurePlaintext: true,
    });
  });

  it.each([
    [[], /--trust-anchors \(or MESHTLS_TRUST_ANCHORS\) is required/],
    [[...required, "--insecure-plaintext"], /allowed only on a loopback listen address; --listen is 0\.0\.0\.0/],
    [[...required, "--issuance-lifetime", "soon"], /--issuance-lifetime: "soon" is not a duration/],
    [[...required, "--listen", "8080"], /--listen: "8080" is not host:port/],
  ])("refuses %j with a message", (args, message) => {
    expect(() => parseConfig([...base, ...args], {})).toThrow(message);
  });

  it("parses MESHTLS_INSECURE_PLAINTEXT strictly: =false is off, not on", () => {
    const loopback = [...required, "--listen", "127.0.0.1:8080"];
    for (const value of ["true", "1", "TRUE", " 1 "]) {
      expect(parseConfig([...base, ...loopback], { MESHTLS_INSECURE_PLAINTEXT: value }).insecurePlaintext, value).toBe(true);
    }
    for (const value of ["false", "0", "", "False"]) {
      expect(parseConfig([...base, ...loopback], { MESHTLS_INSECURE_PLAINTEXT: value }).insecurePlaintext, value).toBe(false);
    }
    expect(parseConfig([...base, ...loopback], {}).insecurePlaintext).toBe(false);
    // Off by the variable: a non-loopback listen address is then fine (with =false, commander alone would have refused it).
    expect(parseConfig([...base, ...required], { MESHTLS_INSECURE_PLAINTEXT: "false" }).insecurePlaintext).toBe(false);
    // The flag wins over =false.
    expect(parseConfig([...base, ...loopback, "--insecure-plaintext"], { MESHTLS_INSECURE_PLAINTEXT: "false" }).insecurePlaintext).toBe(true);
    for (const value of ["yes", "on", "2", "truee"]) {
      expect(() => parseConfig([...base, ...loopback], { MESHTLS_INSECURE_PLAINTEXT: value }), value).toThrow(
        new ConfigError(`MESHTLS_INSECURE_PLAINTEXT: "${value}" is not a boolean (use true, 1, false or 0)`),
      );
    }
    // Even beside the flag, a malformed variable is refused rather than ignored.
    expect(() => parseConfig([...base, ...loopback, "--insecure-plaintext"], { MESHTLS_INSECURE_PLAINTEXT: "yes" })).toThrow(/MESHTLS_INSECURE_PLAINTEXT: "yes"/);
    expect(parseBooleanEnv({}, "X")).toBe(false);
  });

  it("reads the trust anchors poll interval", () => {
    expect(parseConfig([...base, ...required, "--trust-anchors-poll-interval", "750ms"], {}).trustAnchorsPollIntervalMs).toBe(750);
    expect(parseConfig([...base, ...required], { MESHTLS_TRUST_ANCHORS_POLL_INTERVAL: "2s" }).trustAnchorsPollIntervalMs).toBe(2000);
    expect(() => parseConfig([...base, ...required, "--trust-anchors-poll-interval", "often"], {})).toThrow(/--trust-anchors-poll-interval: "often" is not a duration/);
  });

  it("parses durations and addresses", () => {
    expect(parseDurationMs("500ms", "x")).toBe(500);
    expect(parseDurationMs("1h30m", "x")).toBe(5_400_000);
    expect(parseAddress(":9990", "x")).toEqual({ host: "0.0.0.0", port: 9990 });
    expect(() => parseAddress("host:99999", "x")).toThrow(/not host:port/);
  });
});
