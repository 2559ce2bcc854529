import { Command, Option } from "commander";

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
  listen: { host: string; port: number };
  admin: { host: string; port: number };
  insecurePlaintext: boolean;
  logLevel: string;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `24h`, `90s`, `1h30m`, `500ms` → milliseconds. */
export function parseDurationMs(text: string, what: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;
  let total = 0;
  let consumed = 0;
  const input = text.trim();
  while (consumed < input.length) {
    re.lastIndex = consumed;
    const m = re.exec(input);
    if (!m || m[1] === undefined || m[2] === undefined) {
      throw new ConfigError(`${what}: "${text}" is not a duration; use a number with a unit ms, s, m, h or d (e.g. 24h, 20s)`);
    }
    total += Number(m[1]) * (UNIT_MS[m[2]] ?? 0);
    consumed = re.lastIndex;
  }
  if (input.length === 0) throw new ConfigError(`${what}: empty duration`);
  return Math.round(total);
}

/** `host:port`, `[v6]:port` or `:port` (all interfaces). */
export function parseAddress(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = m?.[3] === undefined ? NaN : Number(m[3]);
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new ConfigError(`${what}: "${text}" is not host:port (e.g. 0.0.0.0:8080, [::1]:8080, :8080)`);
  }
  const host = m[1] ?? (m[2] === "" || m[2] === undefined ? "0.0.0.0" : m[2]);
  return { host, port };
}

/**
 * A boolean environment variable, strictly: `true`/`1` → on; `false`/`0`,
 * empty or unset → off; anything else is a ConfigError naming the variable.
 * (commander's `.env()` on a boolean flag turns it on for any value, `false` included.)
 */
export function parseBooleanEnv(env: NodeJS.ProcessEnv, name: string): boolean {
  const raw = env[name];
  if (raw === undefined) return false;
  const value = raw.trim().toLowerCase();
  if (value === "true" || value === "1") return true;
  if (value === "false" || value === "0" || value === "") return false;
  throw new ConfigError(`${name}: "${raw}" is not a boolean (use true, 1, false or 0)`);
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
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
    .addOption(new Option("--token-jwks <file-or-url>", "JWKS of the ServiceAccount token signer: a file, or an http(s) URL").env("MESHTLS_TOKEN_JWKS"))
    .addOption(new Option("--token-issuer <iss>", "expected token issuer (iss claim)").env("MESHTLS_TOKEN_ISSUER"))
    .addOption(new Option("--token-audience <aud>", "expected token audience").env("MESHTLS_TOKEN_AUDIENCE").default("identity.l5d.io"))
    .addOption(new Option("--issuance-lifetime <duration>", "lifetime of issued leaves").env("MESHTLS_ISSUANCE_LIFETIME").default("24h"))
    .addOption(new Option("--clock-skew <duration>", "clock-skew allowance before notBefore and after notAfter").env("MESHTLS_CLOCK_SKEW").default("20s"))
    .addOption(new Option("--issuer-poll-interval <duration>", "how often the issuer folder's content is checked").env("MESHTLS_ISSUER_POLL_INTERVAL").default("5s"))
    .addOption(new Option("--trust-anchors-poll-interval <duration>", "how often the trust anchors file's content is checked").env("MESHTLS_TRUST_ANCHORS_POLL_INTERVAL").default("5s"))
    .addOption(new Option("--listen <addr>", "gRPC listen address").env("MESHTLS_LISTEN").default("0.0.0.0:8080"))
    .addOption(new Option("--admin <addr>", "admin listen address (/metrics, /live, /ready)").env("MESHTLS_ADMIN").default("0.0.0.0:9990"))
    // Not `.env()`: commander treats any value of a boolean flag's variable, even "false", as set.
    .addOption(new Option("--insecure-plaintext", "serve plaintext gRPC (loopback listen addresses only); env MESHTLS_INSECURE_PLAINTEXT=true|1|false|0"))
    .addOption(new Option("--log-level <level>", "pino log level").env("MESHTLS_LOG_LEVEL").default("info"));
  // commander reads process.env itself; hand it the environment we were given.
  const saved = process.env;
  process.env = env;
  try {
    program.parse(argv, { from: "node" });
  } finally {
    process.env = saved;
  }
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
    listen,
    admin: parseAddress(String(o["admin"]), "--admin"),
    insecurePlaintext,
    logLevel: String(o["logLevel"]),
  };
}
