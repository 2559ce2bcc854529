// After the policy controller comes back, a proxy's WatchPort streams are answered again within the policy watcher's
// retry cap (10 s), however long it was away: the real meshtls-destination (policy API beside it) is killed for 40 s,
// its registry changes meanwhile, and it is restarted on the same ports. The policy client is the proxy's own, in
// process. Each retry after the channel failed dials a new connection: grpc-js's own reconnect backoff (1 s growing
// by 1.6 to 120 s on a kept channel) reaches ~40 s in that time and used to add to the watcher's.
import { renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import { defaultServerPolicy } from "@meshtls/proxy-core";
import type { Logger } from "@meshtls/proxy-core";
import { afterAll, describe, expect, it } from "vitest";
import { createPolicyClient } from "../src/policy-client.ts";
import { bins, freePort, startNode, tempDir } from "./harness.ts";
import type { Proc } from "./harness.ts";

const RETRY_CAP_MS = 10_000;
const DOWN_MS = 40_000;
const PORT = 8080;

const registry = (policy: string): string =>
  ["services: []", "workloads:", "  - name: b-0", "    namespace: default", "    labels: { app: b }", policy, ""].join("\n");
const ALL_UNAUTHENTICATED = "    defaultPolicy: all-unauthenticated";
const SERVER_DENY = `servers:\n  - { name: b-http, namespace: default, podSelector: { matchLabels: { app: b } }, port: ${PORT}, accessPolicy: deny }`;

describe("inbound policy recovery after the policy controller returns (real meshtls-destination on loopback)", () => {
  const procs: Proc[] = [];
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  });

  it(`follows the controller again within the watcher's retry cap (${RETRY_CAP_MS} ms) of its return after ${DOWN_MS / 1000} s away`, async () => {
    const dir = tempDir("meshtls-policy-recovery-");
    const registryFile = path.join(dir, "registry.yaml");
    const write = (text: string): void => {
      writeFileSync(`${registryFile}.tmp`, text);
      renameSync(`${registryFile}.tmp`, registryFile);
    };
    write(registry(ALL_UNAUTHENTICATED));
    const grpcPort = await freePort("127.0.0.1");
    const policyPort = await freePort("127.0.0.1");
    const args = [
      "--registry", registryFile, "--listen", `127.0.0.1:${grpcPort}`, "--policy-addr", `127.0.0.1:${policyPort}`,
      "--admin", "127.0.0.1:0", "--insecure-plaintext", "--cluster-networks", "127.0.0.0/8",
    ];
    let destination = startNode("destination", bins.destination, args);
    procs.push(destination);
    await destination.waitForMsg("listening");

    const lost: number[] = [];
    const logger = {
      debug: () => undefined,
      info: () => undefined,
      error: () => undefined,
      warn: () => lost.push(Date.now()),
    } as unknown as Logger;
    const policy = createPolicyClient({
      address: `127.0.0.1:${policyPort}`,
      credentials: credentials.createInsecure(),
      workload: JSON.stringify({ ns: "default", pod: "b-0" }),
      ports: [PORT],
      defaults: () => defaultServerPolicy("deny"),
      logger,
    });
    const names: { at: number; name: string }[] = [];
    policy.subscribe((port, p) => {
      if (port === PORT) names.push({ at: Date.now(), name: p.meta.name });
    });
    const waitFor = async (name: string, timeoutMs: number): Promise<number | undefined> => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (policy.current(PORT).meta.name === name) return Date.now();
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return undefined;
    };
    try {
      expect(await waitFor("all-unauthenticated", 10_000)).toBeDefined();
      await destination.stop("SIGKILL");
      const downAt = Date.now();
      write(registry(SERVER_DENY));
      await new Promise((resolve) => setTimeout(resolve, DOWN_MS));
      // The last policy is kept while the controller is away.
      expect(policy.current(PORT).meta.name).toBe("all-unauthenticated");

      destination = startNode("destination", bins.destination, args);
      procs.push(destination);
      await destination.waitForMsg("listening");
      const backAt = Date.now();
      const followedAt = await waitFor("b-http", 3 * RETRY_CAP_MS + 20_000);
      expect(followedAt).toBeDefined();
      const recoveryMs = (followedAt ?? Infinity) - backAt;
      console.log(
        `policy recovery: controller away ${((backAt - downAt) / 1000).toFixed(1)} s (${lost.length} watch losses logged); new policy ${(recoveryMs / 1000).toFixed(2)} s after it returned (cap ${RETRY_CAP_MS / 1000} s)`,
      );
      // The cap, plus the answer and scheduling on a loaded machine.
      expect(recoveryMs).toBeLessThanOrEqual(RETRY_CAP_MS + 2000);
      expect(names.some((n) => n.name === "deny")).toBe(false);
    } finally {
      policy.close?.();
    }
  }, 120_000);
});
