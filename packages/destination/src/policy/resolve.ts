import {
  ipToIpAddress,
  type Authn,
  type Authz,
  type GrpcRoute,
  type HttpRoute,
  type InboundServer,
  type Metadata,
  type Network,
  type ProxyProtocol,
} from "@meshtls/api";
import { identityName } from "@meshtls/pki";
import { ALL_NETWORKS } from "./cidr.js";
import {
  selectorMatches,
  type AuthorizationPolicy,
  type Cidr,
  type DefaultPolicy,
  type MeshTLSAuthentication,
  type NetworkAuthentication,
  type PolicyModel,
  type PolicyServer,
  type PolicyWorkload,
  type ServerAuthorization,
} from "./model.js";

/** How a model is turned into `Server` messages. */
export interface ResolveOptions {
  /** Trust domain of identity names (service accounts → identities). */
  trustDomain: string;
  /** Control-plane namespace of identity names. */
  controlNamespace: string;
  /** Networks of `cluster-*` policies and of authorizations without a NetworkAuthentication. */
  clusterNetworks: readonly Cidr[];
  /** Policy of ports without a Server, for workloads without their own `defaultPolicy`. */
  defaultPolicy: DefaultPolicy;
  /** Protocol detection timeout of ports with protocol `unknown`, in ms. */
  detectTimeoutMs: number;
}

const POLICY_GROUP = "policy.linkerd.io";

const defaultMeta = (name: string): Metadata => ({ kind: { $case: "default", value: name } });

function network(cidr: Cidr, except: readonly Cidr[] = []): Network {
  const net = (c: Cidr) => ({ ip: ipToIpAddress(c.address), prefixLen: c.prefixLength });
  return { net: net(cidr), except: except.map(net) };
}

const UNAUTHENTICATED: Authn = { permit: { $case: "unauthenticated", value: {} } };

function meshTLS(identities: readonly string[], suffixes: readonly (readonly string[])[]): Authn {
  return {
    permit: {
      $case: "meshTLS",
      value: {
        clients: {
          $case: "identities",
          value: { identities: identities.map((name) => ({ name })), suffixes: suffixes.map((parts) => ({ parts: [...parts] })) },
        },
      },
    },
  };
}

/** The authorization a default policy grants (none for `deny`). */
function defaultAuthz(policy: DefaultPolicy, clusterNetworks: readonly Cidr[]): Authz[] {
  const authz = (networks: readonly Cidr[], authentication: Authn): Authz[] => [
    {
      networks: networks.map((n) => network(n)),
      authentication,
      labels: { group: "", kind: "default", name: policy },
      metadata: defaultMeta(policy),
    },
  ];
  switch (policy) {
    case "all-unauthenticated":
    case "audit":
      return authz(ALL_NETWORKS, UNAUTHENTICATED);
    case "all-authenticated":
      return authz(ALL_NETWORKS, meshTLS([], [[]]));
    case "cluster-unauthenticated":
      return authz(clusterNetworks, UNAUTHENTICATED);
    case "cluster-authenticated":
      return authz(clusterNetworks, meshTLS([], [[]]));
    case "deny":
      return [];
  }
}

// The route a port without routes of its own gets: every request, authorized by the port's authorizations.
const DEFAULT_HTTP_ROUTE: HttpRoute = {
  metadata: defaultMeta("default"),
  hosts: [],
  authorizations: [],
  rules: [{ matches: [{ path: { kind: { $case: "prefix", value: "/" } }, headers: [], queryParams: [], method: undefined }], filters: [] }],
};
const DEFAULT_GRPC_ROUTE: GrpcRoute = {
  metadata: defaultMeta("default"),
  hosts: [],
  authorizations: [],
  rules: [{ matches: [{ rpc: { service: "", method: "" }, headers: [] }], filters: [] }],
};

