import net from "node:net";
import { ProxyError } from "./errors.js";

// The inbound policy model, after Linkerd's (`io.linkerd.proxy.inbound.Server`):
// a port's server has protocol settings and, separately, the authorizations
// that admit clients. An empty list of authorizations admits nobody.

/** The default inbound policies (Linkerd's names). */
export type DefaultPolicy = "all-unauthenticated" | "all-authenticated" | "cluster-authenticated" | "cluster-unauthenticated" | "deny" | "audit";

const DEFAULT_POLICIES: readonly DefaultPolicy[] = ["all-unauthenticated", "all-authenticated", "cluster-authenticated", "cluster-unauthenticated", "deny", "audit"];

/** Which resource a server or authorization came from (`Server.labels`, `Authz.metadata`); metric labels. */
export interface PolicyMeta {
  /** `""` for defaults, `policy.linkerd.io` for resources. */
  group: string;
  /** `default`, `server`, `authorizationpolicy`, `serverauthorization`… */
  kind: string;
  name: string;
}

/** How the proxy treats a port's bytes before authorization (server settings, not authorization). */
export type ServerProtocol =
  /** Detect TLS in the client's first bytes, within `timeoutMs` (default: the inbound's `detectTimeoutMs`). */
  | { kind: "detect"; timeoutMs?: number }
  /** Server-speaks-first: forwarded without waiting for the client's bytes; meshed clients use the transport header. */
  | { kind: "opaque" }
  /** Declared TLS, HTTP/1, HTTP/2 or gRPC: detected as `detect` until the HTTP layer exists. */
  | { kind: "tls" | "http1" | "http2" | "grpc" };

/** Who an authorization admits. */
export type Authentication =
  /** Anyone, with or without TLS. */
  | { kind: "unauthenticated" }
  /** Any client whose mesh TLS the proxy terminated, with or without a client certificate. */
  | { kind: "tls-unauthenticated" }
  /** A verified client identity: exact `identities`, or a name ending in `.<suffix>` (a suffix `""` matches every identity). */
  | { kind: "mesh-tls"; identities: string[]; suffixes: string[] };

/** A CIDR (or bare IP) and the CIDRs inside it that do not match. */
export interface PolicyNetwork {
  net: string;
  except: string[];
}

/** One authorization: the client's address in one of `networks` and `authentication` met. */
export interface Authorization {
  networks: PolicyNetwork[];
  authentication: Authentication;
  meta: PolicyMeta;
}

/** A port's inbound server policy. */
export interface ServerPolicy {
  protocol: ServerProtocol;
  authorizations: Authorization[];
  meta: PolicyMeta;
  /** Denials are allowed, reported as `wouldDeny` (the `audit` default policy). */
  audit?: boolean;
}

/** What the authorization layer knows of a connection. */
export interface AuthorizeInput {
  /** The client's IP address as the socket reports it. */
  clientAddress: string;
  /** Whether the proxy terminated the client's mesh TLS. */
  meshTls: boolean;
  /** The verified mesh identity of the client, if it presented one. */
  clientId?: string;
}

/** Why a connection is denied: a metric label. */
export type DenyReason = "deny" | "unauthenticated" | "not_in_cluster_networks" | "identity_not_allowed";

/** Why a connection was allowed or denied; `reason` and the metas are metric labels. */
export type AuthorizeDecision =
  | { allow: true; server: PolicyMeta; authz: PolicyMeta; reason: "unauthenticated" | "authenticated" | "audit"; wouldDeny?: DenyReason }
  | { allow: false; server: PolicyMeta; reason: DenyReason };

/** Everything a network may match: Linkerd's "all networks". */
export const ALL_NETWORKS: readonly PolicyNetwork[] = [
  { net: "0.0.0.0/0", except: [] },
  { net: "::/0", except: [] },
];

/** The private ranges, the default cluster networks. */
export const DEFAULT_CLUSTER_NETWORKS: readonly string[] = ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"];

