import net from "node:net";
import { ProxyError } from "./errors.js";

/** The default inbound policies (Linkerd's names). */
export type DefaultPolicy = "all-unauthenticated" | "all-authenticated" | "cluster-authenticated" | "deny" | "audit";

const DEFAULT_POLICIES: readonly DefaultPolicy[] = ["all-unauthenticated", "all-authenticated", "cluster-authenticated", "deny", "audit"];

/** Per-port overrides, keyed by the workload's target port. */
export interface PortPolicy {
  /** This port's own default policy instead of the proxy's. */
  policy?: DefaultPolicy;
  /** Only clients with a verified mesh identity. */
  requireIdentity?: boolean;
  /**
   * Opaque port: a plaintext connection is forwarded without waiting for the
   * client's first bytes (server-speaks-first protocols); meshed clients reach
   * it through the transport header.
   */
  opaque?: boolean;
  /** Forward without TLS detection or policy (`no_tls_reason="port_skipped"`). */
  skip?: boolean;
  /**
   * Client identities allowed; an entry is exact, or `*.<suffix>` for any
   * identity ending in `.<suffix>` (e.g. `*.default.serviceaccount.identity.meshtls.cluster.local`).
   * Implies requireIdentity.
   */
  allowedIdentities?: string[];
}

/** Options of {@link createInboundPolicy}. */
export interface CreateInboundPolicyOptions {
  /** Default `all-unauthenticated`. */
  defaultPolicy?: DefaultPolicy;
  /**
   * CIDRs of the cluster's networks for `cluster-authenticated`.
   * Default the private ranges: 10.0.0.0/8, 100.64.0.0/10, 172.16.0.0/12,
   * 192.168.0.0/16, fd00::/8.
   */
  clusterNetworks?: string[];
  ports?: Record<number, PortPolicy>;
}

/** What the policy layer knows of a connection. */
export interface AuthorizeInput {
  /** The workload port the connection is for. */
  port: number;
  /** The client's IP address as the socket reports it. */
  clientAddress: string;
  /** The verified mesh identity of the client, if it presented one. */
  clientId?: string;
}

/** Why a connection was allowed or denied; `reason` is a metric label. */
export type AuthorizeDecision =
  | { allow: true; policy: DefaultPolicy; reason: "unauthenticated" | "authenticated" | "audit"; wouldDeny?: DenyReason }
  | { allow: false; policy: DefaultPolicy; reason: DenyReason };

/** Why a connection is denied. */
export type DenyReason = "deny" | "unauthenticated" | "not_in_cluster_networks" | "identity_not_allowed";

/** The inbound authorization layer. */
export interface InboundPolicy {
  /** The overrides for a port (empty when none). */
  port(port: number): PortPolicy;
  authorize(input: AuthorizeInput): AuthorizeDecision;
}

const DEFAULT_CLUSTER_NETWORKS = ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"];

/** Parses `a.b.c.d/n` or `v6/n` into a BlockList. @throws ProxyError `ERR_CONFIG_INVALID` */
export function parseNetworks(cidrs: string[]): net.BlockList {
  const list = new net.BlockList();
  for (const cidr of cidrs) {
    const [address = "", prefixText] = cidr.split("/");
    const family = net.isIPv4(address) ? "ipv4" : net.isIPv6(address) ? "ipv6" : undefined;
    const prefix = prefixText === undefined ? (family === "ipv4" ? 32 : 128) : Number(prefixText);
    if (family === undefined || !/^\d{1,3}$/.test(prefixText ?? "0") || prefix > (family === "ipv4" ? 32 : 128)) {
      throw new ProxyError("ERR_CONFIG_INVALID", `not a CIDR network: ${JSON.stringify(cidr)}`);
    }
    list.addSubnet(address, prefix, family);
  }
  return list;
}

/** Whether an address (IPv4-mapped IPv6 included) is in the networks. */
export function inNetworks(networks: net.BlockList, address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const plain = mapped?.[1] ?? address;
  if (net.isIPv4(plain)) return networks.check(plain, "ipv4");
  if (net.isIPv6(plain)) return networks.check(plain, "ipv6");
  return false;
}

