import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createDestinationClient, type EndpointSet } from "@meshtls/destination";
import { afterAll, describe, expect, it } from "vitest";
import { startDestination, waitFor, type DestinationProcess } from "./support.js";

const registry = (ips: string[]): string =>
  `services:\n  - name: web\n    namespace: shop\n    endpoints:\n${ips.map((ip) => `      - { address: ${ip}, serviceAccount: web }\n`).join("")}`;
const addresses = (set: EndpointSet | undefined): string => (set?.endpoints ?? []).map((e) => e.address).sort().join(",");

describe("the destination client across a server restart", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "meshtls-destination-restart-"));
  const file = path.join(dir, "registry.yaml");
  const servers: DestinationProcess[] = [];
  afterAll(async () => {
    for (const s of servers) await s.stop("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    it(`reconnects and converges, answering from the last known set meanwhile (${signal})`, async () => {
      writeFileSync(file, registry(["127.0.1.1", "127.0.1.2"]));
      const first = await startDestination({ registryFile: file });
      servers.push(first);
      const client = createDestinationClient({ address: `127.0.0.1:${first.grpcPort}`, backoff: { initialMs: 100, maxMs: 400 } });
      try {
        const resolution = client.resolve("web.shop.svc.cluster.local:8080");
        const before = await resolution.ready({ timeoutMs: 10_000 });
        expect(addresses(before)).toBe("127.0.1.1,127.0.1.2");
        expect(before.endpoints[0]?.identity).toBe("web.shop.serviceaccount.identity.meshtls.cluster.local");
        const seen: string[] = [];
        resolution.subscribe((set) => seen.push(addresses(set)));

        expect(await first.stop(signal)).toBe(signal === "SIGTERM" ? 0 : null);
        // While the server is down, and while the registry changes underneath it.
        writeFileSync(file, registry(["127.0.1.2", "127.0.1.3"]));
        for (let i = 0; i < 5; i++) {
          expect(addresses(resolution.current())).toBe("127.0.1.1,127.0.1.2");
          await new Promise((r) => setTimeout(r, 100));
        }
        const second = await startDestination({ registryFile: file, port: first.grpcPort });
        servers.push(second);
        await waitFor(() => (addresses(resolution.current()) === "127.0.1.2,127.0.1.3" ? true : undefined), 10_000, "convergence");
        // Never an empty set in between: the new stream's state replaced the old one at once.
        expect(seen.every((s) => s !== "")).toBe(true);
        expect(seen[seen.length - 1]).toBe("127.0.1.2,127.0.1.3");
        await second.stop();
      } finally {
        client.close();
      }
    });
  }
});
