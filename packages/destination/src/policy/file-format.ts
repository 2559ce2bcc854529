import { isDnsLabel, isDnsSubdomain } from "@meshtls/pki";
import { isScalar, type Node, type YAMLMap } from "yaml";
import { DestinationError } from "../errors.js";
import { readStringList, readStringMap, type Reader } from "../yaml-reader.js";
import { cidrContains, parseCidr } from "./cidr.js";
import {
  DEFAULT_POLICIES,
  PROXY_PROTOCOLS,
  type AuthenticationRef,
  type AuthorizationPolicy,
  type Cidr,
  type DefaultPolicy,
  type IdentityRef,
  type LabelSelector,
  type MeshTLSAuthentication,
  type NetworkAuthentication,
  type PolicyModel,
  type PolicyServer,
  type PolicyWorkload,
} from "./model.js";

/** The registry file's top-level keys of the policy model. */
export const POLICY_KEYS = ["workloads", "servers", "authorizationPolicies", "meshTLSAuthentications", "networkAuthentications"] as const;

type Root = YAMLMap<unknown, unknown>;

function oneOf<T extends string>(r: Reader, map: Root, key: string, what: string, allowed: readonly T[]): T | undefined {
  const value = r.string(map, key, what);
  if (value !== undefined && !(allowed as readonly string[]).includes(value)) {
    r.fail(r.field(map, key), `${what}.${key} ${JSON.stringify(value)} is not one of ${allowed.join(", ")}`);
  }
  return value as T | undefined;
}

function nameAndNamespace(r: Reader, map: Root, what: string, nameCheck: (s: string) => boolean = isDnsSubdomain): { name: string; namespace: string } {
  const name = r.string(map, "name", what);
  if (name === undefined) r.fail(map, `${what}.name is required`);
  if (!nameCheck(name)) r.fail(r.field(map, "name"), `${what}.name ${JSON.stringify(name)} is not a DNS-1123 name`);
  return { name, namespace: r.label(map, "namespace", what) ?? "default" };
}

function cidr(r: Reader, node: Node, what: string): Cidr {
  if (!isScalar(node) || typeof node.value !== "string") r.fail(node, `${what} must be a CIDR string (e.g. 10.0.0.0/8)`);
  try {
    return parseCidr(node.value);
  } catch (error) {
    if (error instanceof DestinationError) r.fail(node, `${what}: ${error.reason}`);
    throw error;
  }
}

function readWorkload(r: Reader, node: Node, what: string): PolicyWorkload {
  const map = r.map(node, what, ["name", "namespace", "labels", "ports", "defaultPolicy", "opaquePorts"]);
  const workload: PolicyWorkload = {
    ...nameAndNamespace(r, map, what),
    labels: readStringMap(r, r.field(map, "labels"), `${what}.labels`),
    ports: [],
    opaquePorts: [],
  };
  const portsNode = r.field(map, "ports");
  if (portsNode !== undefined) {
    workload.ports = r.seq(portsNode, `${what}.ports`).map((p, i) => {
      const w = `${what}.ports[${i}]`;
      const port = r.map(p, w, ["name", "port"]);
      const name = r.label(port, "name", w);
      const number = r.int(port, "port", w, 1, 65535);
      if (name === undefined || number === undefined) r.fail(port, `${w} needs name and port`);
      return { name, port: number };
    });
  }
  const opaqueNode = r.field(map, "opaquePorts");
  if (opaqueNode !== undefined) {
    workload.opaquePorts = r.seq(opaqueNode, `${what}.opaquePorts`).map((p, i) => {
      if (!isScalar(p) || typeof p.value !== "number" || !Number.isInteger(p.value) || p.value < 1 || p.value > 65535) {
        r.fail(p, `${what}.opaquePorts[${i}] must be a port in 1..65535`);
      }
      return p.value;
    });
  }
  const defaultPolicy = oneOf<DefaultPolicy>(r, map, "defaultPolicy", what, DEFAULT_POLICIES);
  if (defaultPolicy !== undefined) workload.defaultPolicy = defaultPolicy;
  return workload;
}

