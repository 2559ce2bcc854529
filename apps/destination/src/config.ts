import { Command, Option } from "commander";
import { DEFAULT_POLICIES, DestinationError, parseCidr, type Cidr, type DefaultPolicy } from "@meshtls/destination";
import { ConfigError, isLoopback, parseAddress, parseBooleanEnv, parseCommandLine, parseCount, parseDurationMs } from "@meshtls/runtime";

export { ConfigError };

/** The validated configuration of meshtls-destination. */
export interface Config {
  /** Where services, endpoints and policy come from: the registry file, or the Kubernetes API. */
  source: "file" | "kubernetes";
  /** The registry file; "" with `source: "kubernetes"`. */
  registryFile: string;
  /** With `source: "kubernetes"`: a kubeconfig file (absent: KUBECONFIG, ~/.kube/config, then in-cluster). */
  kubeconfig?: string;
  trustDomain: string;
  controlNamespace: string;
  clusterDomain: string;
  listen: { host: string; port: number };
  /** Where InboundServerPolicies is served. */
  policyListen: { host: string; port: number };
  /** Policy of ports no Server selects, for workloads without their own `defaultPolicy`. */
  defaultInboundPolicy: DefaultPolicy;
  /** Networks of the `cluster-*` policies and of authorization policies without a NetworkAuthentication. */
  clusterNetworks: Cidr[];
  /** The admin listener, and the most connections it holds open (more are closed at once and counted). */
  admin: { host: string; port: number; maxConnections: number };
  /** PEM files for a TLS gRPC server; absent with `insecurePlaintext`. */
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  insecurePlaintext: boolean;
  logLevel: string;
  limits: {
    /** Concurrent streams per gRPC connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
    maxConcurrentStreams: number;
    /** Open Get streams in all. */
    maxStreams: number;
    /** Open Get streams of one peer (client identity on mTLS, else remote IP). */
    maxStreamsPerPeer: number;
    /** A connection without a stream for this long is closed. */
    maxConnectionIdleMs: number;
    /** A connection this old (± 10 %) is sent GOAWAY. */
    maxConnectionAgeMs: number;
    /** After that GOAWAY, time its open streams keep before the connection is closed. */
    maxConnectionAgeGraceMs: number;
    /** A connection short of a finished TLS handshake and the HTTP/2 preface + SETTINGS this long after it was accepted is closed. */
    handshakeTimeoutMs: number;
  };
}

/** The largest stream cap or share accepted by the flags. */
const MAX_CAP = 10_000_000;

