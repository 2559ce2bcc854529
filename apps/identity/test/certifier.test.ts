import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createCertifier, createCredentialStore } from "@meshtls/identity";
import type { Credentials } from "@meshtls/identity";
import { decodeCertificates } from "@meshtls/pki";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMaterial, identityFor, mintToken, SERVER_NAME, startIdentity, tempDir, writeToken } from "./harness.ts";
import type { IdentityProcess } from "./harness.ts";

const LIFETIME_S = 10;
const SKEW_S = 5;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("certifier against the meshtls-identity process (10 s leaves)", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let proc: IdentityProcess | undefined;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("certifier"));
    await createMaterial(dir);
  });
  afterAll(async () => {
    await proc?.stop();
    await cleanup();
  });

  it("renews on time for a minute, keeps its certificate through an outage, and recovers", { timeout: 110_000 }, async () => {
    const port = await freePort();
    const args = ["--issuance-lifetime", `${LIFETIME_S}s`, "--clock-skew", `${SKEW_S}s`];
    const start = async () => (proc = await startIdentity({ dir, listen: `127.0.0.1:${port}`, args }));
    await start();
    const identity = identityFor("web");
    const tokenFile = await writeToken(dir, await mintToken(dir, "default", "web"));
    const store = createCredentialStore();
    const registry = new Registry();
    const issued: { at: number; credentials: Credentials }[] = [];
    store.subscribe((credentials) => issued.push({ at: Date.now(), credentials }));
    const certifier = createCertifier({
      identity,
      tokenFile,
      trustAnchors: decodeCertificates(await readFile(path.join(dir, "ca.crt"), "utf8")),
      address: `127.0.0.1:${port}`,
      serverName: SERVER_NAME,
      store,
      metricsRegistry: registry,
      backoff: { initialMs: 250, maxMs: 2000 },
      requestTimeoutMs: 2000,
    });
    certifier.start();
    const first = await certifier.ready();
    expect(first.notAfter.getTime() - Date.now()).toBeLessThanOrEqual((LIFETIME_S + SKEW_S) * 1000);

    // Phase 1: a minute of renewals. Each must land before the previous certificate expired,
    // at about 70 % of its remaining life (10.5 s for 15 s), never early.
    await sleep(60_000);
    expect(issued.length).toBeGreaterThanOrEqual(5);
    for (let i = 1; i < issued.length; i++) {
      const prev = issued[i - 1]!;
      const gap = issued[i]!.at - prev.at;
      expect(issued[i]!.at).toBeLessThan(prev.credentials.notAfter.getTime());
      expect(gap).toBeGreaterThan(0.7 * (LIFETIME_S + SKEW_S) * 1000 - 1500);
      expect(gap).toBeLessThan(0.7 * (LIFETIME_S + SKEW_S) * 1000 + 3000);
      expect(issued[i]!.credentials.leaf).not.toEqual(prev.credentials.leaf);
      // Same in-memory key throughout.
      expect(issued[i]!.credentials.privateKeyPem).toBe(first.privateKeyPem);
    }
    console.log(`renewals in 60 s: ${issued.length - 1}; gaps (ms): ${issued.slice(1).map((e, i) => e.at - issued[i]!.at).join(", ")}`);

    // Phase 2: the service stops. The current certificate stays in use until it expires; the certifier retries.
    await proc!.stop();
    const held = store.current();
    expect(held).toBeDefined();
    const countBefore = issued.length;
    await sleep(6000);
    expect(issued.length).toBe(countBefore);
    const now = Date.now();
    if (now < held!.notAfter.getTime()) expect(store.current()).toBe(held);
    else expect(store.current()).toBeUndefined();
    // Phase 3: the service returns on the same address; the certifier recovers by itself.
    await start();
    const recoveredBy = Date.now() + 8000;
    while (issued.length === countBefore && Date.now() < recoveredBy) await sleep(100);
    expect(issued.length).toBeGreaterThan(countBefore);
    expect(store.current()).toBe(issued.at(-1)!.credentials);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/identity_cert_refreshes_total\{result="failure"\} [1-9]/);
    expect(metrics).toMatch(new RegExp(`identity_cert_refreshes_total\\{result="ok"\\} ${issued.length}`));
    await certifier.stop();
  });
});