function protocolOf(name: PolicyServer["proxyProtocol"], detectTimeoutMs: number): ProxyProtocol {
  switch (name) {
    case "unknown":
      return {
        kind: {
          $case: "detect",
          value: {
            timeout: { seconds: BigInt(Math.floor(detectTimeoutMs / 1000)), nanos: (detectTimeoutMs % 1000) * 1_000_000 },
            httpRoutes: [DEFAULT_HTTP_ROUTE],
            httpLocalRateLimit: undefined,
          },
        },
      };
    case "HTTP/1":
      return { kind: { $case: "http1", value: { routes: [DEFAULT_HTTP_ROUTE], localRateLimit: undefined } } };
    case "HTTP/2":
      return { kind: { $case: "http2", value: { routes: [DEFAULT_HTTP_ROUTE], localRateLimit: undefined } } };
    case "gRPC":
      return { kind: { $case: "grpc", value: { routes: [DEFAULT_GRPC_ROUTE] } } };
    case "opaque":
      return { kind: { $case: "opaque", value: {} } };
    case "TLS":
      return { kind: { $case: "tls", value: {} } };
  }
}

/** The Server of `model` that selects `port` of `workload`: the first one in the model's order. */
export function findServer(model: PolicyModel, workload: PolicyWorkload, port: number): PolicyServer | undefined {
  return model.servers.find((server) => {
    if (server.namespace !== workload.namespace || !selectorMatches(server.podSelector, workload.labels)) return false;
    if (typeof server.port === "number") return server.port === port;
    return workload.ports.some((p) => p.name === server.port && p.port === port);
  });
}

/** Identity names and suffixes (as Linkerd splits them) of a MeshTLSAuthentication. */
function identitiesOf(authn: MeshTLSAuthentication, options: ResolveOptions): { identities: string[]; suffixes: string[][] } {
  const identities: string[] = [];
  const suffixes: string[][] = [];
  for (const id of authn.identities) {
    if (id === "*") suffixes.push([]);
    else if (id.startsWith("*.")) suffixes.push(id.slice(2).split("."));
    else identities.push(id);
  }
  for (const ref of authn.identityRefs) {
    if (ref.kind === "ServiceAccount") {
      identities.push(serviceAccountIdentity(ref.name, ref.namespace ?? authn.namespace, options));
    } else {
      // Every service account of the namespace: the identity name after "<sa>.".
      const sample = serviceAccountIdentity("x", ref.name ?? authn.namespace, options);
      suffixes.push(sample.split(".").slice(1));
    }
  }
  return { identities, suffixes };
}

function serviceAccountIdentity(serviceAccount: string, namespace: string, options: ResolveOptions): string {
  return identityName({ serviceAccount, namespace, controlNamespace: options.controlNamespace, trustDomain: options.trustDomain });
}

/**
 * One AuthorizationPolicy as an `Authz`, or undefined when a reference is
 * missing (Linkerd ignores such a policy: it authorizes nothing).
 */
function policyAuthz(policy: AuthorizationPolicy, model: PolicyModel, options: ResolveOptions): Authz | undefined {
  let networks: NetworkAuthentication["networks"] | undefined;
  let meshAuthn: { identities: string[]; suffixes: string[][] } | undefined;
  const serviceAccounts: string[] = [];
  for (const ref of policy.requiredAuthenticationRefs) {
    const namespace = ref.namespace ?? policy.namespace;
    if (ref.kind === "NetworkAuthentication") {
      const found = model.networkAuthentications.find((n) => n.name === ref.name && n.namespace === namespace);
      if (found === undefined) return undefined;
      networks = found.networks;
    } else if (ref.kind === "MeshTLSAuthentication") {
      const found = model.meshTLSAuthentications.find((m) => m.name === ref.name && m.namespace === namespace);
      if (found === undefined) return undefined;
      meshAuthn = identitiesOf(found, options);
    } else {
      serviceAccounts.push(serviceAccountIdentity(ref.name, namespace, options));
    }
  }
  if (serviceAccounts.length > 0) meshAuthn = { identities: serviceAccounts, suffixes: [] };
  const name = { group: POLICY_GROUP, kind: "authorizationpolicy", name: policy.name };
  return {
    // Without a NetworkAuthentication a policy admits the cluster's networks (as Linkerd's controller).
    networks: networks === undefined ? options.clusterNetworks.map((n) => network(n)) : networks.map((n) => network(n.cidr, n.except)),
    authentication: meshAuthn === undefined ? UNAUTHENTICATED : meshTLS(meshAuthn.identities, meshAuthn.suffixes),
    labels: { ...name },
    metadata: { kind: { $case: "resource", value: { ...name, namespace: "", section: "", port: 0 } } },
  };
}