const DNS_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Parses flags and `MESHTLS_*` environment variables (flags win). Throws ConfigError with a message for the user. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const program = new Command("meshtls-destination")
    .description("The meshtls destination service: tells proxies where a target's endpoints are and which identity each presents.")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) })
    .addOption(new Option("--source <source>", "where services, endpoints and policy come from: file (--registry) or kubernetes (EndpointSlices, Services, Pods, policy.linkerd.io)").env("MESHTLS_SOURCE").default("file"))
    .addOption(new Option("--kubeconfig <file>", "with --source kubernetes: kubeconfig file (default: KUBECONFIG, ~/.kube/config, then in-cluster)").env("MESHTLS_KUBECONFIG"))
    .addOption(new Option("--registry <file>", "YAML or JSON registry of services and endpoints (watched)").env("MESHTLS_REGISTRY_FILE"))
    .addOption(new Option("--trust-domain <domain>", "trust domain of identity names").env("MESHTLS_TRUST_DOMAIN").default("cluster.local"))
    .addOption(new Option("--control-namespace <ns>", "control-plane namespace of identity names").env("MESHTLS_CONTROL_NAMESPACE").default("meshtls"))
    .addOption(new Option("--cluster-domain <domain>", "DNS domain of service names (<svc>.<ns>.svc.<domain>)").env("MESHTLS_CLUSTER_DOMAIN").default("cluster.local"))
    .addOption(new Option("--listen <addr>", "gRPC listen address").env("MESHTLS_LISTEN").default("0.0.0.0:8086"))
    .addOption(new Option("--policy-addr <addr>", "gRPC listen address of the inbound policy API (default: --listen's host, port 8090; port 0 when --listen's port is 0)").env("MESHTLS_POLICY_ADDR"))
    .addOption(new Option("--default-inbound-policy <policy>", `policy of ports without a Server (${DEFAULT_POLICIES.join(", ")})`).env("MESHTLS_DEFAULT_INBOUND_POLICY").default("all-unauthenticated"))
    .addOption(new Option("--cluster-networks <cidrs>", "comma-separated networks of the cluster-* policies and of authorization policies without a NetworkAuthentication").env("MESHTLS_CLUSTER_NETWORKS").default("10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"))
    .addOption(new Option("--admin <addr>", "admin listen address (/metrics, /live, /ready); loopback unless set, e.g. :9996 for probes and scraping").env("MESHTLS_ADMIN").default("127.0.0.1:9996"))
    .addOption(new Option("--tls-cert <file>", "PEM certificate chain the gRPC server presents").env("MESHTLS_TLS_CERT"))
    .addOption(new Option("--tls-key <file>", "PEM private key of --tls-cert").env("MESHTLS_TLS_KEY"))
    .addOption(new Option("--tls-client-ca <file>", "PEM trust anchors; when set, clients must present a certificate they sign").env("MESHTLS_TLS_CLIENT_CA"))
    // Not `.env()`: commander treats any value of a boolean flag's variable, even "false", as set.
    .addOption(new Option("--insecure-plaintext", "serve plaintext gRPC (loopback listen addresses only; env MESHTLS_INSECURE_PLAINTEXT=true|false)"))
    .addOption(new Option("--log-level <level>", `pino log level (${LOG_LEVELS.join(", ")})`).env("MESHTLS_LOG_LEVEL").default("info"))
    // Twice a meshtls proxy's 1,000 resolutions (one Get each): one connection cannot pin more than a proxy ever needs.
    .addOption(new Option("--max-concurrent-streams <n>", "concurrent streams per gRPC connection").env("MESHTLS_MAX_CONCURRENT_STREAMS").default("2000"))
    .addOption(new Option("--max-streams <n>", "open Get streams in all; more are refused with RESOURCE_EXHAUSTED").env("MESHTLS_MAX_STREAMS").default("100000"))
    .addOption(new Option("--max-streams-per-peer <n>", "open Get streams of one peer (client identity on mTLS, else remote IP)").env("MESHTLS_MAX_STREAMS_PER_PEER").default("10000"))
    .addOption(new Option("--max-connection-idle <duration>", "a gRPC connection without a stream for this long is closed").env("MESHTLS_MAX_CONNECTION_IDLE").default("5m"))
    .addOption(new Option("--max-connection-age <duration>", "a gRPC connection this old (±10 %) is sent GOAWAY; clients reconnect").env("MESHTLS_MAX_CONNECTION_AGE").default("1h"))
    .addOption(new Option("--max-connection-age-grace <duration>", "after that GOAWAY, time its open Get streams keep before the connection is closed").env("MESHTLS_MAX_CONNECTION_AGE_GRACE").default("5m"))
    .addOption(new Option("--handshake-timeout <duration>", "a gRPC connection that has not finished its TLS handshake and sent the HTTP/2 preface and SETTINGS this long after connecting is closed").env("MESHTLS_HANDSHAKE_TIMEOUT").default("10s"))
    .addOption(new Option("--admin-max-connections <n>", "open admin connections at most; more are closed at once and counted in tcp_connections_refused_total").env("MESHTLS_ADMIN_MAX_CONNECTIONS").default("256"));
  parseCommandLine(program, argv, env);
  const o = program.opts<Record<string, string | boolean | undefined>>();
  const source = String(o["source"]);
  if (source !== "file" && source !== "kubernetes") throw new ConfigError(`--source: "${source}" is not one of file, kubernetes`);
  const kubeconfig = typeof o["kubeconfig"] === "string" && o["kubeconfig"] !== "" ? o["kubeconfig"] : undefined;
  if (source === "file" && kubeconfig !== undefined) throw new ConfigError("--kubeconfig needs --source kubernetes");
  if (source === "kubernetes" && typeof o["registry"] === "string") throw new ConfigError("--registry and --source kubernetes exclude each other");
  const registryFile = source === "kubernetes" ? "" : o["registry"];
  if (typeof registryFile !== "string" || (source === "file" && registryFile === "")) throw new ConfigError("--registry (or MESHTLS_REGISTRY_FILE) is required");
  const listen = parseAddress(String(o["listen"]), "--listen");
  // Port 0 (tests, several services on one machine) must not pin the policy API to 8090.
  const policyListen =
    typeof o["policyAddr"] === "string" ? parseAddress(o["policyAddr"], "--policy-addr") : { host: listen.host, port: listen.port === 0 ? 0 : 8090 };
  const defaultInboundPolicy = String(o["defaultInboundPolicy"]);
  if (!(DEFAULT_POLICIES as readonly string[]).includes(defaultInboundPolicy)) {
    throw new ConfigError(`--default-inbound-policy: "${defaultInboundPolicy}" is not one of ${DEFAULT_POLICIES.join(", ")}`);
  }
  const clusterNetworks = String(o["clusterNetworks"])
    .split(",")
    .map((text) => text.trim())
    .filter((text) => text !== "")
    .map((text) => {
      try {
        return parseCidr(text);
      } catch (error) {
        if (error instanceof DestinationError) throw new ConfigError(`--cluster-networks: ${error.message}`);
        throw error;
      }
    });
  if (clusterNetworks.length === 0) throw new ConfigError("--cluster-networks: give at least one network");
  const insecurePlaintext = o["insecurePlaintext"] === true || parseBooleanEnv(env, "MESHTLS_INSECURE_PLAINTEXT");
  const certFile = o["tlsCert"];
  const keyFile = o["tlsKey"];
  const clientCaFile = o["tlsClientCa"];
  let tls: Config["tls"];
  if (typeof certFile === "string" || typeof keyFile === "string") {
    if (typeof certFile !== "string" || typeof keyFile !== "string") throw new ConfigError("--tls-cert and --tls-key go together");
    if (insecurePlaintext) throw new ConfigError("--insecure-plaintext and --tls-cert exclude each other");
    tls = typeof clientCaFile === "string" ? { certFile, keyFile, clientCaFile } : { certFile, keyFile };
  } else if (typeof clientCaFile === "string") {
    throw new ConfigError("--tls-client-ca needs --tls-cert and --tls-key");
  } else if (!insecurePlaintext) {
    throw new ConfigError("give --tls-cert and --tls-key, or --insecure-plaintext on a loopback --listen address");
  } else if (!isLoopback(listen.host)) {
    throw new ConfigError(`--insecure-plaintext is allowed only on a loopback listen address; --listen is ${listen.host}`);
  } else if (!isLoopback(policyListen.host)) {
    throw new ConfigError(`--insecure-plaintext is allowed only on a loopback listen address; --policy-addr is ${policyListen.host}`);
  }
  const trustDomain = String(o["trustDomain"]);
  if (!DNS_NAME.test(trustDomain) || trustDomain.length > 253) throw new ConfigError(`--trust-domain: "${trustDomain}" is not a lowercase DNS name`);
  const controlNamespace = String(o["controlNamespace"]);
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(controlNamespace)) throw new ConfigError(`--control-namespace: "${controlNamespace}" is not a DNS-1123 label`);
  const clusterDomain = String(o["clusterDomain"]);
  if (!DNS_NAME.test(clusterDomain)) throw new ConfigError(`--cluster-domain: "${clusterDomain}" is not a lowercase DNS name`);
  const logLevel = String(o["logLevel"]);
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(", ")}`);
  const count = (key: string, flag: string) => parseCount(String(o[key]), flag, { min: 1, max: MAX_CAP });
  const positiveMs = (key: string, flag: string): number => {
    const ms = parseDurationMs(String(o[key]), flag);
    if (ms < 1) throw new ConfigError(`${flag} must be at least 1ms`);
    return ms;
  };
  const limits: Config["limits"] = {
    maxConcurrentStreams: count("maxConcurrentStreams", "--max-concurrent-streams"),
    maxStreams: count("maxStreams", "--max-streams"),
    maxStreamsPerPeer: count("maxStreamsPerPeer", "--max-streams-per-peer"),
    maxConnectionIdleMs: positiveMs("maxConnectionIdle", "--max-connection-idle"),
    maxConnectionAgeMs: positiveMs("maxConnectionAge", "--max-connection-age"),
    maxConnectionAgeGraceMs: positiveMs("maxConnectionAgeGrace", "--max-connection-age-grace"),
    handshakeTimeoutMs: positiveMs("handshakeTimeout", "--handshake-timeout"),
  };
  if (limits.maxStreamsPerPeer > limits.maxStreams) {
    throw new ConfigError(`--max-streams-per-peer (${limits.maxStreamsPerPeer}) must not exceed --max-streams (${limits.maxStreams})`);
  }
  const config: Config = {
    source,
    registryFile,
    ...(kubeconfig === undefined ? {} : { kubeconfig }),
    trustDomain,
    controlNamespace,
    clusterDomain,
    listen,
    policyListen,
    defaultInboundPolicy: defaultInboundPolicy as DefaultPolicy,
    clusterNetworks,
    admin: { ...parseAddress(String(o["admin"]), "--admin"), maxConnections: count("adminMaxConnections", "--admin-max-connections") },
    insecurePlaintext,
    logLevel,
    limits,
  };
  if (tls) config.tls = tls;
  return config;
}
