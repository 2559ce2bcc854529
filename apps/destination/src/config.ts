import { Command, Option } from "commander";
import { ConfigError, isLoopback, parseAddress, parseBooleanEnv, parseCommandLine } from "@meshtls/runtime";

export { ConfigError };

/** The validated configuration of meshtls-destination. */
export interface Config {
  registryFile: string;
  trustDomain: string;
  controlNamespace: string;
  clusterDomain: string;
  listen: { host: string; port: number };
  admin: { host: string; port: number };
  /** PEM files for a TLS gRPC server; absent with `insecurePlaintext`. */
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  insecurePlaintext: boolean;
  logLevel: string;
}

const DNS_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Parses flags and `MESHTLS_*` environment variables (flags win). Throws ConfigError with a message for the user. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const program = new Command("meshtls-destination")
    .description("The meshtls destination service: tells proxies where a target's endpoints are and which identity each presents.")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) })
    .addOption(new Option("--registry <file>", "YAML or JSON registry of services and endpoints (watched)").env("MESHTLS_REGISTRY_FILE"))
    .addOption(new Option("--trust-domain <domain>", "trust domain of identity names").env("MESHTLS_TRUST_DOMAIN").default("cluster.local"))
    .addOption(new Option("--control-namespace <ns>", "control-plane namespace of identity names").env("MESHTLS_CONTROL_NAMESPACE").default("meshtls"))
    .addOption(new Option("--cluster-domain <domain>", "DNS domain of service names (<svc>.<ns>.svc.<domain>)").env("MESHTLS_CLUSTER_DOMAIN").default("cluster.local"))
    .addOption(new Option("--listen <addr>", "gRPC listen address").env("MESHTLS_LISTEN").default("0.0.0.0:8086"))
    .addOption(new Option("--admin <addr>", "admin listen address (/metrics, /live, /ready)").env("MESHTLS_ADMIN").default("0.0.0.0:9996"))
    .addOption(new Option("--tls-cert <file>", "PEM certificate chain the gRPC server presents").env("MESHTLS_TLS_CERT"))
    .addOption(new Option("--tls-key <file>", "PEM private key of --tls-cert").env("MESHTLS_TLS_KEY"))
    .addOption(new Option("--tls-client-ca <file>", "PEM trust anchors; when set, clients must present a certificate they sign").env("MESHTLS_TLS_CLIENT_CA"))
    // Not `.env()`: commander treats any value of a boolean flag's variable, even "false", as set.
    .addOption(new Option("--insecure-plaintext", "serve plaintext gRPC (loopback listen addresses only; env MESHTLS_INSECURE_PLAINTEXT=true|false)"))
    .addOption(new Option("--log-level <level>", `pino log level (${LOG_LEVELS.join(", ")})`).env("MESHTLS_LOG_LEVEL").default("info"));
  parseCommandLine(program, argv, env);
  const o = program.opts<Record<string, string | boolean | undefined>>();
  const registryFile = o["registry"];
  if (typeof registryFile !== "string" || registryFile === "") throw new ConfigError("--registry (or MESHTLS_REGISTRY_FILE) is required");
  const listen = parseAddress(String(o["listen"]), "--listen");
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
  }
  const trustDomain = String(o["trustDomain"]);
  if (!DNS_NAME.test(trustDomain) || trustDomain.length > 253) throw new ConfigError(`--trust-domain: "${trustDomain}" is not a lowercase DNS name`);
  const controlNamespace = String(o["controlNamespace"]);
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(controlNamespace)) throw new ConfigError(`--control-namespace: "${controlNamespace}" is not a DNS-1123 label`);
  const clusterDomain = String(o["clusterDomain"]);
  if (!DNS_NAME.test(clusterDomain)) throw new ConfigError(`--cluster-domain: "${clusterDomain}" is not a lowercase DNS name`);
  const logLevel = String(o["logLevel"]);
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(", ")}`);
  const config: Config = {
    registryFile,
    trustDomain,
    controlNamespace,
    clusterDomain,
    listen,
    admin: parseAddress(String(o["admin"]), "--admin"),
    insecurePlaintext,
    logLevel,
  };
  if (tls) config.tls = tls;
  return config;
}
