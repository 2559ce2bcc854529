import { ipAddressToString } from "@meshtls/api";
import type { Authz, InboundServer, IPNetwork, Metadata } from "@meshtls/api";
import { ProxyError } from "./errors.js";
import type { Authentication, Authorization, PolicyMeta, ServerPolicy, ServerProtocol } from "./policy.js";
import { checkServerPolicy, defaultServerPolicy } from "./policy.js";

// `io.linkerd.proxy.inbound.Server` → the proxy's ServerPolicy, as
// linkerd2-proxy's `linkerd/proxy/server-policy` converts it.

function cidr(network: IPNetwork | undefined): string {
  if (network?.ip === undefined) throw new ProxyError("ERR_POLICY_INVALID", "a network without an address");
  return `${ipAddressToString(network.ip)}/${network.prefixLen}`;
}

function metaOf(metadata: Metadata | undefined, labels: Record<string, string>): PolicyMeta {
  if (metadata?.kind?.$case === "default") return { group: "", kind: "default", name: metadata.kind.value };
  if (metadata?.kind?.$case === "resource") return { group: metadata.kind.value.group, kind: metadata.kind.value.kind, name: metadata.kind.value.name };
  return { group: labels["group"] ?? "", kind: labels["kind"] ?? "", name: labels["name"] ?? "" };
}

function protocolOf(server: InboundServer): ServerProtocol {
  const kind = server.protocol?.kind;
  switch (kind?.$case) {
    case "detect": {
      const timeout = kind.value.timeout;
      if (timeout === undefined) return { kind: "detect" };
      return { kind: "detect", timeoutMs: Number(timeout.seconds) * 1000 + Math.floor(timeout.nanos / 1e6) };
    }
    case "opaque":
    case "tls":
    case "http1":
    case "http2":
    case "grpc":
      return { kind: kind.$case };
    case undefined:
      throw new ProxyError("ERR_POLICY_INVALID", "the server has no protocol");
  }
}

function authenticationOf(authz: Authz): Authentication {
  const permit = authz.authentication?.permit;
  if (permit === undefined) throw new ProxyError("ERR_POLICY_INVALID", "an authorization without authentication");
  if (permit.$case === "unauthenticated") return { kind: "unauthenticated" };
  const clients = permit.value.clients;
  if (clients === undefined) throw new ProxyError("ERR_POLICY_INVALID", "a meshTLS authentication without clients");
  if (clients.$case === "unauthenticated") return { kind: "tls-unauthenticated" };
  return {
    kind: "mesh-tls",
    identities: clients.value.identities.map((identity) => identity.name),
    suffixes: clients.value.suffixes.map((suffix) => suffix.parts.join(".")),
  };
}

/**
 * Converts a policy controller's `Server` message. An authorization without
 * networks admits nobody and is dropped; anything else malformed throws.
 * @throws ProxyError `ERR_POLICY_INVALID`
 */
export function serverPolicyFromProto(server: InboundServer): ServerPolicy {
  const authorizations: Authorization[] = [];
  for (const authz of server.authorizations) {
    if (authz.networks.length === 0) continue;
    authorizations.push({
      networks: authz.networks.map((network) => ({ net: cidr(network.net), except: network.except.map(cidr) })),
      authentication: authenticationOf(authz),
      meta: metaOf(authz.metadata, authz.labels),
    });
  }
  const meta = metaOf(undefined, server.labels);
  const policy: ServerPolicy = { protocol: protocolOf(server), authorizations, meta };
  // The controller's `audit` default admits everyone; the proxy flags what all-authenticated would refuse.
  if (meta.kind === "default" && meta.name === "audit") {
    Object.assign(policy, { audit: true, authorizations: defaultServerPolicy("audit").authorizations });
  }
  try {
    return checkServerPolicy(policy);
  } catch (error) {
    throw new ProxyError("ERR_POLICY_INVALID", `the server's networks do not parse: ${(error as Error).message}`, { cause: error });
  }
}