/** Whether `identity` matches an allow-list entry (exact, or `*.suffix`). */
export function identityAllowed(identity: string, allowed: readonly string[]): boolean {
  for (const entry of allowed) {
    if (entry.startsWith("*.")) {
      if (identity.endsWith(entry.slice(1)) && identity.length > entry.length - 1) return true;
    } else if (identity === entry) {
      return true;
    }
  }
  return false;
}

/** Validates a policy name. @throws ProxyError `ERR_CONFIG_INVALID` */
export function parseDefaultPolicy(text: string): DefaultPolicy {
  if ((DEFAULT_POLICIES as readonly string[]).includes(text)) return text as DefaultPolicy;
  throw new ProxyError("ERR_CONFIG_INVALID", `unknown policy ${JSON.stringify(text)}; expected one of ${DEFAULT_POLICIES.join(", ")}`);
}

/**
 * Builds the inbound authorization layer. The rules, for a connection to port p:
 * `deny` denies everything; per-port `allowedIdentities` (or `requireIdentity`)
 * then require a verified client identity (in the list); `all-authenticated`
 * requires an identity; `cluster-authenticated` requires an identity and a
 * client address in the cluster networks; `all-unauthenticated` allows.
 * `audit` evaluates as `all-authenticated` plus the port rules but allows,
 * reporting what it would have denied in `wouldDeny`.
 * @throws ProxyError `ERR_CONFIG_INVALID`
 */
export function createInboundPolicy(options: CreateInboundPolicyOptions = {}): InboundPolicy {
  const defaultPolicy = parseDefaultPolicy(options.defaultPolicy ?? "all-unauthenticated");
  const networks = parseNetworks(options.clusterNetworks ?? DEFAULT_CLUSTER_NETWORKS);
  const ports = new Map<number, PortPolicy>();
  for (const [key, value] of Object.entries(options.ports ?? {})) {
    const port = Number(key);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ProxyError("ERR_CONFIG_INVALID", `bad port ${JSON.stringify(key)}`);
    if (value.policy !== undefined) parseDefaultPolicy(value.policy);
    for (const entry of value.allowedIdentities ?? []) {
      if (entry === "" || entry === "*." || (entry.includes("*") && !/^\*\.[^*]+$/.test(entry))) {
        throw new ProxyError("ERR_CONFIG_INVALID", `bad allowed identity ${JSON.stringify(entry)}: exact name or *.suffix`);
      }
    }
    ports.set(port, value);
  }

  const evaluate = (policy: DefaultPolicy, portPolicy: PortPolicy, input: AuthorizeInput): DenyReason | undefined => {
    if (policy === "deny") return "deny";
    const { clientId } = input;
    if (portPolicy.allowedIdentities !== undefined) {
      if (clientId === undefined) return "unauthenticated";
      if (!identityAllowed(clientId, portPolicy.allowedIdentities)) return "identity_not_allowed";
    }
    const needsIdentity = portPolicy.requireIdentity === true || policy === "all-authenticated" || policy === "cluster-authenticated" || policy === "audit";
    if (needsIdentity && clientId === undefined) return "unauthenticated";
    if (policy === "cluster-authenticated" && !inNetworks(networks, input.clientAddress)) return "not_in_cluster_networks";
    return undefined;
  };

  return {
    port: (port) => ports.get(port) ?? {},
    authorize(input) {
      const portPolicy = ports.get(input.port) ?? {};
      const policy = portPolicy.policy ?? defaultPolicy;
      const denied = evaluate(policy, portPolicy, input);
      if (policy === "audit") {
        return denied === undefined ? { allow: true, policy, reason: "audit" } : { allow: true, policy, reason: "audit", wouldDeny: denied };
      }
      if (denied !== undefined) return { allow: false, policy, reason: denied };
      return { allow: true, policy, reason: input.clientId === undefined ? "unauthenticated" : "authenticated" };
    },
  };
}