/** Whether a ServerAuthorization applies to `server` (same namespace; by name, else by the Server's labels). */
function authorizesServer(authorization: ServerAuthorization, server: PolicyServer): boolean {
  if (authorization.namespace !== server.namespace) return false;
  return "name" in authorization.server ? authorization.server.name === server.name : selectorMatches(authorization.server.selector, server.labels ?? {});
}

/** A ServerAuthorization as an `Authz`, as Linkerd's controller sends it (`policy-controller/grpc/src/inbound.rs` `to_authz`). */
function serverAuthorizationAuthz(authorization: ServerAuthorization, options: ResolveOptions): Authz {
  let authentication: Authn;
  const client = authorization.client;
  if (client.kind === "unauthenticated") authentication = UNAUTHENTICATED;
  else if (client.kind === "tls-unauthenticated") authentication = { permit: { $case: "meshTLS", value: { clients: { $case: "unauthenticated", value: {} } } } };
  else {
    const { identities, suffixes } = identitiesOf({ name: authorization.name, namespace: authorization.namespace, identities: client.identities, identityRefs: [] }, options);
    for (const sa of client.serviceAccounts) identities.push(serviceAccountIdentity(sa.name, sa.namespace ?? authorization.namespace, options));
    authentication = meshTLS(identities, suffixes);
  }
  const name = { group: POLICY_GROUP, kind: "serverauthorization", name: authorization.name };
  return {
    networks: authorization.networks.length === 0 ? options.clusterNetworks.map((n) => network(n)) : authorization.networks.map((n) => network(n.cidr, n.except)),
    authentication,
    labels: { ...name },
    metadata: { kind: { $case: "resource", value: { ...name, namespace: "", section: "", port: 0 } } },
  };
}

/**
 * The inbound policy of `port` of the workload `namespace`/`name`, as the
 * `Server` message Linkerd's controller sends; undefined when the model has no
 * such workload. A port no Server selects gets the workload's default policy
 * (`defaultPolicy`, else `options.defaultPolicy`): `opaque` on the workload's
 * opaque ports, else protocol detection, with the default policy's
 * authorization. A selected port gets the Server's protocol and the
 * authorizations of the ServerAuthorizations that select it and of the
 * policies that target it (or its namespace), plus its
 * `accessPolicy` unless that is `deny`.
 */
export function resolveInboundServer(
  model: PolicyModel,
  workload: { namespace: string; name: string },
  port: number,
  options: ResolveOptions,
): InboundServer | undefined {
  const found = model.workloads.find((w) => w.namespace === workload.namespace && w.name === workload.name);
  if (found === undefined) return undefined;
  const server = findServer(model, found, port);
  if (server === undefined) {
    const policy = found.defaultPolicy ?? options.defaultPolicy;
    return {
      protocol: protocolOf(found.opaquePorts.includes(port) ? "opaque" : "unknown", options.detectTimeoutMs),
      serverIps: [],
      authorizations: defaultAuthz(policy, options.clusterNetworks),
      labels: { group: "", kind: "default", name: policy },
    };
  }
  const authorizations: Authz[] = [];
  for (const authorization of model.serverAuthorizations ?? []) {
    if (authorizesServer(authorization, server)) authorizations.push(serverAuthorizationAuthz(authorization, options));
  }
  for (const policy of model.authorizationPolicies) {
    if (policy.namespace !== server.namespace) continue;
    if (policy.targetRef.kind === "Server" && policy.targetRef.name !== server.name) continue;
    const authz = policyAuthz(policy, model, options);
    if (authz !== undefined) authorizations.push(authz);
  }
  if (server.accessPolicy !== "deny") authorizations.push(...defaultAuthz(server.accessPolicy, options.clusterNetworks));
  return {
    protocol: protocolOf(server.proxyProtocol, options.detectTimeoutMs),
    serverIps: [],
    authorizations,
    labels: { group: POLICY_GROUP, kind: "server", name: server.name },
  };
}
