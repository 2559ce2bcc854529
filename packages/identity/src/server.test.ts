import { credentials, Metadata, Server, ServerCredentials, status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import { IdentityClient, timestampToDate } from "@meshtls/api";
import type { CertifyResponse , CertifyRequest} from "@meshtls/api";
import { createCsr, generateKeyPair, parseCertificate } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createJwksTokenValidator } from "./jwks-token-validator.ts";
import { createIdentityServer } from "./server.ts";
import { createPkiFixture, createTokenSigner, TOKEN_ISSUER } from "./test-fixtures.ts";

const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";

function call(client: IdentityClient, request: CertifyRequest): Promise<CertifyResponse> {
  return new Promise((resolve, reject) =>
    client.certify(request, new Metadata(), { deadline: Date.now() + 10_000 }, (error: ServiceError | null, response) => (error ? reject(error) : resolve(response))),
  );
}

describe("createIdentityServer over gRPC on loopback", () => {
  let server: Server;
  let client: IdentityClient;
  let signer: Awaited<ReturnType<typeof createTokenSigner>>;

  beforeAll(async () => {
    const pki = await createPkiFixture();
    signer = await createTokenSigner();
    const identityServer = createIdentityServer({
      issuerStore: pki.source,
      tokenValidator: createJwksTokenValidator({ jwks: signer.jwks, issuer: TOKEN_ISSUER }),
    });
    server = new Server(identityServer.serverOptions);
    server.addService(identityServer.service, identityServer.implementation);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    client = new IdentityClient(`127.0.0.1:${port}`, credentials.createInsecure());
  });
  afterAll(() => {
    client.close();
    server.forceShutdown();
  });

  it("answers Certify with DER leaf, intermediates and valid_until = notAfter", async () => {
    const csr = await createCsr({ keyPair: await generateKeyPair(), identity });
    const token = Buffer.from(await signer.mint("default", "web"));
    const response = await call(client, { identity, token, certificateSigningRequest: Buffer.from(csr) });
    const leaf = parseCertificate(new Uint8Array(response.leafCertificate));
    expect(response.intermediateCertificates).toHaveLength(1);
    expect(response.validUntil && timestampToDate(response.validUntil).getTime()).toBe(leaf.notAfter.getTime());
  });

  it("answers a request that is not a CertifyRequest INVALID_ARGUMENT (grpc-js alone: INTERNAL)", async () => {
    const raw = (bytes: Buffer): Buffer => bytes;
    // Field 1 with wire type 7: no decoder accepts it.
    const error = await new Promise<ServiceError>((resolve) =>
      client.makeUnaryRequest("/io.linkerd.proxy.identity.Identity/Certify", raw, raw, Buffer.from([0x0f, 0x01]), new Metadata(), (e) => resolve(e as ServiceError)),
    );
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^the Certify request is not a valid protobuf message/);
  });

  it("maps refusals to status codes and sends the code in metadata", async () => {
    const error = (await call(client, { identity: "", token: Buffer.alloc(0), certificateSigningRequest: Buffer.alloc(0) }).catch((e: unknown) => e)) as ServiceError;
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/request has no identity/);
    expect(error.metadata.get("meshtls-error-code")).toEqual(["ERR_IDENTITY_MISSING"]);
    const token = Buffer.from(await signer.mint("default", "db"));
    const csr = await createCsr({ keyPair: await generateKeyPair(), identity });
    const mismatch = (await call(client, { identity, token, certificateSigningRequest: Buffer.from(csr) }).catch((e: unknown) => e)) as ServiceError;
    expect(mismatch.code).toBe(status.PERMISSION_DENIED);
  });

  it("refuses a message over the limit at the transport, and keeps serving", async () => {
    const error = (await call(client, { identity, token: Buffer.alloc(80_000), certificateSigningRequest: Buffer.alloc(1) }).catch((e: unknown) => e)) as ServiceError;
    expect(error.code).toBe(status.RESOURCE_EXHAUSTED);
    const csr = await createCsr({ keyPair: await generateKeyPair(), identity });
    await expect(call(client, { identity, token: Buffer.from(await signer.mint("default", "web")), certificateSigningRequest: Buffer.from(csr) })).resolves.toBeDefined();
  });

  it("aborts the token check when the caller cancels, and only then", async () => {
    const pki = await createPkiFixture();
    const seen: { aborted: boolean }[] = [];
    let release = (): void => {};
    const parts = createIdentityServer({
      issuerStore: pki.source,
      tokenValidator: {
        validate: (_token, options) =>
          new Promise((resolve, reject) => {
            const entry = { aborted: false };
            seen.push(entry);
            options?.signal?.addEventListener("abort", () => {
              entry.aborted = true;
              reject(new Error("cancelled"));
            });
            release = () => resolve({ namespace: "default", serviceAccount: "db", subject: "system:serviceaccount:default:db" });
          }),
      },
    });
    const slow = new Server(parts.serverOptions);
    slow.addService(parts.service, parts.implementation);
    const port = await new Promise<number>((resolve, reject) => slow.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    const slowClient = new IdentityClient(`127.0.0.1:${port}`, credentials.createInsecure());
    try {
      const request = { identity, token: Buffer.from("t"), certificateSigningRequest: Buffer.from([0x30]) };
      // Answered calls are not aborted afterwards (grpc-js reports every closed stream as "cancelled").
      const answered = call(slowClient, request).catch((e: unknown) => e);
      await expect.poll(() => seen.length, { timeout: 5000 }).toBe(1);
      release();
      expect(((await answered) as ServiceError).code).toBe(status.PERMISSION_DENIED);
      await new Promise((r) => setTimeout(r, 100));
      expect(seen[0]?.aborted).toBe(false);
      // A call the client cancels while its token is being checked aborts that check.
      const pending = slowClient.certify(request, new Metadata(), () => {});
      await expect.poll(() => seen.length, { timeout: 5000 }).toBe(2);
      pending.cancel();
      await expect.poll(() => seen[1]?.aborted, { timeout: 5000 }).toBe(true);
    } finally {
      slowClient.close();
      slow.forceShutdown();
    }
  });
});
