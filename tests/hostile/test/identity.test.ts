// meshtls-identity under attack: its admin port and its gRPC port, with TLS (two workers) and plaintext.
import { afterAll, beforeAll, describe } from "vitest";
import { defineAdminAttacks, defineServiceAdminFlood } from "./support/admin-attacks.ts";
import { CERTIFY, certifyWorks } from "./support/grpc.ts";
import { defineGrpcAttacks } from "./support/grpc-attacks.ts";
import { createMaterial, startIdentity } from "./support/mesh.ts";
import type { Material, Service } from "./support/mesh.ts";
import { stopAll, tempDir } from "./support/processes.ts";
import type { Target } from "./support/results.ts";
import { httpGet } from "./support/wire.ts";

describe("meshtls-identity under attack", () => {
  let material: Material;
  let tlsService: Service;
  let plainService: Service;
  const tokens = new Map<string, string>();

  /** Still serving: /live answers and a real Certify returns a leaf. */
  const targetOf = (service: () => Service): Target => ({
    get proc() {
      return service().proc;
    },
    serving: async () => (await httpGet(service().admin, "/live"))?.status === 200 && (await certifyWorks(service(), material)),
  });
  const tlsTarget = targetOf(() => tlsService);
  const plainTarget = targetOf(() => plainService);

  beforeAll(async () => {
    const base = await createMaterial(tempDir("identity"));
    // Minting runs the CLI: one token per ServiceAccount for the whole file.
    material = {
      ...base,
      token: async (sa) => tokens.get(sa) ?? tokens.set(sa, await base.token(sa)).get(sa)!,
    };
    [tlsService, plainService] = await Promise.all([
      startIdentity(material, { name: "identity-tls", workers: 2 }),
      startIdentity(material, { name: "identity-plaintext", plaintext: true }),
    ]);
  });
  afterAll(stopAll);

  defineAdminAttacks("identity admin (2 workers)", () => ({ admin: tlsService.admin, target: tlsTarget }));
  defineAdminAttacks("identity admin (plaintext)", () => ({ admin: plainService.admin, target: plainTarget }));

  defineServiceAdminFlood("identity admin (2 workers)", () => ({ admin: tlsService.admin, target: tlsTarget }));

  // A Certify call waits for its one request message: an idle stream must be capped and ended by a deadline.
  const flood = { maxOpenStreams: 1000, endedWithinMs: 20_000, maxRssDeltaKiB: 16 * 1024 };
  defineGrpcAttacks(
    "identity gRPC TLS",
    () => ({ service: tlsService, target: tlsTarget, path: CERTIFY, tls: { ca: material.caPem, servername: tlsService.serverName } }),
    flood,
  );
  defineGrpcAttacks("identity gRPC plaintext", () => ({ service: plainService, target: plainTarget, path: CERTIFY }), flood);
});
