/**
 * The inbound policy model: Linkerd's policy resources (Server,
 * AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication) and the
 * workloads they select, as plain data. A source (the registry file, later
 * Kubernetes) produces it; the controller turns it into `Server` messages.
 */

/** Linkerd's default inbound policies, also the values of a Server's `accessPolicy`. */
export const DEFAULT_POLICIES = [
  "all-unauthenticated",
  "all-authenticated",
  "cluster-unauthenticated",
  "cluster-authenticated",
  "deny",
  "audit",
] as const;
export type DefaultPolicy = (typeof DEFAULT_POLICIES)[number];

/** A Server's `proxyProtocol` (Linkerd's spellings). */
export const PROXY_PROTOCOLS = ["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"] as const;
export type ProxyProtocolName = (typeof PROXY_PROTOCOLS)[number];

/** A network in CIDR form: a canonical address and a prefix length (a bare IP is /32 or /128). */
export interface Cidr {
  address: string;
  prefixLength: number;
}

/** A workload (a pod): what a proxy names with `{"ns":"<namespace>","pod":"<name>"}`. */
export interface PolicyWorkload {
  name: string;
  namespace: string;
  labels: Readonly<Record<string, string>>;
  /** Named container ports, for Servers that select a port by name. */
  ports: readonly { name: string; port: number }[];
  /** Policy of ports no Server selects; absent: the controller's default. */
  defaultPolicy?: DefaultPolicy;
  /** Ports whose default policy is opaque instead of protocol detection. */
  opaquePorts: readonly number[];
}

export interface LabelSelectorRequirement {
  key: string;
  operator: "In" | "NotIn" | "Exists" | "DoesNotExist";
  values: readonly string[];
}

/** A Kubernetes label selector; an empty one selects every workload of the namespace. */
export interface LabelSelector {
  matchLabels: Readonly<Record<string, string>>;
  matchExpressions: readonly LabelSelectorRequirement[];
}

/** Linkerd's Server: one port of the workloads it selects. */
export interface PolicyServer {
  name: string;
  namespace: string;
  podSelector: LabelSelector;
  /** A port number, or the name of a workload's port. */
  port: number | string;
  proxyProtocol: ProxyProtocolName;
  /** What is allowed besides the authorization policies. Linkerd's default: `deny`. */
  accessPolicy: DefaultPolicy;
  /** The Server resource's own labels, which a ServerAuthorization's `server.selector` matches. */
  labels?: Readonly<Record<string, string>>;
}

/** A reference from an AuthorizationPolicy to what a client must present. */
export interface AuthenticationRef {
  kind: "MeshTLSAuthentication" | "NetworkAuthentication" | "ServiceAccount";
  name: string;
  /** Default: the policy's namespace. */
  namespace?: string;
}

/** Linkerd's AuthorizationPolicy: every required authentication must match. */
export interface AuthorizationPolicy {
  name: string;
  namespace: string;
  /** A Server of the policy's namespace, or every Server of that namespace. */
  targetRef: { kind: "Server"; name: string } | { kind: "Namespace" };
  requiredAuthenticationRefs: readonly AuthenticationRef[];
}

/** One entry of a MeshTLSAuthentication's `identityRefs`. */
export type IdentityRef = { kind: "ServiceAccount"; name: string; namespace?: string } | { kind: "Namespace"; name?: string };

/** Linkerd's MeshTLSAuthentication: `identities` (exact, `*`, `*.suffix`) or `identityRefs`. */
export interface MeshTLSAuthentication {
  name: string;
  namespace: string;
  identities: readonly string[];
  identityRefs: readonly IdentityRef[];
}

/** Linkerd's NetworkAuthentication: client networks, each with exceptions. */
export interface NetworkAuthentication {
  name: string;
  namespace: string;
  networks: readonly { cidr: Cidr; except: readonly Cidr[] }[];
}

/**
 * Linkerd's older ServerAuthorization (`policy.linkerd.io/v1beta1`): the
 * clients allowed on the Servers of its namespace that it selects, by name
 * or by the Servers' labels.
 */
export interface ServerAuthorization {
  name: string;
  namespace: string;
  server: { name: string } | { selector: LabelSelector };
  /** Client networks; empty: the cluster's networks. */
  networks: readonly { cidr: Cidr; except: readonly Cidr[] }[];
  /**
   * `unauthenticated`: any client; `tls-unauthenticated`: any TLS client,
   * with or without identity; `identities`: meshed clients whose identity is
   * listed (exact, `*`, `*.suffix`) or is one of the service accounts.
   */
  client:
    | { kind: "unauthenticated" }
    | { kind: "tls-unauthenticated" }
    | { kind: "identities"; identities: readonly string[]; serviceAccounts: readonly { name: string; namespace?: string }[] };
}

/** Everything the policy controller serves from, at one moment; immutable. */
export interface PolicyModel {
  workloads: readonly PolicyWorkload[];
  servers: readonly PolicyServer[];
  authorizationPolicies: readonly AuthorizationPolicy[];
  meshTLSAuthentications: readonly MeshTLSAuthentication[];
  networkAuthentications: readonly NetworkAuthentication[];
  /** Absent: none (the registry file has none). */
  serverAuthorizations?: readonly ServerAuthorization[];
}

export const EMPTY_POLICY_MODEL: PolicyModel = Object.freeze({
  workloads: [],
  servers: [],
  authorizationPolicies: [],
  meshTLSAuthentications: [],
  networkAuthentications: [],
});

/** Where the policy model comes from: its current value and a notification for each new one. */
export interface PolicySource {
  current(): PolicyModel;
  /** Calls `listener` with every new model; returns the unsubscribe function. */
  subscribe(listener: (model: PolicyModel) => void): () => void;
}

/** Whether `selector` selects a workload with `labels`. */
export function selectorMatches(selector: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [key, value] of Object.entries(selector.matchLabels)) if (labels[key] !== value) return false;
  for (const { key, operator, values } of selector.matchExpressions) {
    const has = Object.hasOwn(labels, key);
    const value = labels[key];
    if (operator === "Exists" && !has) return false;
    if (operator === "DoesNotExist" && has) return false;
    if (operator === "In" && !(has && values.includes(value as string))) return false;
    if (operator === "NotIn" && has && values.includes(value as string)) return false;
  }
  return true;
}
