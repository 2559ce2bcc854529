import { Command, Option } from "commander";
import { ConfigError, FOLLOW_DEFAULTS, parseBooleanEnv, parseCommandLine, parseCount, parseDurationMs } from "@meshtls/runtime";
import { isIP } from "node:net";
import tls from "node:tls";
import { DEFAULT_TLS_GROUPS, flagPolicies, formatHostPort, groupsForOpenssl, meshTlsAuthentication, parseDefaultPolicy, parseHostPort, ProxyError } from "@meshtls/proxy-core";
import type { DefaultPolicy, HostPort, PortOverrides, Route, StaticPolicyOptions } from "@meshtls/proxy-core";

export { ConfigError, parseDurationMs };

/** The validated configuration of meshtls-proxy. */
export interface Config {
  identity: string;
  tokenFile: string;
  trustAnchorsFile: string;
  identityAddress: string;
  /** Expected identity of the identity service; undefined with insecure plaintext. */
  identityServerName?: string;
  identityInsecurePlaintext: boolean;
  destinationAddress: string;
  destinationServerName?: string;
  destinationInsecurePlaintext: boolean;
  contextToken: string;
  /** The inbound policy API (`InboundServerPolicies`); absent: the flags' policy alone. */
  policyAddress?: string;
  /** Identity the policy controller must present; default --destination-name. */
  policyServerName?: string;
  /** Linkerd's workload string, `{"ns":"<ns>","pod":"<pod>"}`, sent in every WatchPort. */
  workloadName?: string;
  inbound: HostPort;
  outbound: HostPort;
  admin: HostPort;
  /** `--tap-addr`: the tap stream over mutual TLS for `tapAllow`'s identities; absent (the default): tap is served on the admin port to the local host only. */
  tapAddress?: HostPort;
  /** `--tap-allow`: client identities allowed on `tapAddress` (exact, `*.suffix`, `*`); empty refuses every client. */
  tapAllow: string[];
  /** Transparent mode: --outbound serves redirected connections (original destinations), --inbound reads redirected ports. */
  transparent: boolean;
  /** Transparent mode's check of the outbound redirect (--redirect-check-*); `intervalMs` 0: off. */
  redirectCheck: { intervalMs: number; probe: HostPort };
  /** Close open inbound mesh connections when the identity they were made with ends (--inbound-close-at-identity-end). */
  inboundCloseAtIdentityEnd: boolean;
  workload: HostPort;
  workloadHost: string;
  /** Ports a transport header may name besides the workload's; empty: any but the proxy's own. */
  inboundPorts: number[];
  outboundBind?: string;
  /** The flags' policy: the proxy's default until the policy controller answers for a port, and the whole policy without one. */
  policy: StaticPolicyOptions & { defaultPolicy: DefaultPolicy };
  /** Ports forwarded without detection or policy. */
  skipPorts: number[];
  routes: Route[];
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  detectTimeoutMs: number;
  drainTimeoutMs: number;
  /** `--trust-anchors-poll-interval`: backup poll of the trust anchors file, at least 100 ms. */
  trustAnchorsPollIntervalMs: number;
  maxInboundConnections: number;
  maxOutboundConnections: number;
  maxAdminConnections: number;
  logLevel: string;
  /** Mesh TLS key exchange groups, most preferred first (`--tls-groups`). */
  tlsGroups: string[];
  /** One warning per deprecated flag or variable in use, naming its replacement; the app logs them once at start. */
  deprecations: string[];
}

function address(text: string, what: string): HostPort {
  try {
    return parseHostPort(text.trim(), { defaultHost: "0.0.0.0" });
  } catch (error) {
    throw new ConfigError(`${what}: "${text}" is not host:port (e.g. 127.0.0.1:4140, [::1]:4140, :4143)`, { cause: error });
  }
}

/** Whether a listener on `a` and a connection to `b` meet (same address, or either is a wildcard). */
function sameHost(a: string, b: string): boolean {
  const wildcard = (h: string): boolean => h === "0.0.0.0" || h === "::";
  const norm = (h: string): string => (h === "localhost" ? "127.0.0.1" : h.toLowerCase());
  return wildcard(a) || wildcard(b) || norm(a) === norm(b);
}

