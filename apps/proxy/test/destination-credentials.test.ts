import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import type { ServerWritableStream } from "@grpc/grpc-js";
import { createDestinationClient, createDestinationServer, createStaticRegistry } from "@meshtls/destination";
import type { DestinationClient, EndpointSet, Resolution } from "@meshtls/destination";
import { createTrustAnchorsStore, type TrustAnchorsStore } from "@meshtls/identity";
import { createIssuer, createTrustAnchor, exportPrivateKey, generateKeyPair, issueLeaf, pemEncode } from "@meshtls/pki";
import { noopLogger, peerIdentity } from "@meshtls/proxy-core";
import type { Credentials, CredentialSource } from "@meshtls/proxy-core";
import { afterEach, describe, expect, it } from "vitest";
import { createControlPlaneCredentials as createDestinationChannelCredentials } from "@meshtls/identity";

/** The trust anchors file as meshtls-proxy follows it: identity's trust-anchors store. */
async function followedAnchors(file: string): Promise<TrustAnchorsStore> {
  const store = createTrustAnchorsStore({ file, pollIntervalMs: 100, logger: noopLogger });
  expect((await store.start()).result).toBe("loaded");
  return store;
}

const identityOf = (sa: string, ns = "default"): string => `${sa}.${ns}.serviceaccount.identity.meshtls.cluster.local`;
const PROXY = identityOf("web");
const DESTINATION = identityOf("destination", "meshtls");

/** One trust anchor and its issuer, able to issue leaves. */
async function createPki(): Promise<{ anchorPem: string; leaf(identity: string): Promise<{ identity: string; privateKeyPem: string; certificateChainPem: string; notAfter: Date }> }> {
  const anchor = await createTrustAnchor();
  const issuer = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey } });
  return {
    anchorPem: pemEncode("CERTIFICATE", anchor.certificate),
    async leaf(identity) {
      const keyPair = await generateKeyPair();
      const leaf = await issueLeaf({ issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey }, publicKey: keyPair.publicKey, identity });
      return {
        identity,
        privateKeyPem: (await exportPrivateKey(keyPair.privateKey)) as string,
        certificateChainPem: pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuer.certificate),
        notAfter: new Date(Date.now() + 3_600_000),
      };
    },
  };
}

const snapshot = (address: string) => ({
  services: [{ name: "web", namespace: "default", ports: [{ port: 80, targetPort: 8080 }], endpoints: [{ address, meshed: true, serviceAccount: "web", inboundPort: 4143, weight: 10_000 }] }],
});

/** A destination service over TLS that requires a client certificate chaining to `clientCaPem`, and records each caller's identity. */
async function startDestination(options: { port: number; serverPki: Awaited<ReturnType<typeof createPki>>; clientCaPem: string; address: string }): Promise<{ server: Server; port: number; callers: (string | undefined)[] }> {
  const handle = createDestinationServer({ registry: createStaticRegistry(snapshot(options.address)) });
  const callers: (string | undefined)[] = [];
  const server = new Server();
  const implementation = handle.implementation as unknown as Record<string, (call: ServerWritableStream<unknown, unknown>) => void>;
  const wrapped: Record<string, (call: ServerWritableStream<unknown, unknown>) => void> = {};
  for (const [name, method] of Object.entries(implementation)) {
    wrapped[name] = (call) => {
      callers.push(peerIdentity(call.getAuthContext().sslPeerCertificate?.raw));
      method(call);
    };
  }
  server.addService(handle.definition, wrapped);
  const leaf = await options.serverPki.leaf(DESTINATION);
  const credentials = ServerCredentials.createSsl(Buffer.from(options.clientCaPem), [{ cert_chain: Buffer.from(leaf.certificateChainPem), private_key: Buffer.from(leaf.privateKeyPem) }], true);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`127.0.0.1:${options.port}`, credentials, (error, bound) => (error ? reject(error) : resolve(bound))));
  return { server, port, callers };
}

/** The proxy's credential store, as the certifier writes it. */
function createCredentialStore(): CredentialSource & { set(credentials: Credentials): void } {
  let value: Credentials | undefined;
  const listeners = new Set<(credentials: Credentials) => void>();
  return {
    current: () => value,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    set(credentials) {
      value = credentials;
      for (const listener of listeners) listener(credentials);
    },
  };
}

const addressesOf = (set: EndpointSet | undefined): string[] => (set?.endpoints ?? []).map((e) => e.address);

