/**
 * meshtls-injector's configuration: flags and `MESHTLS_*` environment
 * variables, validated. Exported (`meshtls-injector/config`) so that
 * `meshtls install`'s tests parse the Deployment's arguments with this parser.
 */
import { Command, Option } from "commander";
import { DEFAULT_POLICIES } from "@meshtls/destination";
import { ConfigError, parseAddress, parseBooleanEnv, parseCommandLine, parseCount } from "@meshtls/runtime";

export { ConfigError };

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** The validated configuration of meshtls-injector. */
export interface Config {
  listen: { host: string; port: number };
  tlsCert: string;
  tlsKey: string;
  trustAnchors: string;
  controlNamespace: string;
  trustDomain: string;
  clusterDomain: string;
  proxyImage?: string;
  initImage?: string;
  defaultInboundPolicy: string;
  nativeSidecar: boolean;
  denyOnError: boolean;
  kubeconfig?: string;
  namespaceLookup: boolean;
  maxBodyBytes: number;
  logLevel: string;
}

/** Parses flags and `MESHTLS_*` environment variables (flags win). @throws ConfigError */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const program = new Command("meshtls-injector")
    .description("Mutating admission webhook: meshes pods annotated linkerd.io/inject: enabled (or in such a namespace) with meshtls-proxy.")
    .exitOverride()
    .addOption(new Option("--listen <addr>", "HTTPS listen address").env("MESHTLS_LISTEN").default("0.0.0.0:8443"))
    .addOption(new Option("--tls-cert <file>", "PEM certificate the webhook presents (for meshtls-injector.<ns>.svc)").env("MESHTLS_TLS_CERT"))
    .addOption(new Option("--tls-key <file>", "PEM private key of --tls-cert").env("MESHTLS_TLS_KEY"))
    .addOption(new Option("--trust-anchors <file>", "trust anchors PEM (its SHA-256 goes on each pod)").env("MESHTLS_TRUST_ANCHORS"))
    .addOption(new Option("--control-namespace <ns>", "control-plane namespace").env("MESHTLS_CONTROL_NAMESPACE").default("meshtls"))
    .addOption(new Option("--trust-domain <domain>", "trust domain").env("MESHTLS_TRUST_DOMAIN").default("cluster.local"))
    .addOption(new Option("--cluster-domain <domain>", "DNS domain of service names").env("MESHTLS_CLUSTER_DOMAIN").default("cluster.local"))
    .addOption(new Option("--proxy-image <image>", "meshtls-proxy image").env("MESHTLS_PROXY_IMAGE"))
    .addOption(new Option("--init-image <image>", "image running meshtls init").env("MESHTLS_INIT_IMAGE"))
    .addOption(new Option("--default-inbound-policy <policy>", "inbound policy until the policy controller answers").env("MESHTLS_DEFAULT_INBOUND_POLICY").default("all-unauthenticated"))
    .addOption(new Option("--no-native-sidecar", "the proxy as a regular container"))
    .addOption(new Option("--deny-on-error", "refuse a pod that cannot be meshed because of an error (default: create it unmeshed with a warning); env MESHTLS_DENY_ON_ERROR=true|1|false|0"))
    .addOption(new Option("--no-namespace-lookup", "do not read namespaces' annotations from the API server"))
    .addOption(new Option("--kubeconfig <file>", "kubeconfig for namespace lookups (default: KUBECONFIG, ~/.kube/config, then in-cluster)").env("MESHTLS_KUBECONFIG"))
    .addOption(new Option("--max-body-bytes <n>", "largest AdmissionReview accepted; larger ones get 413").env("MESHTLS_MAX_BODY_BYTES").default("10485760"))
    .addOption(new Option("--log-level <level>", "pino log level").env("MESHTLS_LOG_LEVEL").default("info"));
  parseCommandLine(program, argv, env);
  const o = program.opts<Record<string, string | boolean | undefined>>();
  const required = (key: string, flag: string): string => {
    const v = o[key];
    if (typeof v !== "string" || v === "") throw new ConfigError(`${flag} is required`);
    return v;
  };
  const config: Config = {
    listen: parseAddress(String(o.listen), "--listen"),
    tlsCert: required("tlsCert", "--tls-cert"),
    tlsKey: required("tlsKey", "--tls-key"),
    trustAnchors: required("trustAnchors", "--trust-anchors"),
    controlNamespace: String(o.controlNamespace),
    trustDomain: String(o.trustDomain),
    clusterDomain: String(o.clusterDomain),
    defaultInboundPolicy: String(o.defaultInboundPolicy),
    nativeSidecar: o.nativeSidecar !== false,
    denyOnError: o.denyOnError === true || parseBooleanEnv(env, "MESHTLS_DENY_ON_ERROR"),
    namespaceLookup: o.namespaceLookup !== false,
    maxBodyBytes: parseCount(String(o.maxBodyBytes), "--max-body-bytes", { min: 1024, max: 100 * 1024 * 1024 }),
    logLevel: String(o.logLevel),
  };
  // Checked here, not per pod: a bad default would leave every pod unmeshed with a warning.
  if (!(DEFAULT_POLICIES as readonly string[]).includes(config.defaultInboundPolicy)) {
    throw new ConfigError(`--default-inbound-policy: "${config.defaultInboundPolicy}" is not one of ${DEFAULT_POLICIES.join(", ")}`);
  }
  if (!LOG_LEVELS.includes(config.logLevel)) throw new ConfigError(`--log-level: "${config.logLevel}" is not one of ${LOG_LEVELS.join(", ")}`);
  if (typeof o.proxyImage === "string") config.proxyImage = o.proxyImage;
  if (typeof o.initImage === "string") config.initImage = o.initImage;
  if (typeof o.kubeconfig === "string") config.kubeconfig = o.kubeconfig;
  return config;
}
