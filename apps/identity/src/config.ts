import { availableParallelism } from "node:os";
import { Command, Option } from "commander";
import { ConfigError, FOLLOW_DEFAULTS, isLoopback, parseAddress, parseBooleanEnv, parseCommandLine, parseCount, parseDurationMs } from "@meshtls/runtime";
import { LOCAL_TOKEN_ISSUER, type CertifyLimits } from "@meshtls/identity";

export { ConfigError, parseAddress, parseBooleanEnv, parseDurationMs };

/** The content check of every followed file, as the flags show it (FOLLOW_DEFAULTS: one default for all). */
const FOLLOW_POLL_INTERVAL = `${FOLLOW_DEFAULTS.pollIntervalMs / 1000}s`;

/** The validated configuration of meshtls-identity. */
export interface Config {
  trustAnchorsFile: string;
  issuerDir: string;
  trustDomain: string;
  controlNamespace: string;
  /**
   * The service's own ServiceAccount, which names its serving certificate
   * (`<sa>.<ns>.serviceaccount.identity.<ns>.<td>`): `linkerd-identity` in a
   * `linkerd` control namespace (what Linkerd's proxies expect), else `identity`.
   */
  serviceAccount: string;
  /** Who authenticates tokens: the JWKS at `tokenJwks`, or the Kubernetes API (TokenReview). */
  source: "jwks" | "kubernetes";
  /** With `source: "kubernetes"`: a kubeconfig file (absent: KUBECONFIG, ~/.kube/config, then in-cluster). */
  kubeconfig?: string;
  /** With `source: "kubernetes"`: also accept tokens for the API server's own audience (legacy ServiceAccount tokens). */
  allowLegacyTokens: boolean;
  /** A file path or an https URL (http only for a loopback host with `tokenJwksAllowInsecureLoopback`); "" with `source: "kubernetes"`. */
  tokenJwks: string;
  /** Accept an `http://` `tokenJwks` URL whose host is loopback. */
  tokenJwksAllowInsecureLoopback: boolean;
  tokenIssuer: string;
  tokenAudience: string;
  lifetimeMs: number;
  skewMs: number;
  issuerPollIntervalMs: number;
  trustAnchorsPollIntervalMs: number;
  /** How often a `tokenJwks` file's content is checked (a URL is fetched by jose instead). */
  tokenJwksPollIntervalMs: number;
  listen: { host: string; port: number };
  /** The admin listener, and the most connections it holds open (more are closed at once and counted). */
  admin: { host: string; port: number; maxConnections: number };
  insecurePlaintext: boolean;
  logLevel: string;
  /** Processes serving Certify on the one gRPC port (node:cluster); 1 serves in this process. */
  workers: number;
  /** Bounds on connections, streams and calls of the gRPC server (per process: each worker has its own). */
  limits: Required<CertifyLimits>;
  /** A gRPC connection short of a finished TLS handshake and the HTTP/2 preface + SETTINGS this long after it was accepted is closed. */
  handshakeTimeoutMs: number;
}

/** The largest stream cap, call cap or share accepted by the flags. */
const MAX_CAP = 1_000_000;

/**
 * A `--token-jwks` value: a file path, an `https://` URL, or (with `--token-jwks-allow-insecure-loopback`)
 * an `http://` URL whose host is loopback. Anything else could let whoever is on the path add a signing key.
 */
