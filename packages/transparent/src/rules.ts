import { isIPv4, isIPv6 } from "node:net";
import { TransparentError } from "./errors.ts";

/** The chain inbound connections go through (from PREROUTING), as Linkerd's proxy-init names it. */
export const REDIRECT_CHAIN = "PROXY_INIT_REDIRECT";
/** The chain the workload's outbound connections go through (from OUTPUT). */
export const OUTPUT_CHAIN = "PROXY_INIT_OUTPUT";
/** Port references per multiport rule (a range `a:b` counts 2), iptables' limit. */
export const MULTIPORT_LIMIT = 15;

export type ChainName = typeof REDIRECT_CHAIN | typeof OUTPUT_CHAIN | "PREROUTING" | "OUTPUT";

/** What `meshtls init` installs; defaults are Linkerd's. */
export interface RedirectOptions {
  /** UID the proxy runs as: its own connections are not redirected. Default 2102; 0 adds no rule (as proxy-init). */
  proxyUid?: number;
  /** GID the proxy runs as, also excluded when above 0. Default none. */
  proxyGid?: number;
  /** The proxy's inbound port, where inbound connections are redirected. Default 4143. */
  inboundPort?: number;
  /** The proxy's outbound port, where the workload's connections are redirected. Default 4140. */
  outboundPort?: number;
  /** Inbound ports or ranges (`4190`, `8000:8080`) never redirected. Default `["4190", "4191"]` (the proxy's admin ports). */
  inboundPortsToIgnore?: readonly string[];
  /** Outbound ports or ranges never redirected. Default none. */
  outboundPortsToIgnore?: readonly string[];
  /** Inbound ports to redirect; empty (the default) redirects every inbound port. */
  portsToRedirect?: readonly number[];
  /** Source CIDRs whose inbound connections are not redirected; each applies to its own family. Default none. */
  subnetsToIgnore?: readonly string[];
  /**
   * The proxy's redirect-check probe address (`meshtls-proxy --redirect-check-addr`,
   * e.g. `{ host: "1.1.1.1", port: 20001 }`): adds one rule of ours, first in
   * PROXY_INIT_OUTPUT (before the proxy's UID is excluded), that redirects
   * connections to it to the outbound port, the proxy's own included, so that
   * the proxy can dial its probe itself. Only in its own family's rules.
   * Default none: proxy-init's rules exactly.
   */
  redirectCheckProbe?: { host: string; port: number };
}

/** One nat rule: the matches proxy-init uses, and a `proxy-init/<name>` comment. */
export interface Rule {
  chain: ChainName;
  protocol?: "tcp" | "all";
  /** `-m multiport --dports` list, at most {@link MULTIPORT_LIMIT} port references. */
  dports?: readonly string[];
  /** `--destination-port`. */
  dport?: number;
  /** `-s`: a source CIDR. */
  source?: string;
  /** `-d`: a destination CIDR. */
  destination?: string;
  /** `-o`: an output interface. */
  outInterface?: string;
  uidOwner?: number;
  gidOwner?: number;
  target: "RETURN" | "REDIRECT" | typeof REDIRECT_CHAIN | typeof OUTPUT_CHAIN;
  /** REDIRECT's `--to-port`. */
  toPort?: number;
  /** The comment, without the `proxy-init/` prefix. */
  name: string;
  /** The whole comment of a rule of ours, not proxy-init's. Default `proxy-init/<name>`. */
  comment?: string;
}

/** The comment on the redirect check's rule, the one rule meshtls adds to proxy-init's. */
export const REDIRECT_CHECK_COMMENT = "meshtls/redirect-check";

/** The rules of one family, in the order proxy-init adds them. */
export interface RuleSet {
  family: 4 | 6;
  /** Rules of PROXY_INIT_REDIRECT, then the PREROUTING jump. */
  inbound: Rule[];
  /** Rules of PROXY_INIT_OUTPUT, then the OUTPUT jump. */
  outbound: Rule[];
}