async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("destination channel credentials", () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const cleanup of cleanups.splice(0).reverse()) cleanup();
  });

  it("verify the service against the current anchors, present the proxy's certificate, and follow rotations without dropping resolutions", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "meshtls-dst-creds-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const first = await createPki();
    const second = await createPki();
    const anchorsFile = path.join(dir, "ca.crt");
    writeFileSync(anchorsFile, first.anchorPem);
    const bundle = await followedAnchors(anchorsFile);
    cleanups.push(() => bundle.close());
    const store = createCredentialStore();

    let destination = await startDestination({ port: 0, serverPki: first, clientCaPem: first.anchorPem, address: "10.0.0.1" });
    const port = destination.port;
    cleanups.push(() => destination.server.forceShutdown());
    const channel = createDestinationChannelCredentials({ serverName: DESTINATION, trustBundle: bundle, credentials: store });
    cleanups.push(() => channel.close());
    const client: DestinationClient = createDestinationClient({ address: `127.0.0.1:${port}`, credentials: channel.credentials, contextToken: '{"ns":"default"}', backoff: { initialMs: 50, maxMs: 200 } });
    cleanups.push(() => client.close());
    const resolution: Resolution = client.resolve("web.default.svc.cluster.local:80");

    // No certificate yet: the channel does not connect (the server requires one).
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(resolution.current()).toBeUndefined();
    expect(destination.callers).toEqual([]);

    // With one, the resolution is answered and the server saw our mesh identity.
    store.set(await first.leaf(PROXY));
    expect(addressesOf(await resolution.ready({ timeoutMs: 10_000 }))).toEqual(["10.0.0.1"]);
    expect(destination.callers).toEqual([PROXY]);

    // Rotate everything: the anchors file and our certificate move to a new
    // PKI, and the service restarts on the same port with a certificate from it.
    writeFileSync(anchorsFile, second.anchorPem);
    await until("the anchors reload", () => pemEncode("CERTIFICATE", bundle.current()[0] ?? new Uint8Array()) === second.anchorPem);
    store.set(await second.leaf(PROXY));
    destination.server.forceShutdown();
    // The resolution keeps its last known set while the service is away.
    expect(addressesOf(resolution.current())).toEqual(["10.0.0.1"]);
    destination = await startDestination({ port, serverPki: second, clientCaPem: second.anchorPem, address: "10.0.0.2" });
    await until("the set from the restarted service", () => addressesOf(resolution.current()).join() === "10.0.0.2");
    expect(destination.callers.at(-1)).toBe(PROXY);
    resolution.close();
  }, 30_000);

  it("fail closed: a service of another trust anchor, or with another identity, is never believed", async () => {
    const trusted = await createPki();
    const foreign = await createPki();
    const dir = mkdtempSync(path.join(os.tmpdir(), "meshtls-dst-creds-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const anchorsFile = path.join(dir, "ca.crt");
    writeFileSync(anchorsFile, trusted.anchorPem);
    const bundle = await followedAnchors(anchorsFile);
    cleanups.push(() => bundle.close());
    const store = createCredentialStore();
    store.set(await trusted.leaf(PROXY));

    // A service whose certificate chains to an anchor we do not trust.
    const impostor = await startDestination({ port: 0, serverPki: foreign, clientCaPem: trusted.anchorPem, address: "10.6.6.6" });
    cleanups.push(() => impostor.server.forceShutdown());
    // A trusted service that is not the destination identity we expect.
    const other = await startDestination({ port: 0, serverPki: trusted, clientCaPem: trusted.anchorPem, address: "10.6.6.7" });
    cleanups.push(() => other.server.forceShutdown());
    for (const [port, serverName] of [
      [impostor.port, DESTINATION],
      [other.port, identityOf("someone-else", "meshtls")],
    ] as const) {
      const channel = createDestinationChannelCredentials({ serverName, trustBundle: bundle, credentials: store });
      cleanups.push(() => channel.close());
      const client = createDestinationClient({ address: `127.0.0.1:${port}`, credentials: channel.credentials, contextToken: '{"ns":"default"}', backoff: { initialMs: 50, maxMs: 200 } });
      cleanups.push(() => client.close());
      const resolution = client.resolve("web.default.svc.cluster.local:80");
      await expect(resolution.ready({ timeoutMs: 1500 })).rejects.toThrow();
      expect(resolution.current()).toBeUndefined();
      resolution.close();
    }
    expect(impostor.callers).toEqual([]);
    expect(other.callers).toEqual([]);
  }, 30_000);
});
