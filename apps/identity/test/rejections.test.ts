import { createSign } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import type { CertifyRequest, IdentityClient } from "@meshtls/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certify, cli, createMaterial, identityClient, identityFor, mintToken, opensslCsr, startIdentity, tempDir, TOKEN_ISSUER } from "./harness.ts";
import type { IdentityProcess } from "./harness.ts";

const identity = identityFor("web");
const spiffe = "spiffe://cluster.local/ns/default/sa/web";

interface Case {
  name: string;
  request: () => Promise<CertifyRequest>;
  code: status;
  message: RegExp;
}

describe("Certify refusals over gRPC (TLS), each with a status and an actionable message", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let proc: IdentityProcess;
  let client: IdentityClient;
  let goodCsr: Buffer;
  let goodToken: string;

  const csr = async (options: Parameters<typeof opensslCsr>[1]) => (await opensslCsr(dir, options)).der;
  const req = (overrides: Partial<CertifyRequest> = {}): CertifyRequest => ({
    identity,
    token: Buffer.from(goodToken),
    certificateSigningRequest: goodCsr,
    ...overrides,
  });

  /** An ES256 JWT signed with the local signer's key, for claims the CLI will not mint. */
  async function rawJwt(header: object, payload: object, sign = true): Promise<string> {
    const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const input = `${b64(header)}.${b64(payload)}`;
    if (!sign) return `${input}.`;
    const key = await readFile(path.join(dir, "token", "token-signer.key"), "utf8");
    const signature = createSign("SHA256").update(input).sign({ key, dsaEncoding: "ieee-p1363" });
    return `${input}.${signature.toString("base64url")}`;
  }

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("reject"));
    await createMaterial(dir);
    await cli(["token", "keygen", "--out", path.join(dir, "stranger")]);
    proc = await startIdentity({ dir });
    client = await identityClient(dir, proc.grpcAddress);
    goodCsr = await csr({ cn: identity, san: `DNS:${identity}` });
    goodToken = await mintToken(dir, "default", "web");
  });
  afterAll(async () => {
    client?.close();
    await proc?.stop();
    await cleanup();
  });

  const cases: Case[] = [
    { name: "missing identity", request: async () => req({ identity: "" }), code: status.INVALID_ARGUMENT, message: /request has no identity/ },
    { name: "missing token", request: async () => req({ token: Buffer.alloc(0) }), code: status.INVALID_ARGUMENT, message: /request has no token/ },
    { name: "missing CSR", request: async () => req({ certificateSigningRequest: Buffer.alloc(0) }), code: status.INVALID_ARGUMENT, message: /no certificate_signing_request; send a DER PKCS#10 CSR/ },
    {
      name: "CSR not DER (PEM text)",
      request: async () => {
        const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${goodCsr.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
        return req({ certificateSigningRequest: Buffer.from(pem) });
      },
      code: status.INVALID_ARGUMENT,
      message: /certificate_signing_request is PEM text; send the DER bytes/,
    },
    {
      name: "CSR not DER (truncated)",
      request: async () => req({ certificateSigningRequest: goodCsr.subarray(0, 40) }),
      code: status.INVALID_ARGUMENT,
      message: /certificate_signing_request is not a DER PKCS#10 CSR/,
    },
    {
      name: "CSR SAN is another identity",
      request: async () => req({ certificateSigningRequest: await csr({ san: `DNS:${identityFor("db")}` }) }),
      code: status.FAILED_PRECONDITION,
      message: /CSR DNS SAN "db\.default\..*" is not the requested identity "web\.default\./,
    },
    {
      name: "two DNS SANs",
      request: async () => req({ certificateSigningRequest: await csr({ san: `DNS:${identity},DNS:extra.example.com` }) }),
      code: status.FAILED_PRECONDITION,
      message: /exactly one DNS SAN, the identity .*; it has 2/,
    },
    { name: "IP SAN", request: async () => req({ certificateSigningRequest: await csr({ san: `DNS:${identity},IP:10.0.0.1` }) }), code: status.FAILED_PRECONDITION, message: /IP SAN 10\.0\.0\.1; only the identity name is allowed/ },
    { name: "email SAN", request: async () => req({ certificateSigningRequest: await csr({ san: `DNS:${identity},email:a@example.com` }) }), code: status.FAILED_PRECONDITION, message: /email SAN a@example\.com/ },
    {
      name: "wrong URI SAN",
      request: async () => req({ certificateSigningRequest: await csr({ san: `DNS:${identity},URI:spiffe://cluster.local/ns/default/sa/admin` }) }),
      code: status.FAILED_PRECONDITION,
      message: new RegExp(`URI SAN "spiffe://cluster.local/ns/default/sa/admin" is not the SPIFFE ID ${spiffe}`),
    },
    {
      name: "CN is another name",
      request: async () => req({ certificateSigningRequest: await csr({ cn: "admin", san: `DNS:${identity}` }) }),
      code: status.FAILED_PRECONDITION,
      message: /CN "admin" is neither empty nor the requested identity/,
    },
    {
      name: "bad CSR signature",
      request: async () => {
        const bad = Buffer.from(goodCsr);
        bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 0x01;
        return req({ certificateSigningRequest: bad });
      },
      code: status.FAILED_PRECONDITION,
      message: /self-signature does not verify/,
    },
    {
      name: "RSA key",
      request: async () => req({ certificateSigningRequest: await csr({ san: `DNS:${identity}`, newkey: ["-newkey", "rsa:2048"] }) }),
      code: status.FAILED_PRECONDITION,
      message: /CSR key is 2048-bit RSA; meshtls requires an ECDSA P-256 key/,
    },
    {
      name: "P-384 key",
      request: async () => req({ certificateSigningRequest: await csr({ san: `DNS:${identity}`, newkey: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"] }) }),
      code: status.FAILED_PRECONDITION,
      message: /curve P-384; meshtls requires P-256/,
    },
    {
      name: "explicit curve parameters",
      request: async () =>
        req({
          certificateSigningRequest: await csr({
            san: `DNS:${identity}`,
            newkey: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-pkeyopt", "ec_param_enc:explicit"],
          }),
        }),
      code: status.FAILED_PRECONDITION,
      message: /explicit EC curve parameters; encode the key with the named curve P-256/,
    },
    { name: "token with wrong audience", request: async () => req({ token: Buffer.from(await mintToken(dir, "default", "web", ["--audience", "kubernetes.default.svc"])) }), code: status.UNAUTHENTICATED, message: /audience \["kubernetes\.default\.svc"\] does not include "identity\.l5d\.io"/ },
    { name: "expired token", request: async () => req({ token: Buffer.from(await mintToken(dir, "default", "web", ["--not-before", "-2h", "--lifetime", "1h"])) }), code: status.UNAUTHENTICATED, message: /token expired at .*; mint or project a fresh token/ },
    { name: "token not yet valid", request: async () => req({ token: Buffer.from(await mintToken(dir, "default", "web", ["--not-before", "1h"])) }), code: status.UNAUTHENTICATED, message: /token is not valid before/ },
    {
      name: "token signed by an unknown key",
      request: async () => req({ token: Buffer.from((await cli(["token", "mint", "--key", path.join(dir, "stranger", "token-signer.key"), "--namespace", "default", "--service-account", "web"])).trim()) }),
      code: status.UNAUTHENTICATED,
      message: /signed by a key that is not in the trusted JWKS/,
    },
    {
      name: "token with alg none",
      request: async () => {
        const now = Math.floor(Date.now() / 1000);
        const claims = { iss: TOKEN_ISSUER, sub: "system:serviceaccount:default:web", aud: ["identity.l5d.io"], nbf: now, exp: now + 3600, "kubernetes.io": { namespace: "default", serviceaccount: { name: "web" } } };
        return req({ token: Buffer.from(await rawJwt({ alg: "none", typ: "JWT" }, claims, false)) });
      },
      code: status.UNAUTHENTICATED,
      message: /token alg "none" is not accepted/,
    },
    {
      name: "token from another issuer",
      request: async () => req({ token: Buffer.from(await mintToken(dir, "default", "web", ["--issuer", "https://elsewhere.example"])) }),
      code: status.UNAUTHENTICATED,
      message: /token issuer "https:\/\/elsewhere\.example" is not the expected "https:\/\/meshtls\.local"/,
    },
    {
      name: "token for another ServiceAccount",
      request: async () => req({ token: Buffer.from(await mintToken(dir, "default", "db")) }),
      code: status.PERMISSION_DENIED,
      message: /token is for ServiceAccount default\/db \(identity db\.default\..*\), not for the requested web\.default\./,
    },
    // The order: the caller is authenticated and authorized before its CSR is parsed or checked.
    {
      name: "unauthenticated caller with a malformed CSR (the token answers, not the CSR)",
      request: async () => req({ token: Buffer.from(await mintToken(dir, "default", "web", ["--audience", "kubernetes.default.svc"])), certificateSigningRequest: goodCsr.subarray(0, 40) }),
      code: status.UNAUTHENTICATED,
      message: /audience \["kubernetes\.default\.svc"\] does not include "identity\.l5d\.io"/,
    },
    {
      name: "unauthenticated caller with a CSR against policy (the policy is not revealed)",
      request: async () => req({ token: Buffer.from(await mintToken(dir, "default", "web", ["--issuer", "https://elsewhere.example"])), certificateSigningRequest: await csr({ san: `DNS:${identity},IP:10.0.0.1` }) }),
      code: status.UNAUTHENTICATED,
      message: /token issuer "https:\/\/elsewhere\.example" is not the expected/,
    },
    {
      name: "caller authenticated as another ServiceAccount with a bad CSR (PERMISSION_DENIED, not the CSR)",
      request: async () => req({ token: Buffer.from(await mintToken(dir, "default", "db")), certificateSigningRequest: Buffer.from("-----BEGIN CERTIFICATE REQUEST-----\n") }),
      code: status.PERMISSION_DENIED,
      message: /token is for ServiceAccount default\/db/,
    },
    {
      name: "identity outside the trust domain",
      request: async () => {
        const outside = "web.default.serviceaccount.identity.meshtls.example.org";
        return req({ identity: outside, certificateSigningRequest: await csr({ san: `DNS:${outside}` }) });
      },
      code: status.INVALID_ARGUMENT,
      message: /requested identity name "web\.default\.serviceaccount\.identity\.meshtls\.example\.org" is not of the form <sa>\.<ns>\.serviceaccount\.identity\.meshtls\.cluster\.local/,
    },
    {
      name: "request just over 64 KiB (the handler's own check)",
      request: async () => {
        const r = req();
        const filler = 65_536 + 1 - Buffer.byteLength(r.identity) - r.certificateSigningRequest.length;
        return req({ token: Buffer.alloc(filler, 0x41) });
      },
      code: status.RESOURCE_EXHAUSTED,
      message: /request is 65537 bytes; the limit is 65536/,
    },
    {
      name: "request over 64 KiB",
      request: async () => req({ token: Buffer.alloc(70_000, 0x41) }),
      code: status.RESOURCE_EXHAUSTED,
      message: /larger than max|limit is 65536/,
    },
  ];

  it.each(cases)("$name", async ({ request, code, message }) => {
    const error = (await certify(client, await request()).then(
      () => {
        throw new Error("the request was accepted");
      },
      (e: unknown) => e,
    )) as ServiceError;
    expect({ code: status[error.code], details: error.details }).toMatchObject({ code: status[code] });
    expect(error.details).toMatch(message);
    // Still serving: a good request right after succeeds.
    const ok = await certify(client, req());
    expect(ok.leafCertificate.length).toBeGreaterThan(100);
  });

  it("counted every refusal by result, and logged each with its reason", async () => {
    const metrics = await (await fetch(`${proc.adminUrl}/metrics`)).text();
    for (const result of ["ERR_CSR_REJECTED", "ERR_TOKEN_EXPIRED", "ERR_IDENTITY_MISMATCH", "ERR_IDENTITY_MISSING"]) {
      expect(metrics).toMatch(new RegExp(`identity_certify_total\\{result="${result}"\\} \\d+`));
    }
    expect(proc.logs.filter((l) => l["msg"] === "certify refused").length).toBeGreaterThanOrEqual(cases.length - 1);
  });
});
