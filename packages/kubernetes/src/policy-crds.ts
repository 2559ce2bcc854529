/**
 * Linkerd's policy resources (`policy.linkerd.io`) read into the policy
 * core's model, field by field as the CRDs define them
 * (`charts/linkerd-crds/templates/policy/*.yaml`). An object the model cannot
 * hold (an HTTPRoute target, an external workload selector, a bad CIDR) is
 * left out and reported, never guessed at.
 */

import {
  DEFAULT_POLICIES,
  parseCidr,
  PROXY_PROTOCOLS,
  type AuthenticationRef,
  type AuthorizationPolicy,
  type DefaultPolicy,
  type IdentityRef,
  type LabelSelector,
  type MeshTLSAuthentication,
  type NetworkAuthentication,
  type PolicyServer,
  type ProxyProtocolName,
  type ServerAuthorization,
} from "@meshtls/destination";
import type { KubeObject } from "./types.ts";

/** A conversion's result: the model object, or why the resource was left out. */
export type Converted<T> = { ok: true; value: T } | { ok: false; reason: string };

type Spec = Record<string, unknown>;
const specOf = (object: KubeObject): Spec => ((object as { spec?: unknown }).spec ?? {}) as Spec;
const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);
const strings = (value: unknown): string[] => (Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : []);

function labelSelector(value: unknown, field = "podSelector"): LabelSelector | string {
  if (!isRecord(value)) return `${field} is not an object`;
  const matchLabels: Record<string, string> = {};
  if (isRecord(value.matchLabels)) for (const [k, v] of Object.entries(value.matchLabels)) if (typeof v === "string") matchLabels[k] = v;
  const matchExpressions: LabelSelector["matchExpressions"][number][] = [];
  for (const e of Array.isArray(value.matchExpressions) ? value.matchExpressions : []) {
    if (!isRecord(e) || typeof e.key !== "string" || !["In", "NotIn", "Exists", "DoesNotExist"].includes(e.operator as string)) {
      return "a matchExpressions entry is not {key, operator: In|NotIn|Exists|DoesNotExist, values}";
    }
    matchExpressions.push({ key: e.key, operator: e.operator as "In", values: strings(e.values) });
  }
  return { matchLabels, matchExpressions };
}

export function toServer(object: KubeObject): Converted<PolicyServer> {
  const spec = specOf(object);
  if (spec.externalWorkloadSelector !== undefined) return { ok: false, reason: "externalWorkloadSelector is not supported" };
  const selector = labelSelector(spec.podSelector);
  if (typeof selector === "string") return { ok: false, reason: selector };
  const port = spec.port;
  if (!((typeof port === "number" && Number.isInteger(port) && port >= 1 && port <= 65535) || (typeof port === "string" && port !== ""))) {
    return { ok: false, reason: "port is not 1-65535 or a port name" };
  }
  const proxyProtocol = (spec.proxyProtocol ?? "unknown") as ProxyProtocolName;
  if (!PROXY_PROTOCOLS.includes(proxyProtocol)) return { ok: false, reason: `proxyProtocol ${JSON.stringify(spec.proxyProtocol)} is not one of ${PROXY_PROTOCOLS.join(", ")}` };
  const accessPolicy = (spec.accessPolicy ?? "deny") as DefaultPolicy;
  if (!DEFAULT_POLICIES.includes(accessPolicy)) return { ok: false, reason: `accessPolicy ${JSON.stringify(spec.accessPolicy)} is not one of ${DEFAULT_POLICIES.join(", ")}` };
  const labels = object.metadata.labels ?? {};
  return { ok: true, value: { name: object.metadata.name, namespace: object.metadata.namespace ?? "default", podSelector: selector, port, proxyProtocol, accessPolicy, labels } };
}

export function toAuthorizationPolicy(object: KubeObject): Converted<AuthorizationPolicy> {
  const spec = specOf(object);
  const target = spec.targetRef;
  if (!isRecord(target) || typeof target.kind !== "string") return { ok: false, reason: "targetRef has no kind" };
  let targetRef: AuthorizationPolicy["targetRef"];
  if (target.kind === "Namespace") targetRef = { kind: "Namespace" };
  else if (target.kind === "Server" && typeof target.name === "string") targetRef = { kind: "Server", name: target.name };
  else return { ok: false, reason: `targetRef kind ${target.kind} is not supported (Server or Namespace)` };
  const refs: AuthenticationRef[] = [];
  for (const ref of Array.isArray(spec.requiredAuthenticationRefs) ? spec.requiredAuthenticationRefs : []) {
    if (!isRecord(ref) || !["MeshTLSAuthentication", "NetworkAuthentication", "ServiceAccount"].includes(ref.kind as string) || typeof ref.name !== "string") {
      return { ok: false, reason: "a requiredAuthenticationRefs entry is not {kind: MeshTLSAuthentication|NetworkAuthentication|ServiceAccount, name}" };
    }
    refs.push({ kind: ref.kind as AuthenticationRef["kind"], name: ref.name, ...(typeof ref.namespace === "string" ? { namespace: ref.namespace } : {}) });
  }
  return { ok: true, value: { name: object.metadata.name, namespace: object.metadata.namespace ?? "default", targetRef, requiredAuthenticationRefs: refs } };
}

