import { describe, expect, it } from "vitest";
import type { InboundServer } from "@meshtls/api";
import { createStaticRegistry } from "../registry.js";
import { createInboundPolicyController, policySourceOf } from "./controller.js";
import { EMPTY_POLICY_MODEL, type PolicyModel } from "./model.js";
import { parseWorkload } from "./workload.js";

const workload = { name: "web-0", namespace: "shop", labels: { app: "web" }, ports: [], opaquePorts: [] };
const withServer: PolicyModel = {
  ...EMPTY_POLICY_MODEL,
  workloads: [workload],
  servers: [{ name: "web", namespace: "shop", podSelector: { matchLabels: {}, matchExpressions: [] }, port: 80, proxyProtocol: "opaque", accessPolicy: "deny" }],
};

describe("parseWorkload", () => {
  it("reads Linkerd's JSON and the legacy form", () => {
    expect(parseWorkload('{"ns":"shop","pod":"web-0"}')).toEqual({ kind: "pod", namespace: "shop", name: "web-0" });
    expect(parseWorkload("shop:web-0")).toEqual({ kind: "pod", namespace: "shop", name: "web-0" });
    expect(parseWorkload('{"ns":"shop","external_workload":"vm-1"}')).toEqual({ kind: "external", namespace: "shop", name: "vm-1" });
  });

  it.each(["", "{", "[]", "null", '{"ns":"shop"}', '{"ns":"Shop","pod":"a"}', '{"ns":"shop","pod":"a","external_workload":"b"}', "a:b:c", "x".repeat(2000)])(
    "refuses %j with ERR_POLICY_WORKLOAD_INVALID",
    (text) => {
      expect(() => parseWorkload(text)).toThrow(expect.objectContaining({ code: "ERR_POLICY_WORKLOAD_INVALID" }));
    },
  );
});

describe("createInboundPolicyController", () => {
  it("answers unknown workloads with ERR_POLICY_UNKNOWN_SERVER and bad ports with ERR_POLICY_PORT_INVALID", () => {
    const controller = createInboundPolicyController({ source: policySourceOf(createStaticRegistry()) });
    const query = controller.parsePortSpec({ workload: '{"ns":"shop","pod":"web-0"}', port: 80 });
    expect(() => controller.getPort(query)).toThrow(expect.objectContaining({ code: "ERR_POLICY_UNKNOWN_SERVER", message: expect.stringContaining("unknown server") }));
    for (const port of [0, 65536]) {
      expect(() => controller.parsePortSpec({ workload: "shop:web-0", port })).toThrow(expect.objectContaining({ code: "ERR_POLICY_PORT_INVALID" }));
    }
  });

  it("watchers get the policy now and each change, not unchanged models; onGone when the workload leaves", () => {
    const registry = createStaticRegistry({ services: [], policy: { ...EMPTY_POLICY_MODEL, workloads: [workload] } });
    const controller = createInboundPolicyController({ source: policySourceOf(registry) });
    const seen: InboundServer[] = [];
    let gone = 0;
    controller.watchPort(controller.parsePortSpec({ workload: "shop:web-0", port: 80 }), (s) => seen.push(s), () => gone++);
    expect(seen.map((s) => s.labels.name)).toEqual(["all-unauthenticated"]);
    registry.set({ services: [], policy: { ...EMPTY_POLICY_MODEL, workloads: [workload] } });
    expect(seen).toHaveLength(1);
    registry.set({ services: [], policy: withServer });
    expect(seen.map((s) => s.labels.name)).toEqual(["all-unauthenticated", "web"]);
    registry.set({ services: [] });
    expect(gone).toBe(1);
    expect(controller.watches()).toBe(0);
    controller.close();
  });
});
