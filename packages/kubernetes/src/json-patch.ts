/**
 * The JSON Patch (RFC 6902) operations the injector emits: `add` only, as
 * Linkerd's patch. `applyPatch` applies them for `meshtls inject`, so the
 * CLI's output and the webhook's patch are the same operations.
 */

import { KubernetesError } from "./errors.ts";

export interface AddOperation {
  op: "add";
  /** RFC 6901 pointer; `-` appends to an array. */
  path: string;
  value: unknown;
}

export type JsonPatch = AddOperation[];

/** Escapes one RFC 6901 reference token (`linkerd.io/inject` → `linkerd.io~1inject`). */
export function escapePointer(token: string): string {
  return token.replaceAll("~", "~0").replaceAll("/", "~1");
}

function unescapePointer(token: string): string {
  return token.replaceAll("~1", "/").replaceAll("~0", "~");
}

/**
 * Applies `add` operations to a deep copy of `document` (RFC 6902 §4.1: the
 * parent must exist; `-` appends; an index inserts).
 * @throws KubernetesError `ERR_KUBE_PATCH` when a path does not resolve.
 */
export function applyPatch<T>(document: T, patch: JsonPatch): T {
  const root = structuredClone(document) as unknown;
  for (const operation of patch) {
    const tokens = operation.path.split("/").slice(1).map(unescapePointer);
    const last = tokens.pop();
    if (operation.path === "" || last === undefined) throw new KubernetesError("ERR_KUBE_PATCH", `cannot replace the whole document (${operation.path})`);
    let parent: unknown = root;
    for (const token of tokens) {
      parent = typeof parent === "object" && parent !== null ? (parent as Record<string, unknown>)[token] : undefined;
      if (parent === undefined) throw new KubernetesError("ERR_KUBE_PATCH", `${operation.path}: ${token} does not exist`);
    }
    const value = structuredClone(operation.value);
    if (Array.isArray(parent)) {
      const index = last === "-" ? parent.length : Number(last);
      if (!Number.isInteger(index) || index < 0 || index > parent.length) throw new KubernetesError("ERR_KUBE_PATCH", `${operation.path}: index out of range`);
      parent.splice(index, 0, value);
    } else if (typeof parent === "object" && parent !== null) {
      (parent as Record<string, unknown>)[last] = value;
    } else {
      throw new KubernetesError("ERR_KUBE_PATCH", `${operation.path}: parent is not an object or array`);
    }
  }
  return root as T;
}