/** Parses `a.b.c.d/n`, `v6/n` or a bare IP into a BlockList. @throws ProxyError `ERR_CONFIG_INVALID` */
export function parseNetworks(cidrs: readonly string[]): net.BlockList {
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

/** Whether `identity` matches an allow-list entry (exact, `*.suffix`, or `*` for any identity). */
export function identityAllowed(identity: string, allowed: readonly string[]): boolean {
  for (const entry of allowed) {
    if (entry === "*") return true;
    if (entry.startsWith("*.")) {
      if (identity.endsWith(entry.slice(1)) && identity.length > entry.length - 1) return true;
    } else if (identity === entry) {
      return true;
    }
  }
  return false;
}

/** Splits an allow list (exact, `*.suffix`, `*`) into Linkerd's identities and suffixes. @throws ProxyError `ERR_CONFIG_INVALID` */
export function meshTlsAuthentication(allowed: readonly string[]): Authentication {
  const identities: string[] = [];
  const suffixes: string[] = [];
  for (const entry of allowed) {
    if (entry === "*") suffixes.push("");
    else if (/^\*\.[^*]+$/.test(entry)) suffixes.push(entry.slice(2));
    else if (entry !== "" && !entry.includes("*")) identities.push(entry);
    else throw new ProxyError("ERR_CONFIG_INVALID", `bad allowed identity ${JSON.stringify(entry)}: exact name, *.suffix or *`);
  }
  return { kind: "mesh-tls", identities, suffixes };
}

/** Validates a policy name. @throws ProxyError `ERR_CONFIG_INVALID` */
export function parseDefaultPolicy(text: string): DefaultPolicy {
  if ((DEFAULT_POLICIES as readonly string[]).includes(text)) return text as DefaultPolicy;
  throw new ProxyError("ERR_CONFIG_INVALID", `unknown policy ${JSON.stringify(text)}; expected one of ${DEFAULT_POLICIES.join(", ")}`);
}

/**
 * The server Linkerd's controller sends for a port without a Server resource
 * (`policy-controller/k8s/index/src/defaults.rs`): `all-authenticated` any
 * identity from anywhere, `cluster-*` from the cluster networks, `deny`
 * nobody, `audit` everyone (reporting what `all-authenticated` would deny).
 */
export function defaultServerPolicy(policy: DefaultPolicy, options: { clusterNetworks?: readonly string[]; protocol?: ServerProtocol } = {}): ServerPolicy {
  const meta: PolicyMeta = { group: "", kind: "default", name: policy };
  const cluster = (options.clusterNetworks ?? DEFAULT_CLUSTER_NETWORKS).map((cidr) => ({ net: cidr, except: [] }));
  const anyIdentity: Authentication = { kind: "mesh-tls", identities: [], suffixes: [""] };
  const authz = (networks: readonly PolicyNetwork[], authentication: Authentication): Authorization[] => [{ networks: [...networks], authentication, meta }];
  const protocol = options.protocol ?? { kind: "detect" };
  switch (policy) {
    case "all-unauthenticated":
      return { protocol, meta, authorizations: authz(ALL_NETWORKS, { kind: "unauthenticated" }) };
    case "cluster-unauthenticated":
      return { protocol, meta, authorizations: authz(cluster, { kind: "unauthenticated" }) };
    case "all-authenticated":
      return { protocol, meta, authorizations: authz(ALL_NETWORKS, anyIdentity) };
    case "cluster-authenticated":
      return { protocol, meta, authorizations: authz(cluster, anyIdentity) };
    case "deny":
      return { protocol, meta, authorizations: [] };
    case "audit":
      return { protocol, meta, authorizations: authz(ALL_NETWORKS, anyIdentity), audit: true };
  }
}

interface CompiledAuthorization {
  source: Authorization;
  networks: { net: net.BlockList; except: net.BlockList | undefined }[];
}

// Policies are immutable values: each is compiled once, on its first use.
const compiled = new WeakMap<ServerPolicy, CompiledAuthorization[]>();

/** Validates a policy's networks and identities (throws what the first use would). @throws ProxyError `ERR_CONFIG_INVALID` */
export function checkServerPolicy(policy: ServerPolicy): ServerPolicy {
  compile(policy);
  return policy;
}

function compile(policy: ServerPolicy): CompiledAuthorization[] {
  let result = compiled.get(policy);
  if (result === undefined) {
    result = policy.authorizations.map((source) => ({
      source,
      networks: source.networks.map((n) => ({ net: parseNetworks([n.net]), except: n.except.length === 0 ? undefined : parseNetworks(n.except) })),
    }));
    compiled.set(policy, result);
  }
  return result;
}

/** Why one authorization does not admit the client (undefined: it does). */
function refusal(authz: CompiledAuthorization, input: AuthorizeInput): DenyReason | undefined {
  const authn = authz.source.authentication;
  if (authn.kind === "mesh-tls") {
    if (input.clientId === undefined) return "unauthenticated";
    const id = input.clientId;
    const allowed = authn.identities.includes(id) || authn.suffixes.some((suffix) => suffix === "" || (id.endsWith(`.${suffix}`) && id.length > suffix.length + 1));
    if (!allowed) return "identity_not_allowed";
  } else if (authn.kind === "tls-unauthenticated" && !input.meshTls) {
    return "unauthenticated";
  }
  const inside = authz.networks.some((n) => inNetworks(n.net, input.clientAddress) && (n.except === undefined || !inNetworks(n.except, input.clientAddress)));
  return inside ? undefined : "not_in_cluster_networks";
}

// When several authorizations refuse, the reason reported is the one a client can act on first.
const REASON_ORDER: readonly DenyReason[] = ["unauthenticated", "identity_not_allowed", "not_in_cluster_networks"];

/**
 * Decides a connection against a port's policy: allowed by the first
 * authorization that admits it; otherwise denied with the most telling
 * reason (`deny` when the policy admits nobody). An `audit` policy allows
 * what it would deny, reporting `wouldDeny`.
 */
export function authorize(policy: ServerPolicy, input: AuthorizeInput): AuthorizeDecision {
  const authorizations = compile(policy);
  let reason: DenyReason = "deny";
  for (const authz of authorizations) {
    const refused = refusal(authz, input);
    if (refused === undefined) {
      if (policy.audit === true) return { allow: true, server: policy.meta, authz: authz.source.meta, reason: "audit" };
      return { allow: true, server: policy.meta, authz: authz.source.meta, reason: input.clientId === undefined ? "unauthenticated" : "authenticated" };
    }
    if (reason === "deny" || REASON_ORDER.indexOf(refused) < REASON_ORDER.indexOf(reason)) reason = refused;
  }
  if (policy.audit === true) return { allow: true, server: policy.meta, authz: policy.meta, reason: "audit", wouldDeny: reason };
  return { allow: false, server: policy.meta, reason };
}

/** The legacy `policy` metric label: a default policy's name, or the kind of resource that governs the port. */
export function policyLabel(server: PolicyMeta): string {
  return server.kind === "default" ? server.name : server.kind;
}
