import { isScalar, LineCounter, parseDocument, type Node } from "yaml";
import { DestinationError } from "./errors.js";
import { Reader } from "./yaml-reader.js";
import { POLICY_KEYS, readPolicyModel } from "./policy/file-format.js";
import {
  DEFAULT_INBOUND_PORT,
  DEFAULT_WEIGHT,
  type RegistryEndpoint,
  type RegistryService,
  type RegistryServicePort,
  type RegistrySnapshot,
} from "./registry.js";

/** Largest registry file accepted: 8 MiB. */
export const MAX_REGISTRY_FILE_BYTES = 8 * 1024 * 1024;

function readPort(r: Reader, node: Node, what: string): RegistryServicePort {
  if (isScalar(node) && typeof node.value === "number") {
    if (!Number.isInteger(node.value) || node.value < 1 || node.value > 65535) r.fail(node, `${what} must be a port in 1..65535`);
    return { port: node.value, targetPort: node.value };
  }
  const map = r.map(node, what, ["port", "targetPort", "name"]);
  const port = r.int(map, "port", what, 1, 65535);
  if (port === undefined) r.fail(map, `${what}.port is required`);
  const targetPort = r.int(map, "targetPort", what, 1, 65535) ?? port;
  const name = r.string(map, "name", what);
  return name === undefined ? { port, targetPort } : { port, targetPort, name };
}

function readEndpoint(r: Reader, node: Node, what: string): RegistryEndpoint {
  const map = r.map(node, what, ["address", "meshed", "serviceAccount", "inboundPort", "pod", "weight", "protocolHints"]);
  const address = r.ip(map, "address", what);
  if (address === undefined) r.fail(map, `${what}.address is required`);
  const meshed = r.bool(map, "meshed", what) ?? true;
  const endpoint: RegistryEndpoint = {
    address,
    meshed,
    // Kubernetes gives every pod a ServiceAccount, "default" unless named.
    serviceAccount: r.label(map, "serviceAccount", what) ?? "default",
    inboundPort: r.int(map, "inboundPort", what, 1, 65535) ?? DEFAULT_INBOUND_PORT,
    weight: r.int(map, "weight", what, 1, 0xffffffff) ?? DEFAULT_WEIGHT,
  };
  const pod = r.string(map, "pod", what);
  if (pod !== undefined) endpoint.pod = pod;
  const hintsNode = r.field(map, "protocolHints");
  if (hintsNode !== undefined) endpoint.protocolHints = readProtocolHints(r, hintsNode, `${what}.protocolHints`);
  return endpoint;
}

/** Linkerd's protocol hints of a pod with a control-plane label: `h2` on every port but the opaque and skipped ones. */
function readProtocolHints(r: Reader, node: Node, what: string): { opaquePorts: number[]; skippedPorts: number[] } {
  const map = r.map(node, what, ["opaquePorts", "skippedPorts"]);
  const ports = (key: string): number[] => {
    const list = r.field(map, key);
    if (list === undefined) return [];
    return r.seq(list, `${what}.${key}`).map((item, i) => {
      if (!isScalar(item) || typeof item.value !== "number" || !Number.isInteger(item.value) || item.value < 1 || item.value > 65535) r.fail(item, `${what}.${key}[${i}] must be a port in 1..65535`);
      return item.value;
    });
  };
  return { opaquePorts: ports("opaquePorts"), skippedPorts: ports("skippedPorts") };
}

