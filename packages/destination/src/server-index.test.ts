import { credentials } from "@grpc/grpc-js";
import { DestinationClient, type Update } from "@meshtls/api";
import { describe, expect, it } from "vitest";
import type { RegistryService } from "./registry.js";
import { cleanupsAfterEach, createChangingRegistry, startServer } from "./test-support.js";

const service = (name: string, ips: string[], clusterIP?: string): RegistryService => ({
  name,
  namespace: "default",
  ...(clusterIP === undefined ? {} : { clusterIP }),
  ports: [{ port: 80, targetPort: 8080 }],
  endpoints: ips.map((address) => ({ address, meshed: true, serviceAccount: name, inboundPort: 4143, weight: 10_000 })),
});

/** The first update of a Get for `path`, on a fresh connection. */
async function firstUpdate(address: string, path: string): Promise<Update> {
  const client = new DestinationClient(address, credentials.createInsecure());
  try {
    return await new Promise<Update>((resolve, reject) => {
      const call = client.get({ scheme: "k8s", path, contextToken: "" });
      call.once("data", (u: Update) => (resolve(u), call.cancel()));
      call.on("error", (e: { code: number }) => (e.code === 1 ? undefined : reject(e)));
    });
  } finally {
    client.close();
  }
}

describe("the server's index, updated service by service", () => {
  const cleanups = cleanupsAfterEach();

  it("answers IP, ClusterIP and name lookups as a server built from the final snapshot does, after each change", async () => {
    const changing = createChangingRegistry([service("a", ["10.0.0.1", "10.0.0.2"], "10.96.0.1"), service("b", ["10.0.0.2", "10.0.0.3"])]);
    const incremental = await startServer({ registry: changing.registry });
    cleanups.push(incremental.stop);
    const lookups = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080", "10.96.0.1:80", "10.96.0.2:80", "a.default.svc.cluster.local:80", "b.default.svc.cluster.local:80", "c.default.svc.cluster.local:80"];
    const steps: [string, RegistryService | undefined][] = [
      ["a.default", service("a", ["10.0.0.1"], "10.96.0.1")], // 10.0.0.2 is b's alone now
      ["c.default", service("c", ["10.0.0.3", "10.0.0.4"], "10.96.0.2")], // 10.0.0.3 in b and c
      ["b.default", undefined], // 10.0.0.3 moves to c
      ["a.default", service("a", ["10.0.0.2"], "10.96.0.2")], // a takes c's ClusterIP too
      ["c.default", undefined],
      ["a.default", undefined],
    ];
    for (const [key, next] of steps) {
      changing.change({ service: [key, next] });
      const fresh = await startServer({ registry: changing.frozen() });
      try {
        for (const path of lookups) {
          expect(await firstUpdate(incremental.address, path), `${key} → ${path}`).toEqual(await firstUpdate(fresh.address, path));
        }
      } finally {
        await fresh.stop();
      }
    }
  });
});
