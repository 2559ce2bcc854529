import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { experimental, Server } from "@grpc/grpc-js";
import { exportPrivateKey, generateKeyPair, issueLeaf, pemEncode, spiffeId } from "@meshtls/pki";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCertifier } from "./certifier.ts";
import { createCredentialStore } from "./credential-store.ts";
import type { Credentials } from "./credential-store.ts";
import { createJwksTokenValidator } from "./jwks-token-validator.ts";
import { createIdentityServer } from "./server.ts";
import { createPkiFixture, createTokenSigner, TOKEN_ISSUER } from "./test-fixtures.ts";

const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";
const serverName = "identity.meshtls.serviceaccount.identity.meshtls.cluster.local";

describe("createCertifier against a TLS identity server on loopback", () => {
  let dir: string;
  let server: Server;
  let address: string;
  let pki: Awaited<ReturnType<typeof createPkiFixture>>;
  let signer: Awaited<ReturnType<typeof createTokenSigner>>;

  /** A TLS identity server on loopback issuing leaves of `lifetimeMs` (no skew allowance unless given). */
  async function startServer(lifetimeMs: number, skewMs: number): Promise<{ server: Server; address: string }> {
    const parts = createIdentityServer({
      issuerStore: pki.source,
      tokenValidator: createJwksTokenValidator({ jwks: signer.jwks, issuer: TOKEN_ISSUER }),
      lifetimeMs,
      skewMs,
    });
    const keys = await generateKeyPair();
    const own = await issueLeaf({
      issuer: { certificate: pki.issuer.certificate, privateKey: pki.issuer.keyPair.privateKey },
      publicKey: keys.publicKey,
      identity: serverName,
      spiffeId: spiffeId({ trustDomain: "cluster.local", namespace: "meshtls", serviceAccount: "identity" }),
    });
    const chain = [own, pki.issuer.certificate].map((c) => pemEncode("CERTIFICATE", c)).join("");
    const keyPem = (await exportPrivateKey(keys.privateKey)) as string;
    const provider: experimental.CertificateProvider = {
      // grpc-js registers its watcher after adding the listener: answer asynchronously.
      addIdentityCertificateListener: (l) => setImmediate(() => l({ certificate: Buffer.from(chain), privateKey: Buffer.from(keyPem) })),
      removeIdentityCertificateListener: () => {},
      addCaCertificateListener: () => {},
      removeCaCertificateListener: () => {},
    };
    const grpcServer = new Server(parts.serverOptions);
    grpcServer.addService(parts.service, parts.implementation);
    const port = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync("127.0.0.1:0", experimental.createCertificateProviderServerCredentials(provider, null, false), (e, p) => (e ? reject(e) : resolve(p))),
    );
    return { server: grpcServer, address: `127.0.0.1:${port}` };
  }

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "certifier-"));
    pki = await createPkiFixture();
    signer = await createTokenSigner();
    ({ server, address } = await startServer(60_000, 1000));
  });
  afterAll(async () => {
    server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  it("gets a verified certificate, publishes it, re-reads the token file, and stops on abort", async () => {
    const tokenFile = path.join(dir, "token");
    const store = createCredentialStore();
    const registry = new Registry();
    const controller = new AbortController();
    const certifier = createCertifier({
      identity,
      tokenFile,
      trustAnchors: [pki.anchor.certificate],
      address,
      serverName,
      store,
      metricsRegistry: registry,
      backoff: { initialMs: 50, maxMs: 200 },
      signal: controller.signal,
    });
    const published: Credentials[] = [];
    store.subscribe((c) => published.push(c));
    certifier.start();
    // No token yet: the certifier retries rather than giving up.
    await new Promise((r) => setTimeout(r, 300));
    expect(store.current()).toBeUndefined();
    expect(await registry.getSingleMetricAsString("identity_cert_refreshes_total")).toMatch(/result="failure"} [1-9]/);
    await writeFile(tokenFile, `${await signer.mint("default", "web")}\n`);
    const credentials = await certifier.ready();
    expect(published).toEqual([credentials]);
    expect(credentials.identity).toBe(identity);
    expect(credentials.intermediates).toEqual([pki.issuer.certificate]);
    expect(credentials.certificateChainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(credentials.privateKeyPem).toMatch(/BEGIN PRIVATE KEY/);
    expect(credentials.notAfter.getTime() - Date.now()).toBeGreaterThan(55_000);
    expect(await registry.getSingleMetricAsString("identity_cert_expiration_timestamp_seconds")).toMatch(
      new RegExp(`identity_cert_expiration_timestamp_seconds ${credentials.notAfter.getTime() / 1000}`),
    );
    controller.abort();
    await certifier.stop();
  });

  it("refuses to publish a certificate for a name the server did not verify (wrong serverName)", async () => {
    const tokenFile = path.join(dir, "token2");
    await writeFile(tokenFile, await signer.mint("default", "web"));
    const store = createCredentialStore();
    const certifier = createCertifier({
      identity,
      tokenFile,
      trustAnchors: [pki.anchor.certificate],
      address,
      serverName: "someone-else.meshtls.serviceaccount.identity.meshtls.cluster.local",
      store,
      backoff: { initialMs: 50, maxMs: 100 },
    });
    certifier.start();
    await new Promise((r) => setTimeout(r, 500));
    expect(store.current()).toBeUndefined();
    await certifier.stop();
    await expect(certifier.ready()).rejects.toMatchObject({ code: "ERR_ABORTED" });
  });

  it("publishes nothing when the anchors do not match the service and its leaves", async () => {
    const tokenFile = path.join(dir, "token3");
    await writeFile(tokenFile, await signer.mint("default", "web"));
    const other = await createPkiFixture();
    const store = createCredentialStore();
    const certifier = createCertifier({
      identity,
      tokenFile,
      // Anchors that neither the server's certificate nor the leaf chain to.
      trustAnchors: [other.anchor.certificate],
      address,
      serverName,
      store,
      backoff: { initialMs: 50, maxMs: 100 },
    });
    certifier.start();
    await new Promise((r) => setTimeout(r, 500));
    expect(store.current()).toBeUndefined();
    await certifier.stop();
  });

  describe("renewNow", () => {
    it("gets a certificate for a new key now and publishes it; concurrent calls share one request", async () => {
      const tokenFile = path.join(dir, "token-renew");
      await writeFile(tokenFile, await signer.mint("default", "web"));
      const store = createCredentialStore();
      const certifier = createCertifier({ identity, tokenFile, trustAnchors: [pki.anchor.certificate], address, serverName, store });
      const published: Credentials[] = [];
      store.subscribe((c) => published.push(c));
      certifier.start();
      const first = await certifier.ready();

      const [a, b] = await Promise.all([certifier.renewNow(), certifier.renewNow()]);
      expect(b).toBe(a);
      expect(published).toEqual([first, a]);
      expect(store.current()).toBe(a);
      expect(a.privateKeyPem).not.toBe(first.privateKeyPem);
      expect(Buffer.from(a.leaf).equals(Buffer.from(first.leaf))).toBe(false);

      const c = await certifier.renewNow();
      expect(c.privateKeyPem).not.toBe(a.privateKeyPem);
      expect(published).toEqual([first, a, c]);
      await certifier.stop();
      await expect(certifier.renewNow()).rejects.toMatchObject({ code: "ERR_ABORTED" });
    });

    it("rejects with the coded error when Certify fails, keeping the current certificate", async () => {
      const tokenFile = path.join(dir, "token-renew-fail");
      await writeFile(tokenFile, await signer.mint("default", "web"));
      const store = createCredentialStore();
      const registry = new Registry();
      const certifier = createCertifier({ identity, tokenFile, trustAnchors: [pki.anchor.certificate], address, serverName, store, metricsRegistry: registry });
      certifier.start();
      const first = await certifier.ready();
      // A token for another ServiceAccount: the service refuses the request.
      await writeFile(tokenFile, await signer.mint("default", "api"));
      await expect(certifier.renewNow()).rejects.toMatchObject({ name: "IdentityError", code: "ERR_CERTIFY_FAILED" });
      await writeFile(tokenFile, "");
      await expect(certifier.renewNow()).rejects.toMatchObject({ code: "ERR_TOKEN_FILE" });
      expect(store.current()).toBe(first);
      expect(await registry.getSingleMetricAsString("identity_cert_refreshes_total")).toMatch(/result="failure"} 2/);
      await certifier.stop();
    });

    it("reschedules the next refresh from the renewed certificate, with the renewed key", async () => {
      // 10-second leaves: refreshes at 70 %, 7 s after each certificate.
      const short = await startServer(10_000, 0);
      const tokenFile = path.join(dir, "token-renew-schedule");
      await writeFile(tokenFile, await signer.mint("default", "web"));
      const store = createCredentialStore();
      const certifier = createCertifier({ identity, tokenFile, trustAnchors: [pki.anchor.certificate], address: short.address, serverName, store });
      const published: { at: number; credentials: Credentials }[] = [];
      store.subscribe((credentials) => published.push({ at: Date.now(), credentials }));
      certifier.start();
      await certifier.ready();
      const t0 = published[0]?.at ?? 0;
      await new Promise((r) => setTimeout(r, 3000));
      const renewed = await certifier.renewNow();
      const renewedAt = Date.now();
      // The refresh due 7 s after the first certificate did not happen: the next is due 7 s after the renewal.
      await new Promise((r) => setTimeout(r, t0 + 8500 - Date.now()));
      expect(published).toHaveLength(2);
      await new Promise((r) => setTimeout(r, renewedAt + 7000 + 3000 - Date.now()));
      expect(published).toHaveLength(3);
      const refreshed = published[2] as { at: number; credentials: Credentials };
      expect(refreshed.at - renewedAt).toBeGreaterThan(6000);
      expect(refreshed.credentials.privateKeyPem).toBe(renewed.privateKeyPem);
      await certifier.stop();
      short.server.forceShutdown();
    }, 30_000);
  });

  it("requires serverName unless plaintext", () => {
    expect(() => createCertifier({ identity, tokenFile: "x", trustAnchors: [], address: "127.0.0.1:1", store: createCredentialStore() })).toThrow(/serverName/);
  });
});