function readSelector(r: Reader, node: Node | undefined, what: string): LabelSelector {
  if (node === undefined) r.fail(undefined, `${what} is required ({} selects every workload of the namespace)`);
  const map = r.map(node, what, ["matchLabels", "matchExpressions"]);
  const expressionsNode = r.field(map, "matchExpressions");
  const matchExpressions = (expressionsNode === undefined ? [] : r.seq(expressionsNode, `${what}.matchExpressions`)).map((e, i) => {
    const w = `${what}.matchExpressions[${i}]`;
    const expression = r.map(e, w, ["key", "operator", "values"]);
    const key = r.string(expression, "key", w);
    const operator = oneOf(r, expression, "operator", w, ["In", "NotIn", "Exists", "DoesNotExist"] as const);
    if (key === undefined || operator === undefined) r.fail(expression, `${w} needs key and operator`);
    const { values } = readStringList(r, r.field(expression, "values"), `${w}.values`);
    if ((operator === "In" || operator === "NotIn") !== values.length > 0) {
      r.fail(expression, `${w}: ${operator} ${operator === "In" || operator === "NotIn" ? "needs" : "takes no"} values`);
    }
    return { key, operator, values };
  });
  return { matchLabels: readStringMap(r, r.field(map, "matchLabels"), `${what}.matchLabels`), matchExpressions };
}

function readServer(r: Reader, node: Node, what: string): PolicyServer {
  const map = r.map(node, what, ["name", "namespace", "podSelector", "port", "proxyProtocol", "accessPolicy"]);
  const portNode = r.field(map, "port");
  let port: number | string;
  if (isScalar(portNode) && typeof portNode.value === "number") {
    port = r.int(map, "port", what, 1, 65535) as number;
  } else {
    const name = r.string(map, "port", what);
    if (name === undefined) r.fail(map, `${what}.port is required (a number or a workload port's name)`);
    if (!isDnsLabel(name)) r.fail(portNode, `${what}.port ${JSON.stringify(name)} is neither a port number nor a port name`);
    port = name;
  }
  return {
    ...nameAndNamespace(r, map, what),
    podSelector: readSelector(r, r.field(map, "podSelector"), `${what}.podSelector`),
    port,
    proxyProtocol: oneOf(r, map, "proxyProtocol", what, PROXY_PROTOCOLS) ?? "unknown",
    accessPolicy: oneOf<DefaultPolicy>(r, map, "accessPolicy", what, DEFAULT_POLICIES) ?? "deny",
  };
}

