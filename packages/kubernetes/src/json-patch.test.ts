import { describe, expect, it } from "vitest";
import { KubernetesError } from "./errors.ts";
import { applyPatch, escapePointer } from "./json-patch.ts";

describe("applyPatch (RFC 6902 add)", () => {
  it("adds members, appends with -, inserts at an index, escapes ~ and / (RFC 6901), and leaves the input alone", () => {
    const input = { metadata: { annotations: { a: "1" } }, spec: { list: ["x", "z"] } };
    const out = applyPatch(input, [
      { op: "add", path: `/metadata/annotations/${escapePointer("linkerd.io/inject")}`, value: "enabled" },
      { op: "add", path: `/metadata/annotations/${escapePointer("a~b")}`, value: "2" },
      { op: "add", path: "/spec/list/1", value: "y" },
      { op: "add", path: "/spec/list/-", value: "end" },
      { op: "add", path: "/spec/volumes", value: [] },
    ]);
    expect(out).toEqual({ metadata: { annotations: { a: "1", "linkerd.io/inject": "enabled", "a~b": "2" } }, spec: { list: ["x", "y", "z", "end"], volumes: [] } });
    expect(input).toEqual({ metadata: { annotations: { a: "1" } }, spec: { list: ["x", "z"] } });
  });

  it("a path whose parent does not exist, or an index out of range, is ERR_KUBE_PATCH", () => {
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (error) {
        return error instanceof KubernetesError ? error.code : "other";
      }
      return undefined;
    };
    expect(code(() => applyPatch({}, [{ op: "add", path: "/spec/volumes/-", value: 1 }]))).toBe("ERR_KUBE_PATCH");
    expect(code(() => applyPatch({ a: [] }, [{ op: "add", path: "/a/3", value: 1 }]))).toBe("ERR_KUBE_PATCH");
    expect(code(() => applyPatch({}, [{ op: "add", path: "", value: 1 }]))).toBe("ERR_KUBE_PATCH");
  });
});
