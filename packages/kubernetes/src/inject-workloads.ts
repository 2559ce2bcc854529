/**
 * `meshtls inject` on whole manifests: finds the pod template of each kind
 * Linkerd's CLI meshes and applies `buildPodPatch` to it. Objects it does not
 * mesh pass through untouched, each with a report line.
 */

import { buildPodPatch, type InjectOptions, type SkipReason } from "./inject.ts";
import { applyPatch } from "./json-patch.ts";

/** Where each kind keeps its pod template, as a JSON Pointer. */
export const POD_TEMPLATE_PATHS: Readonly<Record<string, string>> = {
  Pod: "",
  Deployment: "/spec/template",
  StatefulSet: "/spec/template",
  DaemonSet: "/spec/template",
  ReplicaSet: "/spec/template",
  Job: "/spec/template",
  CronJob: "/spec/jobTemplate/spec/template",
};

export interface InjectReport {
  kind: string;
  name: string;
  namespace?: string;
  /** `injected`, or why not; `unsupported-kind` for kinds without a pod template. */
  result: "injected" | SkipReason | "unsupported-kind";
  message?: string;
  warnings: string[];
}

type Json = Record<string, unknown>;

function at(object: Json, pointer: string): Json | undefined {
  let node: unknown = object;
  for (const token of pointer.split("/").slice(1)) node = typeof node === "object" && node !== null ? (node as Json)[token] : undefined;
  return typeof node === "object" && node !== null ? (node as Json) : undefined;
}

/**
 * Meshes one object (or each item of a `List`), returning the object to
 * print and a report per workload.
 * @throws KubernetesError `ERR_KUBE_MANIFEST` for an unusable annotation value.
 */
export function injectObject(object: unknown, options: InjectOptions): { object: unknown; reports: InjectReport[] } {
  if (typeof object !== "object" || object === null || Array.isArray(object)) return { object, reports: [] };
  const o = object as Json;
  const kind = typeof o.kind === "string" ? o.kind : "";
  const metadata = (typeof o.metadata === "object" && o.metadata !== null ? o.metadata : {}) as { name?: string; namespace?: string };
  if (kind === "List" || (kind.endsWith("List") && Array.isArray(o.items))) {
    const reports: InjectReport[] = [];
    const items = (Array.isArray(o.items) ? o.items : []).map((item: unknown) => {
      const result = injectObject(item, options);
      reports.push(...result.reports);
      return result.object;
    });
    return { object: { ...o, items }, reports };
  }
  const report: InjectReport = { kind: kind === "" ? "?" : kind, name: metadata.name ?? "?", warnings: [], result: "unsupported-kind" };
  if (metadata.namespace !== undefined) report.namespace = metadata.namespace;
  const base = POD_TEMPLATE_PATHS[kind];
  const template = base === undefined ? undefined : base === "" ? o : at(o, base);
  if (base === undefined || template === undefined) {
    report.message = base === undefined ? `kind ${report.kind} has no pod template` : `no pod template at ${base}`;
    return { object, reports: [report] };
  }
  const podNamespace = (template.metadata as { namespace?: string } | undefined)?.namespace ?? metadata.namespace;
  const injection = buildPodPatch(template, { ...options, ...(podNamespace === undefined ? {} : { namespace: podNamespace }) }, base);
  if (!injection.injected) {
    report.result = injection.reason;
    report.message = injection.message;
    return { object, reports: [report] };
  }
  report.result = "injected";
  report.warnings = injection.warnings;
  return { object: applyPatch(object, injection.patch), reports: [report] };
}