export function checkTokenJwks(value: string, allowInsecureLoopback: boolean): void {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined || scheme === "https") return;
  if (scheme !== "http") throw new ConfigError(`--token-jwks: ${JSON.stringify(value)} is not a file or an https:// URL`);
  let host: string;
  try {
    host = new URL(value).hostname.replace(/^\[|\]$/g, "");
  } catch {
    throw new ConfigError(`--token-jwks: ${JSON.stringify(value)} is not a valid URL`);
  }
  if (!isLoopback(host)) {
    throw new ConfigError(`--token-jwks: ${JSON.stringify(value)} is http://; a remote JWKS must be fetched over https:// (anyone on the path could add a signing key)`);
  }
  if (!allowInsecureLoopback) {
    throw new ConfigError(`--token-jwks: ${JSON.stringify(value)} is http://; use https://, or add --token-jwks-allow-insecure-loopback to accept http on this loopback host`);
  }
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
    .addOption(new Option("--service-account <name>", "the service's own ServiceAccount, which names its certificate (default: linkerd-identity when --control-namespace is linkerd, else identity)").env("MESHTLS_SERVICE_ACCOUNT"))
    .addOption(new Option("--source <source>", "who authenticates ServiceAccount tokens: jwks (--token-jwks) or kubernetes (TokenReview)").env("MESHTLS_SOURCE").default("jwks"))
    .addOption(new Option("--kubeconfig <file>", "with --source kubernetes: kubeconfig file (default: KUBECONFIG, ~/.kube/config, then in-cluster)").env("MESHTLS_KUBECONFIG"))
    .addOption(new Option("--allow-legacy-tokens", "with --source kubernetes: also accept tokens for the API server's audience (legacy ServiceAccount tokens); env MESHTLS_ALLOW_LEGACY_TOKENS=true|1|false|0"))
    .addOption(new Option("--token-jwks <file-or-url>", "JWKS of the ServiceAccount token signer: a file (watched and reloaded), or an https:// URL").env("MESHTLS_TOKEN_JWKS"))
    .addOption(new Option("--token-jwks-allow-insecure-loopback", "accept an http:// --token-jwks URL on a loopback host; env MESHTLS_TOKEN_JWKS_ALLOW_INSECURE_LOOPBACK=true|1|false|0"))
    .addOption(new Option("--token-issuer <iss>", "expected token issuer (iss claim); default the local signer's (meshtls token mint)").env("MESHTLS_TOKEN_ISSUER").default(LOCAL_TOKEN_ISSUER))
    .addOption(new Option("--token-audience <aud>", "expected token audience").env("MESHTLS_TOKEN_AUDIENCE").default("identity.l5d.io"))
    .addOption(new Option("--issuance-lifetime <duration>", "lifetime of issued leaves").env("MESHTLS_ISSUANCE_LIFETIME").default("24h"))
    .addOption(new Option("--clock-skew <duration>", "clock-skew allowance before notBefore and after notAfter").env("MESHTLS_CLOCK_SKEW").default("20s"))
    .addOption(new Option("--issuer-poll-interval <duration>", "how often the issuer folder's content is checked").env("MESHTLS_ISSUER_POLL_INTERVAL").default(FOLLOW_POLL_INTERVAL))
    .addOption(new Option("--trust-anchors-poll-interval <duration>", "how often the trust anchors file's content is checked").env("MESHTLS_TRUST_ANCHORS_POLL_INTERVAL").default(FOLLOW_POLL_INTERVAL))
    .addOption(new Option("--token-jwks-poll-interval <duration>", "how often the --token-jwks file's content is checked").env("MESHTLS_TOKEN_JWKS_POLL_INTERVAL").default(FOLLOW_POLL_INTERVAL))
    .addOption(new Option("--listen <addr>", "gRPC listen address").env("MESHTLS_LISTEN").default("0.0.0.0:8080"))
    .addOption(new Option("--admin <addr>", "admin listen address (/metrics, /live, /ready); loopback unless set, e.g. :9990 for probes and scraping").env("MESHTLS_ADMIN").default("127.0.0.1:9990"))
    // Not `.env()`: commander treats any value of a boolean flag's variable, even "false", as set.
    .addOption(new Option("--insecure-plaintext", "serve plaintext gRPC (loopback listen addresses only); env MESHTLS_INSECURE_PLAINTEXT=true|1|false|0"))
    .addOption(new Option("--log-level <level>", "pino log level").env("MESHTLS_LOG_LEVEL").default("info"))
    .addOption(new Option("--workers <n>", "processes serving Certify on the gRPC port: 1 to 64, or auto (one per CPU)").env("MESHTLS_WORKERS").default("1"))
    .addOption(new Option("--max-concurrent-streams <n>", "concurrent streams per gRPC connection").env("MESHTLS_MAX_CONCURRENT_STREAMS").default("100"))
    .addOption(new Option("--certify-deadline <duration>", "a Certify call not answered this long after its headers ends with DEADLINE_EXCEEDED").env("MESHTLS_CERTIFY_DEADLINE").default("10s"))
    .addOption(new Option("--max-certify-calls <n>", "Certify calls in progress at once, per process; more are refused with RESOURCE_EXHAUSTED").env("MESHTLS_MAX_CERTIFY_CALLS").default("1000"))
    .addOption(new Option("--max-certify-calls-per-peer <n>", "of those, the most one remote IP address may hold").env("MESHTLS_MAX_CERTIFY_CALLS_PER_PEER").default("100"))
    .addOption(new Option("--max-connection-idle <duration>", "a gRPC connection without a call for this long is closed").env("MESHTLS_MAX_CONNECTION_IDLE").default("5m"))
    .addOption(new Option("--max-connection-age <duration>", "a gRPC connection this old (±10 %) is sent GOAWAY; the caller reconnects").env("MESHTLS_MAX_CONNECTION_AGE").default("1h"))
    .addOption(new Option("--max-connection-age-grace <duration>", "after that GOAWAY, time for calls in progress before the connection is closed").env("MESHTLS_MAX_CONNECTION_AGE_GRACE").default("15s"))
    .addOption(new Option("--handshake-timeout <duration>", "a gRPC connection that has not finished its TLS handshake and sent the HTTP/2 preface and SETTINGS this long after connecting is closed").env("MESHTLS_HANDSHAKE_TIMEOUT").default("10s"))
    .addOption(new Option("--admin-max-connections <n>", "open admin connections at most; more are closed at once and counted in tcp_connections_refused_total").env("MESHTLS_ADMIN_MAX_CONNECTIONS").default("256"));
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
  const trustAnchorsFile = required("trustAnchors", "--trust-anchors", "MESHTLS_TRUST_ANCHORS");
  const issuerDir = required("issuerDir", "--issuer-dir", "MESHTLS_ISSUER_DIR");
  const source = String(o["source"]);
  if (source !== "jwks" && source !== "kubernetes") throw new ConfigError(`--source: "${source}" is not one of jwks, kubernetes`);
  const allowLegacyTokens = o["allowLegacyTokens"] === true || parseBooleanEnv(env, "MESHTLS_ALLOW_LEGACY_TOKENS");
  const kubeconfig = typeof o["kubeconfig"] === "string" && o["kubeconfig"] !== "" ? o["kubeconfig"] : undefined;
  if (source === "jwks" && (kubeconfig !== undefined || allowLegacyTokens)) throw new ConfigError("--kubeconfig and --allow-legacy-tokens need --source kubernetes");
  if (source === "kubernetes" && typeof o["tokenJwks"] === "string") throw new ConfigError("--token-jwks and --source kubernetes exclude each other: the API server reviews tokens");
  const tokenJwks = source === "kubernetes" ? "" : required("tokenJwks", "--token-jwks", "MESHTLS_TOKEN_JWKS");
  const tokenJwksAllowInsecureLoopback = o["tokenJwksAllowInsecureLoopback"] === true || parseBooleanEnv(env, "MESHTLS_TOKEN_JWKS_ALLOW_INSECURE_LOOPBACK");
  if (source === "jwks") checkTokenJwks(tokenJwks, tokenJwksAllowInsecureLoopback);
  const positiveMs = (key: string, flag: string): number => {
    const ms = parseDurationMs(String(o[key]), flag);
    if (ms < 1) throw new ConfigError(`${flag} must be at least 1ms`);
    return ms;
  };
  const limits: Required<CertifyLimits> = {
    maxConcurrentStreams: parseCount(String(o["maxConcurrentStreams"]), "--max-concurrent-streams", { min: 1, max: MAX_CAP }),
    certifyDeadlineMs: positiveMs("certifyDeadline", "--certify-deadline"),
    maxCalls: parseCount(String(o["maxCertifyCalls"]), "--max-certify-calls", { min: 1, max: MAX_CAP }),
    maxCallsPerPeer: parseCount(String(o["maxCertifyCallsPerPeer"]), "--max-certify-calls-per-peer", { min: 1, max: MAX_CAP }),
    maxConnectionIdleMs: positiveMs("maxConnectionIdle", "--max-connection-idle"),
    maxConnectionAgeMs: positiveMs("maxConnectionAge", "--max-connection-age"),
    maxConnectionAgeGraceMs: positiveMs("maxConnectionAgeGrace", "--max-connection-age-grace"),
  };
  if (limits.maxCallsPerPeer > limits.maxCalls) {
    throw new ConfigError(`--max-certify-calls-per-peer (${limits.maxCallsPerPeer}) must not exceed --max-certify-calls (${limits.maxCalls})`);
  }
  const controlNamespace = String(o["controlNamespace"]);
  if (!DNS_LABEL.test(controlNamespace)) throw new ConfigError(`--control-namespace: "${controlNamespace}" is not a DNS-1123 label`);
  const serviceAccount = typeof o["serviceAccount"] === "string" && o["serviceAccount"] !== "" ? o["serviceAccount"] : defaultServiceAccount(controlNamespace, "identity");
  if (!DNS_LABEL.test(serviceAccount)) throw new ConfigError(`--service-account: "${serviceAccount}" is not a DNS-1123 label`);
  const lifetimeMs = parseDurationMs(String(o["issuanceLifetime"]), "--issuance-lifetime");
  if (lifetimeMs < 1000) throw new ConfigError("--issuance-lifetime must be at least 1s");
  return {
    trustAnchorsFile,
    issuerDir,
    trustDomain: String(o["trustDomain"]),
    controlNamespace,
    serviceAccount,
    source,
    ...(kubeconfig === undefined ? {} : { kubeconfig }),
    allowLegacyTokens,
    tokenJwks,
    tokenJwksAllowInsecureLoopback,
    tokenIssuer: String(o["tokenIssuer"]),
    tokenAudience: String(o["tokenAudience"]),
    lifetimeMs,
    skewMs: parseDurationMs(String(o["clockSkew"]), "--clock-skew"),
    issuerPollIntervalMs: Math.max(100, parseDurationMs(String(o["issuerPollInterval"]), "--issuer-poll-interval")),
    trustAnchorsPollIntervalMs: Math.max(100, parseDurationMs(String(o["trustAnchorsPollInterval"]), "--trust-anchors-poll-interval")),
    tokenJwksPollIntervalMs: Math.max(100, parseDurationMs(String(o["tokenJwksPollInterval"]), "--token-jwks-poll-interval")),
    listen,
    admin: { ...parseAddress(String(o["admin"]), "--admin"), maxConnections: parseCount(String(o["adminMaxConnections"]), "--admin-max-connections", { min: 1, max: MAX_CAP }) },
    insecurePlaintext,
    logLevel: String(o["logLevel"]),
    workers: parseWorkers(String(o["workers"]), "--workers"),
    limits,
    handshakeTimeoutMs: positiveMs("handshakeTimeout", "--handshake-timeout"),
  };
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * A control-plane service's ServiceAccount when none is given: Linkerd's name
 * (`linkerd-identity`, charts/partials/templates/_proxy.tpl) in a `linkerd`
 * control namespace, so that Linkerd's proxies find the identity they expect.
 */
export function defaultServiceAccount(controlNamespace: string, service: "identity" | "destination"): string {
  return controlNamespace === "linkerd" ? `linkerd-${service}` : service;
}