const bad = (message: string): TransparentError => new TransparentError("ERR_TRANSPARENT_OPTIONS", message);

function checkPort(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 65_535) throw bad(`${what}: ${value} is not a port (1-65535)`);
  return value;
}

function checkId(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 4_294_967_294) throw bad(`${what}: ${value} is not a UID/GID`);
  return value;
}

/** A port (`4190`) or range (`8000:8080`, also `8000-8080`) as iptables writes it, with its port-reference count. */
function parsePortOrRange(text: string, what: string): { text: string; count: number } {
  const match = /^(\d{1,5})(?:[:-](\d{1,5}))?$/.exec(text.trim());
  if (match === null) throw bad(`${what}: "${text}" is not a port or a range such as 8000:8080`);
  const low = checkPort(Number(match[1]), what);
  const high = match[2] === undefined ? low : checkPort(Number(match[2]), what);
  if (high < low) throw bad(`${what}: "${text}" is a range whose end is below its start`);
  return low === high ? { text: String(low), count: 1 } : { text: `${low}:${high}`, count: 2 };
}

/** Ports split into multiport lists of at most 15 port references, in order (proxy-init's makeMultiportDestinations). */
export function splitMultiport(ports: readonly string[], what = "port"): string[][] {
  const lists: string[][] = [];
  let current: string[] = [];
  let count = 0;
  for (const port of ports) {
    const parsed = parsePortOrRange(port, what);
    if (count + parsed.count > MULTIPORT_LIMIT) {
      lists.push(current);
      current = [];
      count = 0;
    }
    current.push(parsed.text);
    count += parsed.count;
  }
  if (current.length > 0) lists.push(current);
  return lists;
}

/** The family of a CIDR (`10.0.0.0/8`, `fd00::/8`, or a bare address), or an options error. */
function cidrFamily(cidr: string): 4 | 6 {
  const [address = "", prefix, extra] = cidr.split("/");
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : undefined;
  const max = family === 4 ? 32 : 128;
  if (family === undefined || extra !== undefined || (prefix !== undefined && !(/^\d{1,3}$/.test(prefix) && Number(prefix) <= max))) {
    throw bad(`subnets to ignore: "${cidr}" is not a CIDR such as 10.0.0.0/8 or fd00::/8`);
  }
  return family;
}

function checkProbe(probe: { host: string; port: number } | undefined): { host: string; port: number } | undefined {
  if (probe === undefined) return undefined;
  if (!isIPv4(probe.host) && !isIPv6(probe.host)) throw bad(`redirect check address: "${probe.host}" is not an IP address`);
  return { host: probe.host.toLowerCase(), port: checkPort(probe.port, "redirect check port") };
}

/** Options with defaults filled in and every value checked. */
export function resolveOptions(options: RedirectOptions = {}): Required<Omit<RedirectOptions, "proxyGid" | "redirectCheckProbe">> & { proxyGid: number; redirectCheckProbe: { host: string; port: number } | undefined } {
  const resolved = {
    proxyUid: checkId(options.proxyUid ?? 2102, "proxy UID"),
    proxyGid: checkId(options.proxyGid ?? 0, "proxy GID"),
    inboundPort: checkPort(options.inboundPort ?? 4143, "inbound port"),
    outboundPort: checkPort(options.outboundPort ?? 4140, "outbound port"),
    inboundPortsToIgnore: [...(options.inboundPortsToIgnore ?? ["4190", "4191"])],
    outboundPortsToIgnore: [...(options.outboundPortsToIgnore ?? [])],
    portsToRedirect: (options.portsToRedirect ?? []).map((port) => checkPort(port, "ports to redirect")),
    subnetsToIgnore: [...(options.subnetsToIgnore ?? [])],
    redirectCheckProbe: checkProbe(options.redirectCheckProbe),
  };
  splitMultiport(resolved.inboundPortsToIgnore, "inbound ports to ignore");
  splitMultiport(resolved.outboundPortsToIgnore, "outbound ports to ignore");
  resolved.subnetsToIgnore.forEach(cidrFamily);
  return resolved;
}

