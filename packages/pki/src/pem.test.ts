import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { PkiError } from "./errors.ts";
import { decodeCertificates, pemDecode, pemEncode, toDer } from "./pem.ts";
import { vectorPath } from "./test-helpers.ts";

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    return (err as PkiError).code;
  }
  return "no error";
}

describe("pem", () => {
  it("round-trips DER through PEM with 64-character lines", () => {
    const der = new Uint8Array(100).map((_, i) => i);
    der[0] = 0x30;
    const pem = pemEncode("CERTIFICATE", der);
    expect(pem.split("\n")[1]).toHaveLength(64);
    expect(pemDecode(pem)).toEqual([{ label: "CERTIFICATE", der }]);
    expect(toDer(pem, "CERTIFICATE")).toEqual(der);
    expect(toDer(new TextEncoder().encode(pem), "CERTIFICATE")).toEqual(der);
    expect(toDer(der, "CERTIFICATE")).toBe(der);
  });
  it("reads go-spiffe bundles in order, ignoring other blocks", () => {
    const text = readFileSync(vectorPath("x509-svid/good-leaf-and-intermediate.pem"), "utf8");
    expect(decodeCertificates(text)).toHaveLength(2);
    const mixed = readFileSync(vectorPath("x509-svid/good-key-and-cert.pem"), "utf8");
    expect(pemDecode(mixed).map((b) => b.label)).toEqual(["PRIVATE KEY", "CERTIFICATE"]);
    expect(decodeCertificates(mixed)).toHaveLength(1);
  });
  it("rejects the corrupt and non-PEM fixtures with ERR_PEM_INVALID", () => {
    expect(code(() => decodeCertificates(readFileSync(vectorPath("x509-svid/corrupt-cert.pem"), "utf8")))).toMatch(/ERR_PEM_INVALID|ERR_DER_INVALID/);
    expect(code(() => pemDecode(readFileSync(vectorPath("x509-svid/not-pem"), "utf8")))).toBe("ERR_PEM_INVALID");
  });
  it("accepts the NEW CERTIFICATE REQUEST header as a CSR", () => {
    const text = readFileSync(vectorPath("csr/pyca/ec_sha256_old_header.pem"), "utf8");
    expect(toDer(text, "CERTIFICATE REQUEST")[0]).toBe(0x30);
  });
  it.each([
    ["", "ERR_PEM_INVALID"],
    ["-----BEGIN CERTIFICATE-----\nAAAA\n", "ERR_PEM_INVALID"],
    ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END KEY-----\n", "ERR_PEM_INVALID"],
    ["-----BEGIN CERTIFICATE-----\nA$AA\n-----END CERTIFICATE-----\n", "ERR_PEM_INVALID"],
    ["-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n", "ERR_PEM_INVALID"],
    ["-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "ERR_PEM_INVALID"],
    ["-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END X-----\n", "ERR_PEM_INVALID"],
  ])("rejects malformed PEM %#", (text, expected) => {
    expect(code(() => pemDecode(text))).toBe(expected);
  });
  it("rejects a missing label, non-SEQUENCE DER and oversized input", () => {
    const pem = pemEncode("PUBLIC KEY", new Uint8Array([0x30, 0]));
    expect(code(() => toDer(pem, "CERTIFICATE"))).toBe("ERR_PEM_INVALID");
    expect(code(() => toDer(new Uint8Array([0x02, 0x01, 0x00]), "CERTIFICATE"))).toBe("ERR_DER_INVALID");
    expect(code(() => toDer(new Uint8Array(0), "CERTIFICATE"))).toBe("ERR_DER_INVALID");
    expect(code(() => toDer(new Uint8Array(70_000).fill(0x30), "CERTIFICATE"))).toMatch(/ERR_DER_INVALID|ERR_PEM_INVALID/);
    expect(code(() => pemDecode("x".repeat(2 * 1024 * 1024)))).toMatch(/ERR_DER_INVALID|ERR_PEM_INVALID/);
    expect(code(() => pemEncode("bad-\nlabel", new Uint8Array([1])))).toBe("ERR_PEM_INVALID");
  });
});
