import { isDnsLabel, isDnsSubdomain } from "@meshtls/pki";
import { DestinationError } from "../errors.js";

/** Longest `PortSpec.workload` accepted; Linkerd's JSON is well under 400 bytes. */
export const MAX_WORKLOAD_BYTES = 1024;

/** The workload a proxy asks for: a pod (or a Linkerd external workload) in a namespace. */
export interface WorkloadRef {
  kind: "pod" | "external";
  namespace: string;
  name: string;
}

/**
 * Reads Linkerd's `PortSpec.workload`: `{"ns":"<namespace>","pod":"<name>"}`, or
 * the legacy `<namespace>:<name>`. External workloads (`external_workload`) are
 * not supported and read as unknown.
 * @throws DestinationError `ERR_POLICY_WORKLOAD_INVALID` with the reason
 */
export function parseWorkload(text: string): WorkloadRef {
  const fail = (reason: string): never => {
    throw new DestinationError("ERR_POLICY_WORKLOAD_INVALID", `workload ${reason}`);
  };
  if (text.length > MAX_WORKLOAD_BYTES) fail(`is longer than ${MAX_WORKLOAD_BYTES} bytes`);
  let namespace: unknown;
  let name: unknown;
  let kind: WorkloadRef["kind"] = "pod";
  if (text.trimStart().startsWith("{")) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      fail('is not JSON: expected {"ns":"<namespace>","pod":"<name>"}');
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) fail('must be a JSON object {"ns":"<namespace>","pod":"<name>"}');
    const object = value as Record<string, unknown>;
    namespace = object["ns"];
    if (object["pod"] !== undefined && object["external_workload"] !== undefined) fail("names both a pod and an external workload");
    name = object["pod"];
    if (object["external_workload"] !== undefined) [kind, name] = ["external", object["external_workload"]];
  } else {
    const parts = text.split(":");
    if (parts.length !== 2) fail('must be {"ns":"<namespace>","pod":"<name>"} or <namespace>:<name>');
    [namespace, name] = parts;
  }
  if (typeof namespace !== "string" || !isDnsLabel(namespace)) fail(`namespace ${JSON.stringify(namespace)} is not a DNS-1123 label`);
  if (typeof name !== "string" || !isDnsSubdomain(name)) fail(`name ${JSON.stringify(name)} is not a DNS-1123 name`);
  return { kind, namespace: namespace as string, name: name as string };
}

/**
 * Checks `PortSpec.port`.
 * @throws DestinationError `ERR_POLICY_PORT_INVALID` outside 1..65535
 */
export function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new DestinationError("ERR_POLICY_PORT_INVALID", `port ${port} is not in 1..65535`);
  }
  return port;
}
