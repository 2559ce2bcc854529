// meshtls-destination under attack: its admin port and its gRPC port, over mTLS (from a workload with a valid
// mesh certificate) and plaintext.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe } from "vitest";
import { defineAdminAttacks, defineServiceAdminFlood } from "./support/admin-attacks.ts";
import { GET, getWorks } from "./support/grpc.ts";
import { defineGrpcAttacks } from "./support/grpc-attacks.ts";
import { createMaterial, identityOf, startDestination } from "./support/mesh.ts";
import type { Leaf, Material, Service } from "./support/mesh.ts";
import { stopAll, tempDir } from "./support/processes.ts";
import type { Target } from "./support/results.ts";
import { httpGet } from "./support/wire.ts";

describe("meshtls-destination under attack", () => {
  let material: Material;
  let tlsService: Service;
  let plainService: Service;
  /** The malicious workload's valid mesh certificate: it gets past mTLS. */
  let evil: Leaf;

  /** Still serving: /live answers and a real Get gets its first update. */
  const targetOf = (service: () => Service): Target => ({
    get proc() {
      return service().proc;
    },
    serving: async () => (await httpGet(service().admin, "/live"))?.status === 200 && (await getWorks(service(), material, evil)),
  });
  const tlsTarget = targetOf(() => tlsService);
  const plainTarget = targetOf(() => plainService);

  beforeAll(async () => {
    const dir = tempDir("destination");
    material = await createMaterial(dir);
    evil = await material.leaf(identityOf("evil"));
    const registryFile = path.join(dir, "registry.yaml");
    writeFileSync(registryFile, ["services:", "  - name: b", "    ports: [{ port: 80, targetPort: 8080 }]", "    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: 4143 }]", ""].join("\n"));
    [tlsService, plainService] = await Promise.all([
      startDestination(material, { name: "destination-tls", registryFile, tls: true }),
      startDestination(material, { name: "destination-plaintext", registryFile }),
    ]);
  });
  afterAll(stopAll);

  defineAdminAttacks("destination admin (mTLS service)", () => ({ admin: tlsService.admin, target: tlsTarget }));
  defineAdminAttacks("destination admin (plaintext service)", () => ({ admin: plainService.admin, target: plainTarget }));

  defineServiceAdminFlood("destination admin (plaintext service)", () => ({ admin: plainService.admin, target: plainTarget }));

  // Get streams are long-lived (one per authority a proxy resolves, up to its 1,000 resolutions), so no deadline;
  // but one connection must not hold more than twice what a proxy ever needs.
  // RSS bound: 2,000 streams held cost +11-16 MiB on Node 20 and +33-41 MiB on Node 24, whose V8 grows its heap
  // sooner (not a leak: --max-semi-space-size=8 brings it back to +14 MiB); 5,000 admitted streams cost +38-54 MiB on Node 20.
  const flood = { maxOpenStreams: 2000, maxRssDeltaKiB: 48 * 1024 };
  defineGrpcAttacks(
    "destination gRPC mTLS",
    () => ({ service: tlsService, target: tlsTarget, path: GET, tls: { ca: material.caPem, servername: tlsService.serverName, key: evil.keyPem, cert: evil.chainPem } }),
    flood,
  );
  defineGrpcAttacks("destination gRPC plaintext", () => ({ service: plainService, target: plainTarget, path: GET }), flood);
});
