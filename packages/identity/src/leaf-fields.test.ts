import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createTrustAnchor, generateKeyPair, issueLeaf, toDer } from "@meshtls/pki";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { readLeafFields } from "./leaf-fields.ts";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

function ours(der: Uint8Array) {
  const f = readLeafFields(der);
  return { serial: BigInt(`0x${f.serialNumber}`), notAfter: f.notAfter };
}

function opensslView(der: Uint8Array) {
  const x = new X509Certificate(der);
  return { serial: BigInt(`0x${x.serialNumber}`), notAfter: new Date(x.validTo) };
}

describe("readLeafFields", () => {
  it("agrees with OpenSSL on pki leaves", async () => {
    const anchor = await createTrustAnchor();
    const issuer = { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey };
    const keys = await generateKeyPair();
    for (const lifetimeMs of [10_000, 24 * 3600_000, 40 * 365 * 24 * 3600_000, ...Array.from({ length: 20 }, () => 60_000)]) {
      const leaf = await issueLeaf({ issuer, publicKey: keys.publicKey, identity: "web.default.serviceaccount.identity.meshtls.cluster.local", lifetimeMs });
      expect(ours(leaf)).toEqual(opensslView(leaf));
    }
  });

  it("agrees with OpenSSL on an external certificate (GeneralizedTime, go-spiffe fixture)", () => {
    const pem = readFileSync(path.resolve(repoRoot, "../shared/vectors/x509-svid/good-leaf-only.pem"), "utf8");
    const der = toDer(pem, "CERTIFICATE");
    expect(ours(der)).toEqual(opensslView(der));
  });

  it("never crashes on hostile input: it returns or throws ERR_ISSUE_FAILED", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          readLeafFields(bytes);
        } catch (error) {
          expect((error as { code?: string }).code).toBe("ERR_ISSUE_FAILED");
        }
      }),
    );
  });
});