export function toMeshTLSAuthentication(object: KubeObject): Converted<MeshTLSAuthentication> {
  const spec = specOf(object);
  const identities = strings(spec.identities);
  const identityRefs: IdentityRef[] = [];
  for (const ref of Array.isArray(spec.identityRefs) ? spec.identityRefs : []) {
    if (!isRecord(ref)) return { ok: false, reason: "an identityRefs entry is not an object" };
    if (ref.kind === "ServiceAccount" && typeof ref.name === "string") {
      identityRefs.push({ kind: "ServiceAccount", name: ref.name, ...(typeof ref.namespace === "string" ? { namespace: ref.namespace } : {}) });
    } else if (ref.kind === "Namespace") {
      identityRefs.push({ kind: "Namespace", ...(typeof ref.name === "string" ? { name: ref.name } : {}) });
    } else {
      return { ok: false, reason: "an identityRefs entry is not {kind: ServiceAccount, name} or {kind: Namespace}" };
    }
  }
  if ((identities.length > 0) === (identityRefs.length > 0)) return { ok: false, reason: "exactly one of identities and identityRefs must be given" };
  return { ok: true, value: { name: object.metadata.name, namespace: object.metadata.namespace ?? "default", identities, identityRefs } };
}

function networksOf(value: unknown): NetworkAuthentication["networks"][number][] | string {
  const networks: NetworkAuthentication["networks"][number][] = [];
  try {
    for (const network of Array.isArray(value) ? value : []) {
      if (!isRecord(network) || typeof network.cidr !== "string") return "a networks entry has no cidr";
      networks.push({ cidr: parseCidr(network.cidr), except: strings(network.except).map((c) => parseCidr(c)) });
    }
  } catch (error) {
    return (error as Error).message;
  }
  return networks;
}

/**
 * The older ServerAuthorization (v1beta1), as Linkerd's policy controller
 * indexes it (`policy-controller/k8s/index/src/inbound/server_authorization.rs`):
 * `server.name` wins over `server.selector` (absent: every Server of the
 * namespace); `client.unauthenticated`, else `client.meshTLS` with
 * `unauthenticatedTLS`, else its `identities` and `serviceAccounts` (at least
 * one); neither is refused. No `networks`: the cluster's networks.
 */
export function toServerAuthorization(object: KubeObject): Converted<ServerAuthorization> {
  const spec = specOf(object);
  const server = isRecord(spec.server) ? spec.server : {};
  let target: ServerAuthorization["server"];
  if (typeof server.name === "string") target = { name: server.name };
  else {
    const selector = server.selector === undefined ? { matchLabels: {}, matchExpressions: [] } : labelSelector(server.selector, "server.selector");
    if (typeof selector === "string") return { ok: false, reason: selector };
    target = { selector };
  }
  const client = isRecord(spec.client) ? spec.client : {};
  const networks = networksOf(client.networks);
  if (typeof networks === "string") return { ok: false, reason: networks };
  let authorized: ServerAuthorization["client"];
  if (client.unauthenticated === true) authorized = { kind: "unauthenticated" };
  else if (isRecord(client.meshTLS)) {
    const mtls = client.meshTLS;
    if (mtls.unauthenticatedTLS === true) authorized = { kind: "tls-unauthenticated" };
    else {
      const serviceAccounts: { name: string; namespace?: string }[] = [];
      for (const sa of Array.isArray(mtls.serviceAccounts) ? mtls.serviceAccounts : []) {
        if (!isRecord(sa) || typeof sa.name !== "string") return { ok: false, reason: "a meshTLS.serviceAccounts entry has no name" };
        serviceAccounts.push({ name: sa.name, ...(typeof sa.namespace === "string" ? { namespace: sa.namespace } : {}) });
      }
      const identities = strings(mtls.identities);
      if (identities.length === 0 && serviceAccounts.length === 0) return { ok: false, reason: "authorization authorizes no clients" };
      authorized = { kind: "identities", identities, serviceAccounts };
    }
  } else {
    return { ok: false, reason: "no client authentication configured (client.unauthenticated or client.meshTLS)" };
  }
  return { ok: true, value: { name: object.metadata.name, namespace: object.metadata.namespace ?? "default", server: target, networks, client: authorized } };
}

export function toNetworkAuthentication(object: KubeObject): Converted<NetworkAuthentication> {
  const spec = specOf(object);
  const networks = networksOf(spec.networks);
  if (typeof networks === "string") return { ok: false, reason: networks };
  if (networks.length === 0) return { ok: false, reason: "networks is empty" };
  return { ok: true, value: { name: object.metadata.name, namespace: object.metadata.namespace ?? "default", networks } };
}