function readService(r: Reader, node: Node, index: number): RegistryService {
  const what = `services[${index}]`;
  const map = r.map(node, what, ["name", "namespace", "clusterIP", "ports", "endpoints"]);
  const name = r.label(map, "name", what);
  if (name === undefined) r.fail(map, `${what}.name is required`);
  const namespace = r.label(map, "namespace", what) ?? "default";
  const portsNode = r.field(map, "ports");
  const ports = portsNode === undefined ? [] : r.seq(portsNode, `${what}.ports`).map((p, i) => readPort(r, p, `${what}.ports[${i}]`));
  const seenPorts = new Set<number>();
  ports.forEach((p, i) => {
    if (seenPorts.has(p.port)) r.fail(r.seq(portsNode, "")[i], `${what}.ports[${i}]: port ${p.port} is listed twice`);
    seenPorts.add(p.port);
  });
  const endpointsNode = r.field(map, "endpoints");
  const endpointNodes = endpointsNode === undefined ? [] : r.seq(endpointsNode, `${what}.endpoints`);
  const endpoints = endpointNodes.map((e, i) => readEndpoint(r, e, `${what}.endpoints[${i}]`));
  const seenAddresses = new Set<string>();
  endpoints.forEach((e, i) => {
    if (seenAddresses.has(e.address)) r.fail(endpointNodes[i], `${what}.endpoints[${i}]: address ${e.address} is listed twice`);
    seenAddresses.add(e.address);
  });
  const service: RegistryService = { name, namespace, ports, endpoints };
  const clusterIP = r.ip(map, "clusterIP", what);
  if (clusterIP !== undefined) service.clusterIP = clusterIP;
  return service;
}

/**
 * Parses a registry file (YAML, or JSON which is YAML) into a snapshot,
 * checking every field. `file` only names the source in errors.
 *
 * ```yaml
 * services:
 *   - name: api                  # DNS label, required
 *     namespace: default         # default "default"
 *     clusterIP: 10.96.0.10      # optional virtual IP
 *     ports: [{ port: 80, targetPort: 8080 }]   # optional; absent = every port maps to itself
 *     endpoints:
 *       - address: 127.0.1.1     # IP literal, required
 *         serviceAccount: api    # default "default"
 *         meshed: true           # default true
 *         inboundPort: 4143      # default 4143
 *         pod: api-0             # optional, for metric labels
 *         weight: 10000          # default 10000
 * ```
 * @throws DestinationError `ERR_REGISTRY_INVALID` with `file`, `line`, `column` and `reason`
 */
export function parseRegistry(options: { text: string; file: string }): RegistrySnapshot {
  const { text, file } = options;
  if (text.length > MAX_REGISTRY_FILE_BYTES) {
    throw new DestinationError("ERR_REGISTRY_INVALID", `file is larger than ${MAX_REGISTRY_FILE_BYTES} bytes`, { file });
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: true, strict: true });
  const syntax = doc.errors[0];
  if (syntax !== undefined) {
    const pos = syntax.linePos?.[0] ?? lines.linePos(syntax.pos[0]);
    // The first line is the reason; yaml appends a source excerpt after it.
    const reason = (syntax.message.split("\n")[0] ?? syntax.code).replace(/ at line \d+, column \d+:?$/, "");
    throw new DestinationError("ERR_REGISTRY_INVALID", reason, {
      file,
      ...(pos === undefined ? {} : { line: pos.line, column: pos.col }),
    });
  }
  const r = new Reader(file, lines);
  if (doc.contents === null) r.fail(undefined, "the file is empty: expected a mapping with `services` (and the policy model)");
  const root = r.map(doc.contents, "the file", ["services", ...POLICY_KEYS]);
  const servicesNode = r.field(root, "services");
  const services = servicesNode === undefined ? [] : r.seq(servicesNode, "services").map((s, i) => readService(r, s, i));
  const seen = new Map<string, number>();
  const clusterIPs = new Map<string, number>();
  services.forEach((s, i) => {
    const key = `${s.name}.${s.namespace}`;
    const node = r.seq(servicesNode, "services")[i];
    if (seen.has(key)) r.fail(node, `services[${i}]: service ${key} is already defined at services[${seen.get(key)}]`);
    seen.set(key, i);
    if (s.clusterIP !== undefined) {
      if (clusterIPs.has(s.clusterIP)) r.fail(node, `services[${i}]: clusterIP ${s.clusterIP} is already used by services[${clusterIPs.get(s.clusterIP)}]`);
      clusterIPs.set(s.clusterIP, i);
    }
  });
  // Files without a policy section keep the snapshot they always had.
  if (!POLICY_KEYS.some((key) => root.has(key))) return { services };
  return { services, policy: readPolicyModel(r, root) };
}