/**
 * The nat rules of one family, exactly as Linkerd's proxy-init installs them
 * (linkerd2-proxy-init `pkg/iptables/iptables.go`): inbound connections not to
 * an ignored port or from an ignored subnet go to the inbound port; the
 * workload's outbound connections, except the proxy's own (by UID/GID), those
 * leaving through `lo` and those to ignored ports, go to the outbound port.
 * With `redirectCheckProbe`, one rule of ours comes first in PROXY_INIT_OUTPUT:
 * connections to the probe address go to the outbound port whoever made them.
 * Throws `ERR_TRANSPARENT_OPTIONS` for a value iptables would refuse.
 */
export function buildRules(options: RedirectOptions = {}, family: 4 | 6 = 4): RuleSet {
  const o = resolveOptions(options);
  const inbound: Rule[] = [];
  for (const dports of splitMultiport(o.inboundPortsToIgnore)) {
    inbound.push({ chain: REDIRECT_CHAIN, protocol: "tcp", dports, target: "RETURN", name: `ignore-port-${dports.join(",")}` });
  }
  for (const subnet of o.subnetsToIgnore.filter((cidr) => cidrFamily(cidr) === family)) {
    inbound.push({ chain: REDIRECT_CHAIN, protocol: "all", source: subnet, target: "RETURN", name: `ignore-subnet-${subnet}` });
  }
  if (o.portsToRedirect.length === 0) {
    inbound.push({ chain: REDIRECT_CHAIN, protocol: "tcp", target: "REDIRECT", toPort: o.inboundPort, name: "redirect-all-incoming-to-proxy-port" });
  } else {
    for (const port of o.portsToRedirect) {
      inbound.push({ chain: REDIRECT_CHAIN, protocol: "tcp", dport: port, target: "REDIRECT", toPort: o.inboundPort, name: `redirect-port-${port}-to-proxy-port` });
    }
  }
  inbound.push({ chain: "PREROUTING", target: REDIRECT_CHAIN, name: "install-proxy-init-prerouting" });

  const outbound: Rule[] = [];
  const probe = o.redirectCheckProbe;
  if (probe !== undefined && (isIPv4(probe.host) ? 4 : 6) === family) {
    // Before the UID exclusion: the proxy's own probe must be redirected for the check to see the chain and its OUTPUT jump.
    const destination = `${probe.host}/${family === 4 ? 32 : 128}`;
    outbound.push({ chain: OUTPUT_CHAIN, protocol: "tcp", destination, dport: probe.port, target: "REDIRECT", toPort: o.outboundPort, name: "redirect-check", comment: REDIRECT_CHECK_COMMENT });
  }
  if (o.proxyUid > 0) outbound.push({ chain: OUTPUT_CHAIN, uidOwner: o.proxyUid, target: "RETURN", name: "ignore-proxy-user-id" });
  if (o.proxyGid > 0) outbound.push({ chain: OUTPUT_CHAIN, gidOwner: o.proxyGid, target: "RETURN", name: "ignore-proxy-group-id" });
  outbound.push({ chain: OUTPUT_CHAIN, outInterface: "lo", target: "RETURN", name: "ignore-loopback" });
  for (const dports of splitMultiport(o.outboundPortsToIgnore)) {
    outbound.push({ chain: OUTPUT_CHAIN, protocol: "tcp", dports, target: "RETURN", name: `ignore-port-${dports.join(",")}` });
  }
  outbound.push({ chain: OUTPUT_CHAIN, protocol: "tcp", target: "REDIRECT", toPort: o.outboundPort, name: "redirect-all-outgoing-to-proxy-port" });
  outbound.push({ chain: "OUTPUT", target: OUTPUT_CHAIN, name: "install-proxy-init-output" });
  return { family, inbound, outbound };
}