function redirectCheck(interval: string, probe: string): Config["redirectCheck"] {
  const intervalMs = interval.trim() === "0" ? 0 : parseDurationMs(interval, "--redirect-check-interval");
  const probeAddress = address(probe, "--redirect-check-addr");
  if (isIP(probeAddress.host) === 0 || probeAddress.port === 0) throw new ConfigError(`--redirect-check-addr: "${probe}" is not ip:port (e.g. 1.1.1.1:20001)`);
  return { intervalMs, probe: probeAddress };
}

function ports(text: string | undefined, what: string): number[] {
  if (text === undefined || text.trim() === "") return [];
  return text.split(",").map((part) => {
    const port = Number(part.trim());
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${what}: "${part}" is not a port`);
    return port;
  });
}

/** `--tls-groups`: colon-separated group names this node's OpenSSL knows. @throws ConfigError */
function tlsGroups(text: string): string[] {
  const groups = text.split(":").map((s) => s.trim()).filter((s) => s !== "");
  let ecdhCurve: string;
  try {
    ecdhCurve = groupsForOpenssl(groups);
  } catch (error) {
    if (error instanceof ProxyError) throw new ConfigError(`--tls-groups: ${error.message}`);
    throw error;
  }
  try {
    tls.createSecureContext({ ecdhCurve });
  } catch {
    throw new ConfigError(`--tls-groups: this node's OpenSSL (${process.versions.openssl}) does not know every group of ${text}`);
  }
  return groups;
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** `--tap-allow` (repeatable, comma-separated; env comma-separated): each entry checked like a policy's allowed identities. @throws ConfigError */
function tapAllow(flag: string[] | undefined, env: string | undefined): string[] {
  const entries = (flag ?? (env === undefined ? [] : [env])).flatMap((item) => item.split(",")).map((s) => s.trim()).filter((s) => s !== "");
  try {
    meshTlsAuthentication(entries);
  } catch (error) {
    if (error instanceof ProxyError) throw new ConfigError(`--tap-allow: ${error.message}`);
    throw error;
  }
  return entries;
}
/** Repeatable flags also read from one env variable holding `;`-separated items. */
const list = (flag: string[] | undefined, env: string | undefined): string[] =>
  flag ?? (env === undefined || env.trim() === "" ? [] : env.split(";").map((s) => s.trim()).filter((s) => s !== ""));

/**
 * `--trust-anchors-poll-interval` (the identity service's name for the same
 * setting), or its deprecated alias `--trust-anchors-poll` /
 * `MESHTLS_PROXY_TRUST_ANCHORS_POLL`: the new name wins when both are set,
 * whether as flag or variable. Either way a deprecation is recorded. Values
 * below 100 ms are raised to 100 ms. @throws ConfigError
 */
function trustAnchorsPollInterval(program: Command, deprecations: string[]): number {
  const o = program.opts<Record<string, string | undefined>>();
  const alias = o["trustAnchorsPoll"];
  let value = String(o["trustAnchorsPollInterval"]);
  let flag = "--trust-anchors-poll-interval";
  if (alias !== undefined && alias !== "") {
    const fromEnv = program.getOptionValueSource("trustAnchorsPoll") === "env";
    const [old, replacement] = fromEnv ? ["MESHTLS_PROXY_TRUST_ANCHORS_POLL", "MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL"] : ["--trust-anchors-poll", "--trust-anchors-poll-interval"];
    if (program.getOptionValueSource("trustAnchorsPollInterval") === "default") {
      value = alias;
      flag = "--trust-anchors-poll";
      deprecations.push(`${old} is deprecated: use ${replacement}`);
    } else {
      deprecations.push(`${old} is deprecated and ignored: --trust-anchors-poll-interval (or MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL) is set and wins; remove ${old}`);
    }
  }
  return Math.max(100, parseDurationMs(value, flag));
}

/** Checks Linkerd's workload string `{"ns":"<namespace>","pod":"<name>"}`. @throws ConfigError */
export function parseWorkloadName(text: string): { ns: string; pod: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const dns1123 = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
  const { ns, pod } = (typeof value === "object" && value !== null ? value : {}) as { ns?: unknown; pod?: unknown };
  if (typeof ns !== "string" || typeof pod !== "string" || !dns1123.test(ns) || !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(pod)) {
    throw new ConfigError(`--workload-name: ${JSON.stringify(text)} is not {"ns":"<namespace>","pod":"<name>"} (lower-case DNS names)`);
  }
  return { ns, pod };
}

/** Parses flags and `MESHTLS_PROXY_*` environment variables (flags win). @throws ConfigError */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  const program = new Command("meshtls-proxy")
    .description("The meshtls per-workload proxy: mTLS between meshed workloads, with every connection's TLS state in metrics.")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s), writeOut: (s) => process.stdout.write(s) })
    .addOption(new Option("--identity <name>", "this workload's identity, <sa>.<ns>.serviceaccount.identity.<control-ns>.<td>").env("MESHTLS_PROXY_IDENTITY"))
    .addOption(new Option("--token-file <file>", "ServiceAccount token file (re-read for every request)").env("MESHTLS_PROXY_TOKEN_FILE"))
    .addOption(new Option("--trust-anchors <file>", "PEM bundle of trust anchors; watched and reloaded").env("MESHTLS_PROXY_TRUST_ANCHORS"))
    .addOption(new Option("--identity-addr <host:port>", "identity service address").env("MESHTLS_PROXY_IDENTITY_ADDR"))
    .addOption(new Option("--identity-name <name>", "identity the identity service must present").env("MESHTLS_PROXY_IDENTITY_NAME"))
    .addOption(new Option("--identity-insecure-plaintext", "talk plaintext gRPC to the identity service (loopback only); env MESHTLS_PROXY_IDENTITY_INSECURE_PLAINTEXT=true|1|false|0"))
    .addOption(new Option("--destination-addr <host:port>", "destination service address").env("MESHTLS_PROXY_DESTINATION_ADDR"))
    .addOption(new Option("--destination-name <name>", "identity the destination service must present").env("MESHTLS_PROXY_DESTINATION_NAME"))
    .addOption(new Option("--destination-insecure-plaintext", "talk plaintext gRPC to the destination service (loopback only); env MESHTLS_PROXY_DESTINATION_INSECURE_PLAINTEXT=true|1|false|0"))
    .addOption(new Option("--context-token <json>", 'destination context token, e.g. {"ns":"default"}').env("MESHTLS_PROXY_CONTEXT_TOKEN"))
    .addOption(new Option("--policy-addr <host:port>", "inbound policy API address (meshtls-destination's --policy-addr); without it the policy flags below are the whole policy, with it they are each port's default until the controller answers").env("MESHTLS_PROXY_POLICY_ADDR"))
    .addOption(new Option("--policy-name <name>", "identity the policy controller must present (default: --destination-name)").env("MESHTLS_PROXY_POLICY_NAME"))
    .addOption(new Option("--workload-name <json>", 'this workload as the policy controller knows it, {"ns":"<namespace>","pod":"<name>"}; required with --policy-addr').env("MESHTLS_PROXY_WORKLOAD_NAME"))
    .addOption(new Option("--inbound <addr>", "inbound listen address").env("MESHTLS_PROXY_INBOUND").default("0.0.0.0:4143"))
    .addOption(new Option("--outbound <addr>", "outbound HTTP proxy listen address").env("MESHTLS_PROXY_OUTBOUND").default("127.0.0.1:4140"))
    .addOption(new Option("--admin <addr>", "admin listen address").env("MESHTLS_PROXY_ADMIN").default("127.0.0.1:4191"))
    .addOption(new Option("--tap-addr <addr>", "serve the tap stream (GET /tap) on this address over mutual TLS to the --tap-allow identities; off by default (the admin port serves /tap to the local host only)").env("MESHTLS_PROXY_TAP_ADDR"))
    .addOption(new Option("--tap-allow <identities>", "comma-separated client identities allowed on --tap-addr, exact, *.suffix or * (repeatable; default none: every client is refused)").env("MESHTLS_PROXY_TAP_ALLOW").argParser(collect))
    .addOption(new Option("--transparent", "transparent mode, behind meshtls init's nat rules: --outbound takes the connections redirected to it, each to its original destination (instead of the HTTP proxy), and --inbound serves a redirected connection's original port (Linux; needs the SO_ORIGINAL_DST addon); env MESHTLS_PROXY_TRANSPARENT=true|1|false|0"))
    .addOption(new Option("--redirect-check-interval <duration>", "with --transparent, behind meshtls init's rules (not Linkerd's proxy-init: they lack the probe rule): check at start and this often that the outbound redirect is in place (the proxy's probe to --redirect-check-addr must reach --outbound); while it is missing /ready answers 503; 0 (the default) turns the check off").env("MESHTLS_PROXY_REDIRECT_CHECK_INTERVAL").default("0"))
    .addOption(new Option("--redirect-check-addr <ip:port>", "the redirect check's probe address, the same as meshtls init --redirect-check-addr: one nothing answers, so that only the redirect brings the probe to --outbound (as Linkerd's network validator); with --transparent, connections to it are answered by the proxy, never forwarded").env("MESHTLS_PROXY_REDIRECT_CHECK_ADDR").default("1.1.1.1:20001"))
    .addOption(new Option("--workload <addr>", "the local workload's address for inbound connections without a transport header").env("MESHTLS_PROXY_WORKLOAD"))
    .addOption(new Option("--workload-host <host>", "host the transport header's port is reached on (default: --workload's host)").env("MESHTLS_PROXY_WORKLOAD_HOST"))
    .addOption(new Option("--inbound-ports <ports>", "comma-separated workload ports a meshed client's transport header may name besides --workload's (default: any port but the proxy's own)").env("MESHTLS_PROXY_INBOUND_PORTS"))
    .addOption(new Option("--outbound-bind <ip>", "local address for connections to endpoints").env("MESHTLS_PROXY_OUTBOUND_BIND"))
    .addOption(new Option("--default-policy <policy>", "all-unauthenticated | all-authenticated | cluster-authenticated | cluster-unauthenticated | deny | audit (with --policy-addr: until the controller answers)").env("MESHTLS_PROXY_DEFAULT_POLICY").default("all-unauthenticated"))
    .addOption(new Option("--cluster-networks <cidrs>", "comma-separated CIDRs for cluster-authenticated").env("MESHTLS_PROXY_CLUSTER_NETWORKS"))
    .addOption(new Option("--require-identity-ports <ports>", "comma-separated ports that require a client identity").env("MESHTLS_PROXY_REQUIRE_IDENTITY_PORTS"))
    .addOption(new Option("--opaque-ports <ports>", "comma-separated server-speaks-first ports (no detection)").env("MESHTLS_PROXY_OPAQUE_PORTS"))
    .addOption(new Option("--skip-ports <ports>", "comma-separated ports forwarded without TLS or policy").env("MESHTLS_PROXY_SKIP_PORTS"))
    .addOption(new Option("--port-policy <port=policy>", "a port's own default policy (repeatable; env: ';'-separated)").argParser(collect))
    .addOption(new Option("--allow <port=identities>", "allowed client identities of a port, comma-separated, exact or *.suffix (repeatable; env: ';'-separated)").argParser(collect))
    .addOption(new Option("--route <listen=authority>", "fixed route: a local listener for one authority, `,opaque` to forward bytes without protocol detection (repeatable; env: ';'-separated)").argParser(collect))
    .addOption(new Option("--connect-timeout <duration>", "per-endpoint connect + handshake").env("MESHTLS_PROXY_CONNECT_TIMEOUT").default("3s"))
    .addOption(new Option("--idle-timeout <duration>", "close connections idle this long").env("MESHTLS_PROXY_IDLE_TIMEOUT").default("1h"))
    .addOption(new Option("--inbound-close-at-identity-end", "close open inbound mesh connections when the identity they were made with ends: at the earlier of the client's and this proxy's leaf expiry, and at a trust-bundle change the client's leaf no longer chains to (off: long-lived streams survive certificate rotation, as in Linkerd); env MESHTLS_PROXY_INBOUND_CLOSE_AT_IDENTITY_END=true|1|false|0"))
    .addOption(new Option("--detect-timeout <duration>", "TLS detection and handshake bound").env("MESHTLS_PROXY_DETECT_TIMEOUT").default("10s"))
    .addOption(new Option("--drain-timeout <duration>", "how long SIGTERM waits for open connections").env("MESHTLS_PROXY_DRAIN_TIMEOUT").default("10s"))
    .addOption(new Option("--trust-anchors-poll-interval <duration>", "backup poll of the trust anchors file").env("MESHTLS_PROXY_TRUST_ANCHORS_POLL_INTERVAL").default(`${FOLLOW_DEFAULTS.pollIntervalMs / 1000}s`))
    .addOption(new Option("--trust-anchors-poll <duration>", "deprecated: --trust-anchors-poll-interval").env("MESHTLS_PROXY_TRUST_ANCHORS_POLL").hideHelp())
    .addOption(new Option("--max-inbound-connections <n>", "connections open at once on the inbound listener; more are closed at once").env("MESHTLS_PROXY_MAX_INBOUND_CONNECTIONS").default("10000"))
    .addOption(new Option("--max-outbound-connections <n>", "connections open at once on the outbound HTTP proxy, and on each route").env("MESHTLS_PROXY_MAX_OUTBOUND_CONNECTIONS").default("10000"))
    .addOption(new Option("--max-admin-connections <n>", "connections open at once on the admin listener").env("MESHTLS_PROXY_MAX_ADMIN_CONNECTIONS").default("100"))
    .addOption(new Option("--tls-groups <groups>", "mesh TLS key exchange groups, most preferred first, colon-separated (OpenSSL names); the ClientHello carries key shares for the first and, after a post-quantum first, the first classical one").env("MESHTLS_PROXY_TLS_GROUPS").default(DEFAULT_TLS_GROUPS.join(":")))
    .addOption(new Option("--log-level <level>", "pino log level").env("MESHTLS_PROXY_LOG_LEVEL").default("info"));
  parseCommandLine(program, argv, env);
  const o = program.opts<Record<string, string | boolean | string[] | undefined>>();
  const str = (key: string): string | undefined => (typeof o[key] === "string" && o[key] !== "" ? (o[key] as string) : undefined);
  const required = (key: string, flag: string, envName: string): string => {
    const v = str(key);
    if (v === undefined) throw new ConfigError(`${flag} (or ${envName}) is required`);
    return v;
  };
  // A boolean flag given on the command line is on; its variable is always parsed strictly (a malformed one is refused).
  const flagOrEnv = (key: string, envName: string): boolean => {
    const fromEnv = parseBooleanEnv(env, envName);
    return o[key] === true || fromEnv;
  };

  const identityInsecurePlaintext = flagOrEnv("identityInsecurePlaintext", "MESHTLS_PROXY_IDENTITY_INSECURE_PLAINTEXT");
  const destinationInsecurePlaintext = flagOrEnv("destinationInsecurePlaintext", "MESHTLS_PROXY_DESTINATION_INSECURE_PLAINTEXT");
  const identityServerName = str("identityName");
  const destinationServerName = str("destinationName");
  if (!identityInsecurePlaintext && identityServerName === undefined) throw new ConfigError("--identity-name (or MESHTLS_PROXY_IDENTITY_NAME) is required unless --identity-insecure-plaintext");
  if (!destinationInsecurePlaintext && destinationServerName === undefined) throw new ConfigError("--destination-name (or MESHTLS_PROXY_DESTINATION_NAME) is required unless --destination-insecure-plaintext");
  const identityAddress = required("identityAddr", "--identity-addr", "MESHTLS_PROXY_IDENTITY_ADDR");
  const destinationAddress = required("destinationAddr", "--destination-addr", "MESHTLS_PROXY_DESTINATION_ADDR");
  const loopback = (text: string): boolean => /^(127\.\d+\.\d+\.\d+|\[::1\]|localhost):\d+$/.test(text);
  if (identityInsecurePlaintext && !loopback(identityAddress)) throw new ConfigError(`--identity-insecure-plaintext needs a loopback --identity-addr, not ${identityAddress}`);
  if (destinationInsecurePlaintext && !loopback(destinationAddress)) throw new ConfigError(`--destination-insecure-plaintext needs a loopback --destination-addr, not ${destinationAddress}`);

  const policyAddress = str("policyAddr");
  const policyServerName = str("policyName") ?? destinationServerName;
  const workloadName = str("workloadName");
  if (policyAddress !== undefined) {
    if (workloadName === undefined) throw new ConfigError("--workload-name (or MESHTLS_PROXY_WORKLOAD_NAME) is required with --policy-addr");
    if (destinationInsecurePlaintext && !loopback(policyAddress)) throw new ConfigError(`--destination-insecure-plaintext also applies to the policy API: it needs a loopback --policy-addr, not ${policyAddress}`);
    if (!destinationInsecurePlaintext && policyServerName === undefined) throw new ConfigError("--policy-name (or --destination-name) is required with --policy-addr unless --destination-insecure-plaintext");
  }
  if (workloadName !== undefined) parseWorkloadName(workloadName);

  let defaultPolicy: DefaultPolicy;
  const portPolicies: Record<number, PortOverrides> = {};
  const port = (n: number): PortOverrides => (portPolicies[n] ??= {});
  try {
    defaultPolicy = parseDefaultPolicy(String(o["defaultPolicy"]));
    for (const item of list(o["portPolicy"] as string[] | undefined, env["MESHTLS_PROXY_PORT_POLICIES"])) {
      const [p = "", policy = ""] = item.split("=");
      const n = ports(p, "--port-policy")[0];
      if (n === undefined) throw new ConfigError(`--port-policy: "${item}" is not port=policy`);
      port(n).policy = parseDefaultPolicy(policy);
    }
  } catch (error) {
    if (error instanceof ProxyError) throw new ConfigError(error.message);
    throw error;
  }
  for (const n of ports(str("requireIdentityPorts"), "--require-identity-ports")) port(n).requireIdentity = true;
  for (const n of ports(str("opaquePorts"), "--opaque-ports")) port(n).opaque = true;
  for (const item of list(o["allow"] as string[] | undefined, env["MESHTLS_PROXY_ALLOW"])) {
    const eq = item.indexOf("=");
    const n = ports(item.slice(0, eq), "--allow")[0];
    if (eq < 0 || n === undefined) throw new ConfigError(`--allow: "${item}" is not port=identity[,identity...]`);
    port(n).allowedIdentities = item.slice(eq + 1).split(",").map((s) => s.trim()).filter((s) => s !== "");
  }
  const routes: Route[] = list(o["route"] as string[] | undefined, env["MESHTLS_PROXY_ROUTES"]).map((item) => {
    const eq = item.indexOf("=");
    if (eq < 0) throw new ConfigError(`--route: "${item}" is not listen=authority[,opaque] (e.g. 127.0.0.1:9000=api.default.svc.cluster.local:80)`);
    // `,opaque`: a server-first or otherwise non-HTTP authority, forwarded as bytes without protocol detection.
    const [authority = "", protocol] = item.slice(eq + 1).split(",");
    if (protocol !== undefined && protocol !== "opaque") throw new ConfigError(`--route: "${item}": the only option after the authority is ",opaque"`);
    return { listen: address(item.slice(0, eq), "--route"), authority, ...(protocol === "opaque" ? { protocol } : {}) };
  });

  const workload = address(required("workload", "--workload", "MESHTLS_PROXY_WORKLOAD"), "--workload");
  const deprecations: string[] = [];
  const config: Config = {
    identity: required("identity", "--identity", "MESHTLS_PROXY_IDENTITY"),
    tokenFile: required("tokenFile", "--token-file", "MESHTLS_PROXY_TOKEN_FILE"),
    trustAnchorsFile: required("trustAnchors", "--trust-anchors", "MESHTLS_PROXY_TRUST_ANCHORS"),
    identityAddress,
    identityInsecurePlaintext,
    destinationAddress,
    destinationInsecurePlaintext,
    contextToken: str("contextToken") ?? "",
    inbound: address(String(o["inbound"]), "--inbound"),
    outbound: address(String(o["outbound"]), "--outbound"),
    admin: address(String(o["admin"]), "--admin"),
    tapAllow: tapAllow(o["tapAllow"] as string[] | undefined, env["MESHTLS_PROXY_TAP_ALLOW"]),
    transparent: flagOrEnv("transparent", "MESHTLS_PROXY_TRANSPARENT"),
    redirectCheck: redirectCheck(String(o["redirectCheckInterval"]), String(o["redirectCheckAddr"])),
    inboundCloseAtIdentityEnd: flagOrEnv("inboundCloseAtIdentityEnd", "MESHTLS_PROXY_INBOUND_CLOSE_AT_IDENTITY_END"),
    workload,
    workloadHost: str("workloadHost") ?? workload.host,
    inboundPorts: ports(str("inboundPorts"), "--inbound-ports"),
    skipPorts: ports(str("skipPorts"), "--skip-ports"),
    policy: {
      defaultPolicy,
      ports: portPolicies,
      ...(str("clusterNetworks") === undefined ? {} : { clusterNetworks: (str("clusterNetworks") ?? "").split(",").map((s) => s.trim()) }),
    },
    routes,
    connectTimeoutMs: parseDurationMs(String(o["connectTimeout"]), "--connect-timeout"),
    idleTimeoutMs: parseDurationMs(String(o["idleTimeout"]), "--idle-timeout"),
    detectTimeoutMs: parseDurationMs(String(o["detectTimeout"]), "--detect-timeout"),
    drainTimeoutMs: parseDurationMs(String(o["drainTimeout"]), "--drain-timeout"),
    trustAnchorsPollIntervalMs: trustAnchorsPollInterval(program, deprecations),
    maxInboundConnections: parseCount(String(o["maxInboundConnections"]), "--max-inbound-connections", { min: 1, max: 1_000_000 }),
    maxOutboundConnections: parseCount(String(o["maxOutboundConnections"]), "--max-outbound-connections", { min: 1, max: 1_000_000 }),
    maxAdminConnections: parseCount(String(o["maxAdminConnections"]), "--max-admin-connections", { min: 1, max: 100_000 }),
    logLevel: String(o["logLevel"]),
    tlsGroups: tlsGroups(String(o["tlsGroups"])),
    deprecations,
  };
  if (identityServerName !== undefined) config.identityServerName = identityServerName;
  if (destinationServerName !== undefined) config.destinationServerName = destinationServerName;
  // A workload on one of the proxy's own listeners would loop every inbound connection through the proxy.
  const listeners: [string, HostPort][] = [["--inbound", config.inbound], ["--outbound", config.outbound], ["--admin", config.admin], ...routes.map((r): [string, HostPort] => ["--route", r.listen])];
  for (const [flag, listener] of listeners) {
    if (listener.port !== 0 && listener.port === workload.port && sameHost(listener.host, workload.host)) {
      throw new ConfigError(`--workload ${formatHostPort(workload.host, workload.port)} is the proxy's own ${flag} listener: every inbound connection would loop through the proxy`);
    }
  }
  try {
    flagPolicies(config.policy);
  } catch (error) {
    if (error instanceof ProxyError) throw new ConfigError(error.message);
    throw error;
  }
  const tapAddr = str("tapAddr");
  if (tapAddr !== undefined) config.tapAddress = address(tapAddr, "--tap-addr");
  else if (config.tapAllow.length > 0) throw new ConfigError("--tap-allow needs --tap-addr");
  if (policyAddress !== undefined) config.policyAddress = policyAddress;
  if (policyServerName !== undefined && policyAddress !== undefined) config.policyServerName = policyServerName;
  if (workloadName !== undefined) config.workloadName = workloadName;
  const bind = str("outboundBind");
  if (bind !== undefined) config.outboundBind = bind;
  return config;
}