function readAuthorizationPolicy(r: Reader, node: Node, what: string): AuthorizationPolicy {
  const map = r.map(node, what, ["name", "namespace", "targetRef", "requiredAuthenticationRefs"]);
  const id = nameAndNamespace(r, map, what);
  const targetNode = r.field(map, "targetRef");
  if (targetNode === undefined) r.fail(map, `${what}.targetRef is required`);
  const target = r.map(targetNode, `${what}.targetRef`, ["group", "kind", "name"]);
  const kind = oneOf(r, target, "kind", `${what}.targetRef`, ["Server", "Namespace"] as const);
  const targetName = r.string(target, "name", `${what}.targetRef`);
  let targetRef: AuthorizationPolicy["targetRef"];
  if (kind === "Server") {
    if (targetName === undefined) r.fail(target, `${what}.targetRef.name is required for kind Server`);
    targetRef = { kind, name: targetName };
  } else if (kind === "Namespace") {
    if (targetName !== undefined && targetName !== id.namespace) r.fail(target, `${what}.targetRef: a policy can only target its own namespace (${id.namespace})`);
    targetRef = { kind };
  } else {
    r.fail(target, `${what}.targetRef.kind is required (Server or Namespace; routes are not supported yet)`);
  }
  const refsNode = r.field(map, "requiredAuthenticationRefs");
  const refNodes = refsNode === undefined ? [] : r.seq(refsNode, `${what}.requiredAuthenticationRefs`);
  const refs = refNodes.map((n, i): AuthenticationRef => {
    const w = `${what}.requiredAuthenticationRefs[${i}]`;
    const ref = r.map(n, w, ["group", "kind", "name", "namespace"]);
    const refKind = oneOf(r, ref, "kind", w, ["MeshTLSAuthentication", "NetworkAuthentication", "ServiceAccount"] as const);
    const name = r.string(ref, "name", w);
    if (refKind === undefined || name === undefined) r.fail(ref, `${w} needs kind and name`);
    const namespace = r.label(ref, "namespace", w);
    return namespace === undefined ? { kind: refKind, name } : { kind: refKind, name, namespace };
  });
  const count = (k: AuthenticationRef["kind"]) => refs.filter((x) => x.kind === k).length;
  if (count("MeshTLSAuthentication") > 1 || count("NetworkAuthentication") > 1) {
    r.fail(refsNode, `${what}: at most one MeshTLSAuthentication and one NetworkAuthentication (all required references must match)`);
  }
  if (count("MeshTLSAuthentication") > 0 && count("ServiceAccount") > 0) r.fail(refsNode, `${what}: name clients by a MeshTLSAuthentication or by ServiceAccounts, not both`);
  return { ...id, targetRef, requiredAuthenticationRefs: refs };
}

function readMeshTLS(r: Reader, node: Node, what: string): MeshTLSAuthentication {
  const map = r.map(node, what, ["name", "namespace", "identities", "identityRefs"]);
  const id = nameAndNamespace(r, map, what);
  const { values: identities, nodes } = readStringList(r, r.field(map, "identities"), `${what}.identities`);
  identities.forEach((value, i) => {
    const name = value.startsWith("*.") ? value.slice(2) : value;
    if (value !== "*" && !isDnsSubdomain(name)) r.fail(nodes[i], `${what}.identities[${i}] ${JSON.stringify(value)} is not an identity name, "*" or "*.<suffix>"`);
  });
  const refsNode = r.field(map, "identityRefs");
  const identityRefs = (refsNode === undefined ? [] : r.seq(refsNode, `${what}.identityRefs`)).map((n, i): IdentityRef => {
    const w = `${what}.identityRefs[${i}]`;
    const ref = r.map(n, w, ["group", "kind", "name", "namespace"]);
    const kind = oneOf(r, ref, "kind", w, ["ServiceAccount", "Namespace"] as const);
    const name = r.label(ref, "name", w);
    if (kind === "Namespace") {
      if (r.field(ref, "namespace") !== undefined) r.fail(ref, `${w}: a Namespace reference takes only name`);
      return name === undefined ? { kind } : { kind, name };
    }
    if (kind === undefined || name === undefined) r.fail(ref, `${w} needs kind (ServiceAccount or Namespace) and, for ServiceAccount, name`);
    const namespace = r.label(ref, "namespace", w);
    return namespace === undefined ? { kind, name } : { kind, name, namespace };
  });
  if ((identities.length > 0) === (identityRefs.length > 0)) r.fail(map, `${what}: give exactly one of identities and identityRefs, not empty`);
  return { ...id, identities, identityRefs };
}

