import { ApiError, ipAddressToString, ipToIpAddress } from "@meshtls/api";
import { isDnsLabel, isDnsSubdomain } from "@meshtls/pki";
import { DestinationError } from "./errors.js";

/**
 * What a `Get` path names: a service port (with `instance`, only the
 * endpoint of that hostname: a StatefulSet pod), or an IP address and port.
 */
export type Target =
  | { kind: "service"; name: string; namespace: string; port: number; instance?: string }
  | { kind: "ip"; ip: string; port: number };

/** The parts of a proxy's context token that the server uses. */
export interface ContextToken {
  namespace?: string;
  pod?: string;
  nodeName?: string;
}

/** The port of an authority that names none (`api.default.svc.cluster.local` means `…:80`). */
export const DEFAULT_AUTHORITY_PORT = 80;

/** Longest authority accepted: a 253-character name, a colon and a port. */
const MAX_AUTHORITY_CHARS = 253 + 6;
const MAX_CONTEXT_TOKEN_CHARS = 4096;

function invalid(authority: string, reason: string): never {
  throw new DestinationError("ERR_AUTHORITY_INVALID", `invalid authority ${JSON.stringify(authority.slice(0, 300))}: ${reason}`);
}

/**
 * Parses a Linkerd context token: JSON `{"ns":"<namespace>","nodeName":...,"pod":...}`, or the older `ns:<namespace>`.
 * Anything else yields `{}` (upstream proxies may send an empty token).
 */
export function parseContextToken(token: string): ContextToken {
  if (token === "" || token.length > MAX_CONTEXT_TOKEN_CHARS) return {};
  if (token.startsWith("ns:")) {
    // The older form `ns:<namespace>`, which Linkerd's destination still reads (server.go).
    const ns = token.slice(3).trim();
    return isDnsLabel(ns) ? { namespace: ns } : {};
  }
  let value: unknown;
  try {
    value = JSON.parse(token);
  } catch {
    return {};
  }
  if (typeof value !== "object" || value === null) return {};
  const { ns, pod, nodeName } = value as Record<string, unknown>;
  const result: ContextToken = {};
  if (typeof ns === "string" && isDnsLabel(ns)) result.namespace = ns;
  if (typeof pod === "string" && pod.length <= 253) result.pod = pod;
  if (typeof nodeName === "string" && nodeName.length <= 253) result.nodeName = nodeName;
  return result;
}

/**
 * Parses a `Get` path `<host>[:<port>]` into a target; without a port it is 80. Names resolve as
 * Kubernetes DNS would from a pod in `contextNamespace`: `api`,
 * `api.default`, `api.default.svc` and `api.default.svc.<clusterDomain>`
 * (trailing dot allowed) all name service `api` in `default`;
 * `<hostname>.api.default.svc.<clusterDomain>` names the endpoint of `api`
 * whose hostname is `<hostname>` (Linkerd's instance ID). IPv6 hosts are
 * bracketed: `[fd00::1]:80`.
 *
 * @param options.clusterDomain Default "cluster.local".
 * @param options.contextNamespace Namespace of the asking proxy. Default "default".
 * @throws DestinationError `ERR_AUTHORITY_INVALID`
 */
export function parseAuthority(options: { authority: string; clusterDomain?: string; contextNamespace?: string }): Target {
  const { authority } = options;
  const clusterDomain = options.clusterDomain ?? "cluster.local";
  const contextNamespace = options.contextNamespace ?? "default";
  if (authority.length === 0) invalid(authority, "empty");
  if (authority.length > MAX_AUTHORITY_CHARS) invalid(authority, `longer than ${MAX_AUTHORITY_CHARS} characters`);
  // Without a port the authority means port 80, as Linkerd's destination reads it (server.go getHostAndPort).
  const colon = authority.lastIndexOf(":");
  const portless = colon < 0 || (authority.startsWith("[") && authority.endsWith("]"));
  const host = portless ? authority : authority.slice(0, colon);
  const portText = portless ? String(DEFAULT_AUTHORITY_PORT) : authority.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    invalid(authority, "the port must be a number in 1..65535");
  }
  const port = Number(portText);

  const bracketed = host.startsWith("[") && host.endsWith("]");
  if (bracketed || /^[0-9.]+$/.test(host)) {
    try {
      return { kind: "ip", ip: ipAddressToString(ipToIpAddress(host)), port };
    } catch (error) {
      if (error instanceof ApiError) invalid(authority, "not a valid IP address");
      throw error;
    }
  }
  if (host.includes(":")) invalid(authority, "an IPv6 host must be in brackets");

  const name = (host.endsWith(".") ? host.slice(0, -1) : host).toLowerCase();
  if (!isDnsSubdomain(name)) invalid(authority, "the host is not a DNS name");
  const labels = name.split(".");
  const [service, namespace, svc] = labels;
  if (service === undefined) invalid(authority, "the host is not a DNS name");
  const suffix = labels.slice(3).join(".");
  if (labels.length === 1) return { kind: "service", name: service, namespace: contextNamespace, port };
  if (namespace !== undefined && (labels.length === 2 || (svc === "svc" && (labels.length === 3 || suffix === clusterDomain)))) {
    return { kind: "service", name: service, namespace, port };
  }
  // <instance>.<svc>.<ns>.svc.<clusterDomain>: only fully qualified, as Linkerd's parseK8sServiceName.
  const [, instanceService, instanceNamespace, instanceSvc] = labels;
  if (instanceService !== undefined && instanceNamespace !== undefined && instanceSvc === "svc" && labels.slice(4).join(".") === clusterDomain) {
    return { kind: "service", name: instanceService, namespace: instanceNamespace, port, instance: service };
  }
  return invalid(authority, `not a service name (<svc>[.<ns>[.svc[.${clusterDomain}]]] or <hostname>.<svc>.<ns>.svc.${clusterDomain})`);
}
