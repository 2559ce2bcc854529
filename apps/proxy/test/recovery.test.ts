// After the identity service comes back, a workload gets a new certificate
// within the certifier's retry cap, however long the service was away: the
// real identity service (10-second leaves) is stopped for 40 s, many retries
// fail, and it is restarted on the same port. The certifier is the proxy's own
// (@meshtls/identity), in process, with its cap lowered from 60 s to 4 s to
// keep the test short; grpc-js's reconnect backoff (which grows to 120 s on a
// kept channel and used to add to ours) reaches ~40 s in that time.
import { readFileSync } from "node:fs";
import path from "node:path";
import { createCertifier, createCredentialStore } from "@meshtls/identity";
import type { Credentials } from "@meshtls/identity";
import { toDer } from "@meshtls/pki";
import { afterAll, describe, expect, it } from "vitest";
import { bins, createMaterial, freePort, identityOf, startNode, tempDir } from "./harness.ts";
import type { Proc } from "./harness.ts";

const RETRY_CAP_MS = 4000;
const DOWN_MS = 40_000;

describe("certificate recovery after the identity service returns (real identity service on loopback)", () => {
  const procs: Proc[] = [];
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  });

  it(`renews within the retry cap (${RETRY_CAP_MS} ms) of the service's return after ${DOWN_MS / 1000} s away`, async () => {
    const dir = tempDir("meshtls-recovery-");
    const material = await createMaterial(dir);
    const port = await freePort("127.0.0.1");
    const args = [
      "--trust-anchors", material.caFile, "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"),
      "--token-issuer", "https://meshtls.local", "--listen", `127.0.0.1:${port}`, "--admin", "127.0.0.1:0",
      "--issuance-lifetime", "10s", "--clock-skew", "0s",
    ];
    let identity = startNode("identity", bins.identity, args);
    procs.push(identity);
    const serverName = String((await identity.waitForMsg("listening"))["serverName"]);

    const failures: { at: number; reason: string }[] = [];
    const store = createCredentialStore();
    const published: { at: number; credentials: Credentials }[] = [];
    store.subscribe((credentials) => published.push({ at: Date.now(), credentials }));
    const certifier = createCertifier({
      identity: identityOf("web"),
      tokenFile: await material.tokenFile("web"),
      trustAnchors: [toDer(readFileSync(material.caFile, "utf8"), "CERTIFICATE")],
      address: `127.0.0.1:${port}`,
      serverName,
      store,
      backoff: { maxMs: RETRY_CAP_MS },
      logger: {
        info: () => undefined,
        debug: () => undefined,
        error: () => undefined,
        warn: (fields: object) => failures.push({ at: Date.now(), reason: String((fields as { reason?: unknown }).reason) }),
      },
    });
    try {
      certifier.start();
      await certifier.ready();
      await identity.stop("SIGKILL");
      const downAt = Date.now();
      // The refresh (7 s into the 10-second leaf) and every retry after it fail while the service is away.
      await new Promise((resolve) => setTimeout(resolve, DOWN_MS));
      expect(failures.length).toBeGreaterThanOrEqual(6);
      const before = published.length;

      identity = startNode("identity", bins.identity, args);
      procs.push(identity);
      await identity.waitForMsg("listening");
      const backAt = Date.now();
      while (published.length === before && Date.now() - backAt < 3 * RETRY_CAP_MS + 20_000) await new Promise((resolve) => setTimeout(resolve, 50));
      const renewedAt = published[before]?.at;
      expect(renewedAt).toBeDefined();
      const recoveryMs = (renewedAt ?? Infinity) - backAt;
      const lastFailure = failures.at(-1);
      console.log(
        `recovery: ${failures.length} failed attempts over ${((backAt - downAt) / 1000).toFixed(1)} s away; new certificate ${(recoveryMs / 1000).toFixed(2)} s after the service returned ` +
          `(cap ${RETRY_CAP_MS / 1000} s); last failure: ${lastFailure?.reason ?? "none"}`,
      );
      // The cap, plus one Certify call and scheduling on a loaded machine.
      expect(recoveryMs).toBeLessThanOrEqual(RETRY_CAP_MS + 2000);
    } finally {
      await certifier.stop();
    }
  }, 120_000);
});
