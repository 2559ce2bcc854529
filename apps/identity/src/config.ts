import { availableParallelism } from "node:os";
import { Command, Option } from "commander";
import { ConfigError, isLoopback, parseAddress, parseBooleanEnv, parseCommandLine, parseDurationMs } from "@meshtls/runtime";

export { ConfigError, parseAddress, parseBooleanEnv, parseDurationMs };

/** The validated configuration of meshtls-identity. */
export interface Config {
  trustAnchorsFile: string;
  issuerDir: string;
  trustDomain: string;
  controlNamespace: string;
  /** A file path or an http(s) URL. */
  tokenJwks: string;
  tokenIssuer: string;
  tokenAudience: string;
  lifetimeMs: number;
  skewMs: number;
  issuerPollIntervalMs: number;
  trustAnchorsPollIntervalMs: number;
  /** How often a `tokenJwks` file's content is checked (a URL is fetched by jose instead). */
  tokenJwksPollIntervalMs: number;
  listen: { host: string; port: number };
  admin: { host: string; port: number };
  insecurePlaintext: boolean;
  logLevel: string;
  /** Processes serving Certify on the one gRPC port (node:cluster); 1 serves in this process. */
  workers: number;
}

/** The most worker processes accepted (each holds its own issuer, anchors and TLS sessions). */
export const MAX_WORKERS = 64;

/** `--workers`: a whole number from 1 to MAX_WORKERS, or `auto` (the CPUs node may use, `os.availableParallelism()`). */
export function parseWorkers(text: string, what: string, cpus: () => number = availableParallelism): number {
  const value = text.trim().toLowerCase();
  if (value === "auto") return Math.min(MAX_WORKERS, Math.max(1, cpus()));
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > MAX_WORKERS) {
    throw new ConfigError(`${what}: ${JSON.stringify(text)} is not a number of workers (1 to ${MAX_WORKERS}, or auto)`);
  }
  return Number(value);
}

