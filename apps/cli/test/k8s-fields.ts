/**
 * Checks manifests against the API's field lists: kubernetes-models validates
 * types but accepts unknown fields, so every field path of our objects is also
 * looked up in the k8s-api vectors (`../shared/vectors/k8s-api/`), which set
 * every field of their kind.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { vectorsDir } from "./helpers.ts";

type Json = Record<string, unknown>;

const VECTOR_OF: Record<string, string> = {
  "apps/v1 Deployment": "apps.v1.Deployment",
  "apps/v1 StatefulSet": "apps.v1.StatefulSet",
  "apps/v1 DaemonSet": "apps.v1.DaemonSet",
  "batch/v1 Job": "batch.v1.Job",
  "batch/v1 CronJob": "batch.v1.CronJob",
  "v1 Pod": "core.v1.Pod",
  "v1 ConfigMap": "core.v1.ConfigMap",
  "v1 Secret": "core.v1.Secret",
  "v1 Service": "core.v1.Service",
  "v1 ServiceAccount": "core.v1.ServiceAccount",
  "rbac.authorization.k8s.io/v1 ClusterRole": "rbac.authorization.k8s.io.v1.ClusterRole",
  "rbac.authorization.k8s.io/v1 ClusterRoleBinding": "rbac.authorization.k8s.io.v1.ClusterRoleBinding",
  "admissionregistration.k8s.io/v1 MutatingWebhookConfiguration": "admissionregistration.k8s.io.v1.MutatingWebhookConfiguration",
};

/** The vector of a kind, or undefined when the vectors have none. */
export function vectorOf(apiVersion: string, kind: string): Json | undefined {
  const name = VECTOR_OF[`${apiVersion} ${kind}`];
  return name === undefined ? undefined : (JSON.parse(readFileSync(path.join(vectorsDir, "k8s-api", `${name}.json`), "utf8")) as Json);
}

/** A vector map (labels, annotations, data): its one key is `<field>Key`. */
function isMap(node: Json): boolean {
  const keys = Object.keys(node);
  return keys.length === 1 && keys[0]!.endsWith("Key");
}

/** Field paths of `object` that the API (the vector) does not have. */
export function unknownFields(object: unknown, vector: unknown, at = ""): string[] {
  if (Array.isArray(object)) return Array.isArray(vector) && vector.length > 0 ? object.flatMap((item, i) => unknownFields(item, vector[0], `${at}[${i}]`)) : [];
  if (typeof object !== "object" || object === null) return [];
  if (typeof vector !== "object" || vector === null) return [at];
  const v = vector as Json;
  if (isMap(v)) return [];
  return Object.entries(object as Json).flatMap(([key, value]) => (key in v ? unknownFields(value, v[key], `${at}.${key}`) : [`${at}.${key}`]));
}

const MODEL_OF: Record<string, string> = {
  "apps/v1 Deployment": "kubernetes-models/apps/v1/Deployment",
  "apps/v1 StatefulSet": "kubernetes-models/apps/v1/StatefulSet",
  "apps/v1 DaemonSet": "kubernetes-models/apps/v1/DaemonSet",
  "apps/v1 ReplicaSet": "kubernetes-models/apps/v1/ReplicaSet",
  "batch/v1 Job": "kubernetes-models/batch/v1/Job",
  "batch/v1 CronJob": "kubernetes-models/batch/v1/CronJob",
  "v1 Pod": "kubernetes-models/v1/Pod",
  "v1 Namespace": "kubernetes-models/v1/Namespace",
  "v1 ConfigMap": "kubernetes-models/v1/ConfigMap",
  "v1 Secret": "kubernetes-models/v1/Secret",
  "v1 Service": "kubernetes-models/v1/Service",
  "v1 ServiceAccount": "kubernetes-models/v1/ServiceAccount",
  "rbac.authorization.k8s.io/v1 ClusterRole": "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole",
  "rbac.authorization.k8s.io/v1 ClusterRoleBinding": "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding",
  "rbac.authorization.k8s.io/v1 Role": "kubernetes-models/rbac.authorization.k8s.io/v1/Role",
  "rbac.authorization.k8s.io/v1 RoleBinding": "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding",
  "admissionregistration.k8s.io/v1 MutatingWebhookConfiguration": "kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration",
  "apiextensions.k8s.io/v1 CustomResourceDefinition": "kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition",
};

/** Validates `object` with kubernetes-models (throws on a type error); false when it has no model for the kind. */
export async function validateWithModels(object: Json): Promise<boolean> {
  const key = `${String(object.apiVersion)} ${String(object.kind)}`;
  const module = MODEL_OF[key];
  if (module === undefined) return false;
  const exports = (await import(module)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = exports[String(object.kind)]!;
  new Model(object).validate();
  return true;
}
