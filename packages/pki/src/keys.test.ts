import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PkiError } from "./errors.ts";
import { importPrivateKey, importPublicKey } from "./key-import.ts";
import { exportPrivateKey, exportPublicKey, generateKeyPair } from "./keys.ts";
import { pemEncode } from "./pem.ts";
import { openssl, tempDir, vectorPath } from "./test-helpers.ts";

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    return (err as PkiError).code;
  }
  return "no error";
}

describe("keys", () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    tmp = await tempDir();
  });
  afterAll(async () => {
    await tmp.cleanup();
  });

  it("refuses to export a key that is not extractable (the export is node:crypto's, which would not check)", async () => {
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    expect(await code(exportPrivateKey(pair.privateKey))).toBe("ERR_KEY_INVALID");
    const pub = await crypto.subtle.importKey("spki", await crypto.subtle.exportKey("spki", pair.publicKey), { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    expect(await code(exportPublicKey(pub))).toBe("ERR_KEY_INVALID");
  });

  it("generates extractable P-256 pairs that round-trip through PKCS#8 and SPKI, PEM and DER", async () => {
    const pair = await generateKeyPair();
    expect(pair.privateKey.extractable).toBe(true);
    const pem = await exportPrivateKey(pair.privateKey);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const der = await exportPrivateKey(pair.privateKey, { format: "der" });
    const fromPem = await importPrivateKey(pem);
    const fromDer = await importPrivateKey(der);
    const spki = await exportPublicKey(pair.publicKey, { format: "der" });
    expect(await exportPublicKey(fromPem.publicKey, { format: "der" })).toEqual(spki);
    expect(await exportPublicKey(fromDer.publicKey, { format: "der" })).toEqual(spki);
    const pub = await importPublicKey(await exportPublicKey(pair.publicKey));
    expect(await exportPublicKey(pub, { format: "der" })).toEqual(spki);
    // node:crypto (and so node:tls) accepts the exported PEM
    const signature = sign("sha256", Buffer.from("hello"), createPrivateKey(pem));
    expect(verify("sha256", Buffer.from("hello"), createPublicKey(await exportPublicKey(pair.publicKey)), signature)).toBe(true);
  });

  it("imports openssl's SEC1 'EC PRIVATE KEY' (with EC PARAMETERS) and PKCS#8 keys", async () => {
    const sec1Path = `${tmp.dir}/sec1.pem`;
    expect((await openssl(["ecparam", "-name", "prime256v1", "-genkey", "-out", sec1Path])).code).toBe(0);
    const sec1 = await readFile(sec1Path, "utf8");
    expect(sec1).toContain("EC PRIVATE KEY");
    const pair = await importPrivateKey(sec1);
    const expectedPub = (await openssl(["ec", "-in", sec1Path, "-pubout", "-outform", "DER"])).stdout;
    expect(expectedPub.length).toBeGreaterThan(0);
    const pubPem = (await openssl(["ec", "-in", sec1Path, "-pubout"])).stdout;
    expect(await exportPublicKey(pair.publicKey)).toBe(pubPem);
    const pkcs8 = (await openssl(["pkey", "-in", sec1Path])).stdout;
    const again = await importPrivateKey(pkcs8);
    expect(await exportPublicKey(again.publicKey)).toBe(pubPem);
    const sec1Der = Buffer.from(sec1.split("-----BEGIN EC PRIVATE KEY-----")[1]!.split("-----END")[0]!.replace(/\s/g, ""), "base64");
    expect(await exportPublicKey((await importPrivateKey(new Uint8Array(sec1Der))).publicKey)).toBe(pubPem);
  });

  it("imports go-spiffe's PKCS#8 ECDSA key and refuses its RSA key", async () => {
    await importPrivateKey(readFileSync(vectorPath("x509-svid/key-pkcs8-ecdsa.pem"), "utf8"));
    expect(await code(importPrivateKey(readFileSync(vectorPath("x509-svid/key-pkcs8-rsa.pem"), "utf8")))).toBe("ERR_KEY_UNSUPPORTED");
    expect(await code(importPrivateKey(readFileSync(vectorPath("x509-svid/corrupt-key.pem"), "utf8")))).toMatch(/ERR_KEY_INVALID|ERR_PEM_INVALID/);
  });

  it("refuses other curves and algorithms with ERR_KEY_UNSUPPORTED", async () => {
    const p384 = `${tmp.dir}/p384.pem`;
    await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", p384]);
    expect(await code(importPrivateKey(await readFile(p384, "utf8")))).toBe("ERR_KEY_UNSUPPORTED");
    const ed = `${tmp.dir}/ed.pem`;
    await openssl(["genpkey", "-algorithm", "ED25519", "-out", ed]);
    expect(await code(importPrivateKey(await readFile(ed, "utf8")))).toBe("ERR_KEY_UNSUPPORTED");
    const edPub = (await openssl(["pkey", "-in", ed, "-pubout"])).stdout;
    expect(await code(importPublicKey(edPub))).toBe("ERR_KEY_UNSUPPORTED");
    const sec1Explicit = `${tmp.dir}/explicit.pem`;
    await openssl(["ecparam", "-name", "prime256v1", "-genkey", "-param_enc", "explicit", "-noout", "-out", sec1Explicit]);
    expect(await code(importPrivateKey(await readFile(sec1Explicit, "utf8")))).toBe("ERR_KEY_UNSUPPORTED");
  });

  it("rejects garbage with coded errors", async () => {
    expect(await code(importPrivateKey(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00])))).toBe("ERR_KEY_INVALID");
    expect(await code(importPrivateKey("nothing here"))).toBe("ERR_PEM_INVALID");
    expect(await code(importPublicKey(pemEncode("PUBLIC KEY", new Uint8Array([0x30, 0x00]))))).toBe("ERR_KEY_INVALID");
    expect(await code(importPrivateKey(pemEncode("ENCRYPTED PRIVATE KEY", new Uint8Array([0x30, 0x00]))))).toBe("ERR_KEY_UNSUPPORTED");
    const pair = await generateKeyPair();
    expect(await code(exportPrivateKey(pair.publicKey))).toBe("ERR_KEY_INVALID");
  });
});