function readNetworkAuthentication(r: Reader, node: Node, what: string): NetworkAuthentication {
  const map = r.map(node, what, ["name", "namespace", "networks"]);
  const id = nameAndNamespace(r, map, what);
  const networksNode = r.field(map, "networks");
  if (networksNode === undefined) r.fail(map, `${what}.networks is required`);
  const networks = r.seq(networksNode, `${what}.networks`).map((n, i) => {
    const w = `${what}.networks[${i}]`;
    const network = r.map(n, w, ["cidr", "except"]);
    const cidrNode = r.field(network, "cidr");
    if (cidrNode === undefined) r.fail(network, `${w}.cidr is required`);
    const outer = cidr(r, cidrNode, `${w}.cidr`);
    const exceptNode = r.field(network, "except");
    const except = (exceptNode === undefined ? [] : r.seq(exceptNode, `${w}.except`)).map((e, j) => {
      const inner = cidr(r, e, `${w}.except[${j}]`);
      if (!cidrContains(outer, inner)) r.fail(e, `${w}.except[${j}] is not inside ${outer.address}/${outer.prefixLength}`);
      return inner;
    });
    return { cidr: outer, except };
  });
  if (networks.length === 0) r.fail(networksNode, `${what}.networks must not be empty`);
  return { ...id, networks };
}

function readList<T extends { name: string; namespace: string }>(
  r: Reader,
  root: Root,
  key: (typeof POLICY_KEYS)[number],
  read: (r: Reader, node: Node, what: string) => T,
): T[] {
  const listNode = r.field(root, key);
  if (listNode === undefined) return [];
  const nodes = r.seq(listNode, key);
  const seen = new Map<string, number>();
  return nodes.map((node, i) => {
    const item = read(r, node, `${key}[${i}]`);
    const id = `${item.namespace}/${item.name}`;
    if (seen.has(id)) r.fail(node, `${key}[${i}]: ${id} is already defined at ${key}[${seen.get(id)}]`);
    seen.set(id, i);
    return item;
  });
}

/**
 * Reads the policy part of a registry file (`workloads`, `servers`,
 * `authorizationPolicies`, `meshTLSAuthentications`, `networkAuthentications`);
 * every reference must name an object of the file.
 * @throws DestinationError `ERR_REGISTRY_INVALID` with file, line and column
 */
export function readPolicyModel(r: Reader, root: Root): PolicyModel {
  const workloads = readList(r, root, "workloads", readWorkload);
  const servers = readList(r, root, "servers", readServer);
  const authorizationPolicies = readList(r, root, "authorizationPolicies", readAuthorizationPolicy);
  const meshTLSAuthentications = readList(r, root, "meshTLSAuthentications", readMeshTLS);
  const networkAuthentications = readList(r, root, "networkAuthentications", readNetworkAuthentication);
  const has = (list: readonly { name: string; namespace: string }[], name: string, namespace: string) =>
    list.some((x) => x.name === name && x.namespace === namespace);
  const policyNodes = authorizationPolicies.length > 0 ? r.seq(r.field(root, "authorizationPolicies"), "authorizationPolicies") : [];
  authorizationPolicies.forEach((policy, i) => {
    const what = `authorizationPolicies[${i}]`;
    const map = r.map(policyNodes[i], what, ["name", "namespace", "targetRef", "requiredAuthenticationRefs"]);
    if (policy.targetRef.kind === "Server" && !has(servers, policy.targetRef.name, policy.namespace)) {
      r.fail(r.field(map, "targetRef"), `${what}.targetRef: no Server ${policy.namespace}/${policy.targetRef.name}`);
    }
    const refNodes = policy.requiredAuthenticationRefs.length > 0 ? r.seq(r.field(map, "requiredAuthenticationRefs"), what) : [];
    policy.requiredAuthenticationRefs.forEach((ref, j) => {
      const namespace = ref.namespace ?? policy.namespace;
      const list = ref.kind === "MeshTLSAuthentication" ? meshTLSAuthentications : ref.kind === "NetworkAuthentication" ? networkAuthentications : undefined;
      if (list !== undefined && !has(list, ref.name, namespace)) r.fail(refNodes[j], `${what}.requiredAuthenticationRefs[${j}]: no ${ref.kind} ${namespace}/${ref.name}`);
    });
  });
  return { workloads, servers, authorizationPolicies, meshTLSAuthentications, networkAuthentications };
}
