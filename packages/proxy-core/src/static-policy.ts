import { ProxyError } from "./errors.js";
import type { DefaultPolicy, ServerPolicy } from "./policy.js";
import { defaultServerPolicy, meshTlsAuthentication, parseDefaultPolicy, parseNetworks } from "./policy.js";
import { createPolicyStore } from "./policy-store.js";
import type { PolicySource } from "./sources.js";

/** A port's settings from flags (`--port-policy`, `--require-identity-ports`, `--allow`, `--opaque-ports`). */
export interface PortOverrides {
  /** This port's own default policy instead of the proxy's. */
  policy?: DefaultPolicy;
  /** Only clients with a verified mesh identity (Linkerd's require-identity ports). */
  requireIdentity?: boolean;
  /** Server-speaks-first: no detection; meshed clients reach it through the transport header. */
  opaque?: boolean;
  /** Client identities allowed: exact, `*.<suffix>`, or `*` (any identity). Implies requireIdentity. */
  allowedIdentities?: string[];
}

/** Options of {@link createStaticPolicySource} and {@link flagPolicies}. */
export interface StaticPolicyOptions {
  /** Default `all-unauthenticated`. */
  defaultPolicy?: DefaultPolicy;
  /**
   * CIDRs of the cluster's networks for the `cluster-*` policies. Default the
   * private ranges: 10.0.0.0/8, 100.64.0.0/10, 172.16.0.0/12, 192.168.0.0/16, fd00::/8.
   */
  clusterNetworks?: string[];
  ports?: Record<number, PortOverrides>;
}

/**
 * The policy of each port as the flags describe it: the (port's) default
 * policy, with `allowedIdentities` replacing and `requireIdentity` narrowing
 * every authorization's authentication to a verified identity.
 * @throws ProxyError `ERR_CONFIG_INVALID`
 */
export function flagPolicies(options: StaticPolicyOptions = {}): (port: number) => ServerPolicy {
  const defaultPolicy = parseDefaultPolicy(options.defaultPolicy ?? "all-unauthenticated");
  if (options.clusterNetworks !== undefined) parseNetworks(options.clusterNetworks);
  const clusterNetworks = options.clusterNetworks === undefined ? {} : { clusterNetworks: options.clusterNetworks };
  const ports = new Map<number, ServerPolicy>();
  for (const [key, overrides] of Object.entries(options.ports ?? {})) {
    const port = Number(key);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ProxyError("ERR_CONFIG_INVALID", `bad port ${JSON.stringify(key)}`);
    const policy = defaultServerPolicy(parseDefaultPolicy(overrides.policy ?? defaultPolicy), {
      ...clusterNetworks,
      protocol: overrides.opaque === true ? { kind: "opaque" } : { kind: "detect" },
    });
    const allowed = overrides.allowedIdentities === undefined ? undefined : meshTlsAuthentication(overrides.allowedIdentities);
    for (const authz of policy.authorizations) {
      if (allowed !== undefined) authz.authentication = allowed;
      else if (overrides.requireIdentity === true && authz.authentication.kind !== "mesh-tls") authz.authentication = { kind: "mesh-tls", identities: [], suffixes: [""] };
    }
    ports.set(port, policy);
  }
  const fallback = defaultServerPolicy(defaultPolicy, clusterNetworks);
  return (port) => ports.get(port) ?? fallback;
}

/** Today's flag-based policy as a {@link PolicySource} that never changes. @throws ProxyError `ERR_CONFIG_INVALID` */
export function createStaticPolicySource(options: StaticPolicyOptions = {}): PolicySource {
  const store = createPolicyStore({ defaults: flagPolicies(options) });
  return { current: (port) => store.current(port), subscribe: () => () => undefined };
}