/** Parses flags and `MESHTLS_*` environment variables (flags win). Throws ConfigError with a message for the user. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const program = new Command("meshtls-identity")
    .description("The meshtls identity service: exchanges ServiceAccount tokens and CSRs for short-lived mTLS certificates.")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) })
    .addOption(new Option("--trust-anchors <file>", "PEM bundle of trust anchors (root CAs); watched and reloaded").env("MESHTLS_TRUST_ANCHORS"))
    .addOption(new Option("--issuer-dir <dir>", "folder with issuer.crt/issuer.key, crt.pem/key.pem or tls.crt/tls.key").env("MESHTLS_ISSUER_DIR"))
    .addOption(new Option("--trust-domain <domain>", "trust domain").env("MESHTLS_TRUST_DOMAIN").default("cluster.local"))
    .addOption(new Option("--control-namespace <ns>", "control-plane namespace").env("MESHTLS_CONTROL_NAMESPACE").default("meshtls"))
    .addOption(new Option("--token-jwks <file-or-url>", "JWKS of the ServiceAccount token signer: a file (watched and reloaded), or an http(s) URL").env("MESHTLS_TOKEN_JWKS"))
    .addOption(new Option("--token-issuer <iss>", "expected token issuer (iss claim)").env("MESHTLS_TOKEN_ISSUER"))
    .addOption(new Option("--token-audience <aud>", "expected token audience").env("MESHTLS_TOKEN_AUDIENCE").default("identity.l5d.io"))
    .addOption(new Option("--issuance-lifetime <duration>", "lifetime of issued leaves").env("MESHTLS_ISSUANCE_LIFETIME").default("24h"))
    .addOption(new Option("--clock-skew <duration>", "clock-skew allowance before notBefore and after notAfter").env("MESHTLS_CLOCK_SKEW").default("20s"))
    .addOption(new Option("--issuer-poll-interval <duration>", "how often the issuer folder's content is checked").env("MESHTLS_ISSUER_POLL_INTERVAL").default("5s"))
    .addOption(new Option("--trust-anchors-poll-interval <duration>", "how often the trust anchors file's content is checked").env("MESHTLS_TRUST_ANCHORS_POLL_INTERVAL").default("5s"))
    .addOption(new Option("--token-jwks-poll-interval <duration>", "how often the --token-jwks file's content is checked").env("MESHTLS_TOKEN_JWKS_POLL_INTERVAL").default("5s"))
    .addOption(new Option("--listen <addr>", "gRPC listen address").env("MESHTLS_LISTEN").default("0.0.0.0:8080"))
    .addOption(new Option("--admin <addr>", "admin listen address (/metrics, /live, /ready)").env("MESHTLS_ADMIN").default("0.0.0.0:9990"))
    // Not `.env()`: commander treats any value of a boolean flag's variable, even "false", as set.
    .addOption(new Option("--insecure-plaintext", "serve plaintext gRPC (loopback listen addresses only); env MESHTLS_INSECURE_PLAINTEXT=true|1|false|0"))
    .addOption(new Option("--log-level <level>", "pino log level").env("MESHTLS_LOG_LEVEL").default("info"))
    .addOption(new Option("--workers <n>", "processes serving Certify on the gRPC port: 1 to 64, or auto (one per CPU)").env("MESHTLS_WORKERS").default("1"));
  parseCommandLine(program, argv, env);
  const o = program.opts<Record<string, string | boolean | undefined>>();
  const required = (key: string, flag: string, envName: string): string => {
    const v = o[key];
    if (typeof v !== "string" || v.length === 0) throw new ConfigError(`${flag} (or ${envName}) is required`);
    return v;
  };
  const listen = parseAddress(String(o["listen"]), "--listen");
  // The flag given on the command line is on; the variable is always parsed strictly (a malformed one is refused).
  const fromEnv = parseBooleanEnv(env, "MESHTLS_INSECURE_PLAINTEXT");
  const insecurePlaintext = o["insecurePlaintext"] === true || fromEnv;
  if (insecurePlaintext && !isLoopback(listen.host)) {
    throw new ConfigError(`--insecure-plaintext is allowed only on a loopback listen address; --listen is ${listen.host}`);
  }
  const lifetimeMs = parseDurationMs(String(o["issuanceLifetime"]), "--issuance-lifetime");
  if (lifetimeMs < 1000) throw new ConfigError("--issuance-lifetime must be at least 1s");
  return {
    trustAnchorsFile: required("trustAnchors", "--trust-anchors", "MESHTLS_TRUST_ANCHORS"),
    issuerDir: required("issuerDir", "--issuer-dir", "MESHTLS_ISSUER_DIR"),
    trustDomain: String(o["trustDomain"]),
    controlNamespace: String(o["controlNamespace"]),
    tokenJwks: required("tokenJwks", "--token-jwks", "MESHTLS_TOKEN_JWKS"),
    tokenIssuer: required("tokenIssuer", "--token-issuer", "MESHTLS_TOKEN_ISSUER"),
    tokenAudience: String(o["tokenAudience"]),
    lifetimeMs,
    skewMs: parseDurationMs(String(o["clockSkew"]), "--clock-skew"),
    issuerPollIntervalMs: Math.max(100, parseDurationMs(String(o["issuerPollInterval"]), "--issuer-poll-interval")),
    trustAnchorsPollIntervalMs: Math.max(100, parseDurationMs(String(o["trustAnchorsPollInterval"]), "--trust-anchors-poll-interval")),
    tokenJwksPollIntervalMs: Math.max(100, parseDurationMs(String(o["tokenJwksPollInterval"]), "--token-jwks-poll-interval")),
    listen,
    admin: parseAddress(String(o["admin"]), "--admin"),
    insecurePlaintext,
    logLevel: String(o["logLevel"]),
    workers: parseWorkers(String(o["workers"]), "--workers"),
  };
}
