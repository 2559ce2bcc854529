import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { createCsr, parseCsr } from "./csr.ts";
import { PkiError } from "./errors.ts";
import { generateKeyPair } from "./keys.ts";
import { vectorPath } from "./test-helpers.ts";

const read = (p: string) => readFileSync(vectorPath("csr", p), "utf8");

async function rejection(input: string | Uint8Array): Promise<PkiError> {
  try {
    await parseCsr(input);
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    return err as PkiError;
  }
  throw new Error("expected parseCsr to reject");
}

describe("CSR vectors (pyca, golang, x509-limbo)", () => {
  it("pyca ec_sha256.pem: valid P-384 request", async () => {
    const s = await parseCsr(read("pyca/ec_sha256.pem"));
    expect(s).toMatchObject({ version: 0, signatureValid: true, signatureAlgorithm: "ecdsa-with-SHA256", publicKey: { algorithm: "ECDSA", curve: "P-384", namedCurve: true } });
    expect(s.subject.commonName).toBe("cryptography.io");
    expect(s.subject.text).toBe("CN=cryptography.io, O=PyCA, C=US, ST=Texas, L=Austin");
  });
  it("pyca ec_sha256_old_header.pem: NEW CERTIFICATE REQUEST header is read", async () => {
    expect(await parseCsr(read("pyca/ec_sha256_old_header.pem"))).toMatchObject({ signatureValid: true, publicKey: { curve: "P-384" } });
  });
  it("pyca san_rsa_sha1.pem: RSA key with two DNS SANs", async () => {
    const s = await parseCsr(read("pyca/san_rsa_sha1.pem"));
    expect(s).toMatchObject({ signatureValid: true, signatureAlgorithm: "sha1WithRSAEncryption", publicKey: { algorithm: "RSA", namedCurve: false, bits: 2048 } });
    expect(s.san).toEqual({ dns: ["cryptography.io", "sub.cryptography.io"], uri: [], ip: [], email: [], other: 0 });
  });
  it("pyca invalid_signature.pem: parsed, signatureValid false", async () => {
    expect(await parseCsr(read("pyca/invalid_signature.pem"))).toMatchObject({ signatureValid: false, publicKey: { algorithm: "RSA" } });
  });
  it("pyca bad-version.pem: ERR_CSR_INVALID naming the version", async () => {
    const e = await rejection(read("pyca/bad-version.pem"));
    expect(e.code).toBe("ERR_CSR_INVALID");
    expect(e.message).toMatch(/version 1 is not supported/);
  });
  it("pyca two_basic_constraints.pem: duplicate extension is ERR_CSR_INVALID", async () => {
    const e = await rejection(read("pyca/two_basic_constraints.pem"));
    expect(e.code).toBe("ERR_CSR_INVALID");
    expect(e.message).toMatch(/2\.5\.29\.19 appears twice/);
  });
  it("pyca freeipa-bad-critical.pem: explicit critical=FALSE is not DER", async () => {
    const e = await rejection(read("pyca/freeipa-bad-critical.pem"));
    expect(e.code).toBe("ERR_CSR_INVALID");
    expect(e.message).toMatch(/critical=FALSE explicitly/);
  });
  it("pyca unsupported_extension_critical.pem: unknown critical extension is listed; its signature does not verify", async () => {
    const s = await parseCsr(read("pyca/unsupported_extension_critical.pem"));
    expect(s.extensions).toEqual([{ oid: "1.2.3.4", critical: true }]);
    expect(s.signatureValid).toBe(false);
  });
  it.each(["golang/csr_v3req_only.pem", "golang/csr_v3req_and_attributes.pem"])("golang %s: RSA with email and DNS SANs", async (f) => {
    const s = await parseCsr(read(f));
    expect(s.signatureValid).toBe(true);
    expect(s.san.dns).toEqual(["test.example.com"]);
    expect(s.san.email).toEqual(["gopher@golang.org"]);
    expect(s.subject.commonName).toBe("Common Name");
  });
  it.each(["x509-limbo/explicit_curve_ca.csr", "x509-limbo/explicit_curve_leaf.csr"])("limbo %s: explicit curve reported as namedCurve false", async (f) => {
    const s = await parseCsr(read(f));
    expect(s.publicKey).toMatchObject({ algorithm: "ECDSA", namedCurve: false, curve: "P-256" });
    expect(s.signatureValid).toBe(true);
  });
});

describe("createCsr", () => {
  it("makes a CSR with DNS SAN, optional URI SAN and CN", async () => {
    const keyPair = await generateKeyPair();
    const s = await parseCsr(await createCsr({ keyPair, identity: "a.b.serviceaccount.identity.meshtls.cluster.local" }));
    expect(s.san).toEqual({ dns: ["a.b.serviceaccount.identity.meshtls.cluster.local"], uri: [], ip: [], email: [], other: 0 });
    expect(s.subject.commonName).toBe("a.b.serviceaccount.identity.meshtls.cluster.local");
    const empty = await parseCsr(await createCsr({ keyPair, identity: "x.y", commonName: "" }));
    expect(empty.subject.text).toBe("");
    expect(empty.extensions).toEqual([{ oid: "2.5.29.17", critical: true }]);
  });
  it("refuses bad identities and SPIFFE IDs", async () => {
    const keyPair = await generateKeyPair();
    await expect(createCsr({ keyPair, identity: "UPPER.case" })).rejects.toMatchObject({ code: "ERR_NAME_INVALID" });
    await expect(createCsr({ keyPair, identity: "a.b", spiffeId: "https://x" })).rejects.toMatchObject({ code: "ERR_SPIFFE_ID_INVALID" });
  });
  it("refuses keys other than an ECDSA P-256 pair", async () => {
    const p256 = await generateKeyPair();
    const p384 = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, true, ["sign", "verify"]);
    const identity = "a.b";
    await expect(createCsr({ keyPair: p384, identity })).rejects.toMatchObject({ code: "ERR_KEY_UNSUPPORTED" });
    await expect(createCsr({ keyPair: { publicKey: p256.publicKey, privateKey: p384.privateKey }, identity })).rejects.toMatchObject({ code: "ERR_KEY_UNSUPPORTED" });
    await expect(createCsr({ keyPair: { publicKey: p256.publicKey, privateKey: p256.publicKey }, identity })).rejects.toMatchObject({ code: "ERR_KEY_INVALID" });
  });
  it("rejects garbage with coded errors", async () => {
    expect((await rejection(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]))).code).toBe("ERR_CSR_INVALID");
    expect((await rejection("not a csr")).code).toBe("ERR_PEM_INVALID");
    expect((await rejection(new Uint8Array([0x30, 0x80]))).code).toMatch(/ERR_CSR_INVALID|ERR_DER_INVALID/);
  });
});
