import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createCsr, generateKeyPair, parseCertificate, parseCsr, pemEncode, toDer } from "@meshtls/pki";
import * as asn1js from "asn1js";
import fc from "fast-check";
import * as pkijs from "pkijs";
import { Registry } from "prom-client";
import { beforeAll, describe, expect, it } from "vitest";
import { createCertifyHandler } from "./certify.ts";
import { IdentityError } from "./errors.ts";
import type { CertifyHandler } from "./certify.ts";
import { createJwksTokenValidator } from "./jwks-token-validator.ts";
import { createPkiFixture, createTokenSigner, TOKEN_ISSUER } from "./test-fixtures.ts";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const vector = (p: string) => readFileSync(path.resolve(repoRoot, "../shared/vectors/csr", p), "utf8");

const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";
const spiffe = "spiffe://cluster.local/ns/default/sa/web";

describe("createCertifyHandler", () => {
  let pki: Awaited<ReturnType<typeof createPkiFixture>>;
  let signer: Awaited<ReturnType<typeof createTokenSigner>>;
  let certify: CertifyHandler;
  let registry: Registry;
  let csr: Uint8Array;
  let token: Uint8Array;

  beforeAll(async () => {
    pki = await createPkiFixture();
    signer = await createTokenSigner();
    registry = new Registry();
    certify = createCertifyHandler({
      issuerStore: pki.source,
      tokenValidator: createJwksTokenValidator({ jwks: signer.jwks, issuer: TOKEN_ISSUER }),
      metricsRegistry: registry,
    });
    csr = await createCsr({ keyPair: await generateKeyPair(), identity });
    token = new TextEncoder().encode(await signer.mint("default", "web"));
  });

  it("signs a leaf with the identity and SPIFFE ID that chains to the anchor", async () => {
    const out = await certify({ identity, token, certificateSigningRequest: csr });
    const leaf = parseCertificate(out.leaf);
    expect(leaf.san.dns).toEqual([identity]);
    expect(leaf.san.uri).toEqual([spiffe]);
    expect(leaf.ca).toBe(false);
    expect(leaf.extKeyUsage).toEqual(expect.arrayContaining(["serverAuth", "clientAuth"]));
    expect(out.validUntil.getTime()).toBe(leaf.notAfter.getTime());
    expect(leaf.notAfter.getTime() - leaf.notBefore.getTime()).toBe(24 * 3600_000 + 40_000);
    expect(out.intermediates).toEqual([pki.issuer.certificate]);
    // An outside verifier agrees: openssl, strict, for both TLS purposes.
    const dir = mkdtempSync(path.join(tmpdir(), "certify-"));
    try {
      writeFileSync(path.join(dir, "ca.pem"), pki.anchorPem);
      writeFileSync(path.join(dir, "chain.pem"), out.intermediates.map((c) => pemEncode("CERTIFICATE", c)).join(""));
      writeFileSync(path.join(dir, "leaf.pem"), pemEncode("CERTIFICATE", out.leaf));
      for (const purpose of ["sslclient", "sslserver"]) {
        const result = execFileSync("openssl", ["verify", "-x509_strict", "-purpose", purpose, "-CAfile", path.join(dir, "ca.pem"), "-untrusted", path.join(dir, "chain.pem"), path.join(dir, "leaf.pem")], { timeout: 10_000 });
        expect(result.toString()).toMatch(/leaf\.pem: OK/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await registry.getSingleMetricAsString("identity_certify_total")).toMatch(/result="ok"} 1/);
  });

  it("accepts a CSR whose URI SAN is the identity's SPIFFE ID and whose CN is empty", async () => {
    const withUri = await createCsr({ keyPair: await generateKeyPair(), identity, spiffeId: spiffe, commonName: "" });
    await expect(certify({ identity, token, certificateSigningRequest: withUri })).resolves.toMatchObject({ identity });
  });

  it("accepts a Linkerd proxy's CSR shape: CN = the identity even past X.509's 64-character bound, plus one DNS SAN", async () => {
    // linkerd2-proxy's identity client writes the identity as the subject CN as well as the DNS SAN, whatever its length.
    const sa = "payments-reconciliation-worker";
    const longIdentity = `${sa}.finance-prod.serviceaccount.identity.meshtls.cluster.local`;
    expect(longIdentity.length).toBeGreaterThan(64);
    // Our createCsr and openssl req both refuse such a CN, so the request is built field by field with pkijs.
    const keyPair = await generateKeyPair();
    const request = new pkijs.CertificationRequest();
    request.subject.typesAndValues.push(new pkijs.AttributeTypeAndValue({ type: "2.5.4.3", value: new asn1js.Utf8String({ value: longIdentity }) }));
    await request.subjectPublicKeyInfo.importKey(keyPair.publicKey);
    const san = new pkijs.GeneralNames({ names: [new pkijs.GeneralName({ type: 2, value: longIdentity })] });
    const extensions = new pkijs.Extensions({ extensions: [new pkijs.Extension({ extnID: "2.5.29.17", critical: false, extnValue: san.toSchema().toBER(false) })] });
    request.attributes = [new pkijs.Attribute({ type: "1.2.840.113549.1.9.14", values: [extensions.toSchema()] })];
    await request.sign(keyPair.privateKey, "SHA-256");
    const linkerdShaped = new Uint8Array(request.toSchema().toBER(false));
    expect((await parseCsr(linkerdShaped)).subject.commonName).toBe(longIdentity);
    const longToken = new TextEncoder().encode(await signer.mint("finance-prod", sa));
    const out = await certify({ identity: longIdentity, token: longToken, certificateSigningRequest: linkerdShaped });
    expect(parseCertificate(out.leaf).san.dns).toEqual([longIdentity]);
  });

  it.each([
    ["pyca/ec_sha256.pem", /curve P-384/],
    ["pyca/san_rsa_sha1.pem", /RSA; meshtls requires an ECDSA P-256 key/],
    ["x509-limbo/explicit_curve_leaf.csr", /explicit EC curve parameters/],
  ])("refuses the external vector %s with ERR_CSR_REJECTED", async (file, message) => {
    const der = toDer(vector(file), "CERTIFICATE REQUEST");
    await expect(certify({ identity, token, certificateSigningRequest: der })).rejects.toMatchObject({ code: "ERR_CSR_REJECTED", message: expect.stringMatching(message) });
  });

  it("refuses garbage as ERR_CSR_INVALID and counts it", async () => {
    await expect(certify({ identity, token, certificateSigningRequest: new Uint8Array([0x30, 0x82, 0xff, 0xff, 1, 2, 3]) })).rejects.toMatchObject({ code: "ERR_CSR_INVALID" });
    expect(await registry.getSingleMetricAsString("identity_certify_total")).toMatch(/result="ERR_CSR_INVALID"} 1/);
  });

  it("checks in the documented order: fields, identity, issuer, token, name, CSR", async () => {
    const tokenSeen: Uint8Array[] = [];
    const handler = (issuerOk: boolean, tokenFor: string | Error) =>
      createCertifyHandler({
        issuerStore: issuerOk ? pki.source : { current: () => ({ ok: false, reason: "issuer expired" }) },
        tokenValidator: {
          validate: async (t) => {
            tokenSeen.push(t);
            if (tokenFor instanceof Error) throw tokenFor;
            return { namespace: "default", serviceAccount: tokenFor, subject: `system:serviceaccount:default:${tokenFor}` };
          },
        },
      });
    const garbage = new Uint8Array([1]);
    const rejected = await createCsr({ keyPair: await generateKeyPair(), identity: "db.default.serviceaccount.identity.meshtls.cluster.local" });
    const unauthenticated = new IdentityError("ERR_TOKEN_SIGNATURE", "token signature does not verify against the trusted JWKS key");
    // Missing fields answer before the issuer is consulted.
    await expect(handler(false, "web")({ identity: "", token: new Uint8Array(), certificateSigningRequest: new Uint8Array() })).rejects.toMatchObject({ code: "ERR_IDENTITY_MISSING" });
    // A malformed or foreign identity answers before the issuer and the token.
    await expect(handler(false, "web")({ identity: "web.example.org", token, certificateSigningRequest: garbage })).rejects.toMatchObject({ code: "ERR_IDENTITY_INVALID" });
    // No issuer: UNAVAILABLE before the token is authenticated.
    await expect(handler(false, "web")({ identity, token, certificateSigningRequest: garbage })).rejects.toMatchObject({ code: "ERR_ISSUER_UNAVAILABLE", message: expect.stringMatching(/issuer expired/) });
    expect(tokenSeen).toHaveLength(0);
    // An unauthenticated caller learns nothing about its CSR, malformed or against policy.
    for (const bad of [garbage, rejected]) {
      await expect(handler(true, unauthenticated)({ identity, token, certificateSigningRequest: bad })).rejects.toMatchObject({ code: "ERR_TOKEN_SIGNATURE" });
    }
    // Nor does a caller authenticated as another ServiceAccount.
    for (const bad of [garbage, rejected]) {
      await expect(handler(true, "db")({ identity, token, certificateSigningRequest: bad })).rejects.toMatchObject({ code: "ERR_IDENTITY_MISMATCH" });
    }
    // Authenticated and authorized: now the CSR is parsed, then checked against the policy.
    await expect(handler(true, "web")({ identity, token, certificateSigningRequest: garbage })).rejects.toMatchObject({ code: "ERR_CSR_INVALID" });
    await expect(handler(true, "web")({ identity, token, certificateSigningRequest: rejected })).rejects.toMatchObject({ code: "ERR_CSR_REJECTED" });
    await expect(handler(true, "web")({ identity, token, certificateSigningRequest: csr })).resolves.toMatchObject({ identity });
  });

  it("refuses a token for another ServiceAccount with ERR_IDENTITY_MISMATCH", async () => {
    const other = new TextEncoder().encode(await signer.mint("default", "db"));
    await expect(certify({ identity, token: other, certificateSigningRequest: csr })).rejects.toMatchObject({ code: "ERR_IDENTITY_MISMATCH" });
  });

  it("refuses an oversized request before parsing anything", async () => {
    await expect(certify({ identity, token: new Uint8Array(70_000), certificateSigningRequest: csr })).rejects.toMatchObject({ code: "ERR_REQUEST_TOO_LARGE" });
  });

  it("answers hostile requests with a coded IdentityError, never a crash", async () => {
    const mutatedCsr = fc.tuple(fc.integer({ min: 0, max: 400 }), fc.integer({ min: 0, max: 255 })).map(([i, b]) => {
      const copy = new Uint8Array(csr);
      copy[i % copy.length] = b;
      return copy;
    });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constant(identity), fc.string({ maxLength: 300 }), fc.constant(`${"a".repeat(64)}.default.serviceaccount.identity.meshtls.cluster.local`)),
        fc.oneof(fc.constant(token), fc.uint8Array({ maxLength: 2000 })),
        fc.oneof(fc.constant(csr), mutatedCsr, fc.uint8Array({ maxLength: 2000 }), fc.uint8Array({ minLength: 1, maxLength: 600 }).map((b) => Uint8Array.of(0x30, 0x82, 0x02, 0x00, ...b))),
        async (id, tok, req) => {
          try {
            await certify({ identity: id, token: tok, certificateSigningRequest: req });
          } catch (error) {
            expect(error).toBeInstanceOf(IdentityError);
            expect((error as IdentityError).code).not.toBe("ERR_ISSUE_FAILED");
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
