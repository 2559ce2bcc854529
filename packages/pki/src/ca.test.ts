import { readFile } from "node:fs/promises";
import { connect, createServer } from "node:tls";
import type { AddressInfo } from "node:net";
import type { CryptoKeyPair } from "./webcrypto.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certificateMatchesKey, createIssuer, createTrustAnchor, issueLeaf, prepareIssuer } from "./ca.ts";
import { parseCertificate } from "./certificate.ts";
import { createCsr, parseCsr } from "./csr.ts";
import { PkiError } from "./errors.ts";
import { importPrivateKey } from "./key-import.ts";
import { exportPrivateKey, generateKeyPair } from "./keys.ts";
import { identityName, spiffeIdForIdentity } from "./names.ts";
import { decodeCertificates, pemEncode, toDer } from "./pem.ts";
import { openssl, tempDir } from "./test-helpers.ts";

const identity = identityName({ serviceAccount: "web", namespace: "default" });
const spiffe = spiffeIdForIdentity(identity, {});
const NOW = new Date("2026-01-01T00:00:00Z");
const now = () => NOW;
const pemCert = (der: Uint8Array) => pemEncode("CERTIFICATE", der);

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    return (err as PkiError).code;
  }
  return "no error";
}

describe("certificate authority", () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let anchor: Awaited<ReturnType<typeof createTrustAnchor>>;
  let issuer: Awaited<ReturnType<typeof createIssuer>>;
  let leaf: Uint8Array;
  let leafKey: CryptoKeyPair;
  let csr: Uint8Array;

  beforeAll(async () => {
    tmp = await tempDir();
    anchor = await createTrustAnchor({});
    issuer = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey } });
    leafKey = await generateKeyPair();
    csr = await createCsr({ keyPair: leafKey, identity, spiffeId: spiffe });
    const summary = await parseCsr(csr);
    expect(summary.signatureValid).toBe(true);
    leaf = await issueLeaf({
      issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey },
      publicKey: summary.publicKey.spki,
      identity,
      spiffeId: spiffe,
    });
    await tmp.write("ca.pem", pemCert(anchor.certificate));
    await tmp.write("issuer.pem", pemCert(issuer.certificate));
    await tmp.write("leaf.pem", pemCert(leaf));
    await tmp.write("leaf.csr", pemEncode("CERTIFICATE REQUEST", csr));
  });
  afterAll(async () => {
    await tmp.cleanup();
  });

  it.each(["sslserver", "sslclient"])("openssl verify -x509_strict -purpose %s accepts anchor → issuer → leaf", async (purpose) => {
    const r = await openssl(["verify", "-x509_strict", "-purpose", purpose, "-CAfile", "ca.pem", "-untrusted", "issuer.pem", "leaf.pem"], { cwd: tmp.dir });
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("leaf.pem: OK");
    expect(r.code).toBe(0);
  });

  it("openssl verify checks the SAN: -verify_hostname and a wrong name", async () => {
    const ok = await openssl(["verify", "-x509_strict", "-CAfile", "ca.pem", "-untrusted", "issuer.pem", "-verify_hostname", identity, "leaf.pem"], { cwd: tmp.dir });
    expect(ok.code).toBe(0);
    const bad = await openssl(["verify", "-x509_strict", "-CAfile", "ca.pem", "-untrusted", "issuer.pem", "-verify_hostname", "other.example", "leaf.pem"], { cwd: tmp.dir });
    expect(bad.code).not.toBe(0);
  });

  it("openssl req -verify accepts our CSR and shows its SANs", async () => {
    const r = await openssl(["req", "-verify", "-noout", "-text", "-in", "leaf.csr"], { cwd: tmp.dir });
    expect(r.code).toBe(0);
    expect(r.stderr + r.stdout).toMatch(/verify OK/);
    expect(r.stdout).toContain(`DNS:${identity}, URI:${spiffe}`);
    expect(r.stdout).toContain(`Subject: CN = ${identity}`);
    expect(r.stdout).toContain("ASN1 OID: prime256v1");
  });

  it("openssl x509 -text shows the expected fields", async () => {
    const root = (await openssl(["x509", "-noout", "-text", "-in", "ca.pem"], { cwd: tmp.dir })).stdout;
    expect(root).toContain("Subject: CN = root.meshtls.cluster.local");
    expect(root).toMatch(/Basic Constraints: critical\s+CA:TRUE\n/);
    expect(root).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    const mid = (await openssl(["x509", "-noout", "-text", "-in", "issuer.pem"], { cwd: tmp.dir })).stdout;
    expect(mid).toContain("Subject: CN = identity.meshtls.cluster.local");
    expect(mid).toContain("Issuer: CN = root.meshtls.cluster.local");
    expect(mid).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(mid).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(mid).toContain("Authority Key Identifier");
    const text = (await openssl(["x509", "-noout", "-text", "-in", "leaf.pem"], { cwd: tmp.dir })).stdout;
    expect(text).toContain("Version: 3 (0x2)");
    expect(text).toContain("Signature Algorithm: ecdsa-with-SHA256");
    expect(text).toContain(`Subject: CN = ${identity}`);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(text).toMatch(/Extended Key Usage: \s+TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toContain(`DNS:${identity}, URI:${spiffe}`);
    expect(text).toContain("NIST CURVE: P-256");
  });

  it("summarises the certificates it made", () => {
    const s = parseCertificate(leaf);
    expect(s.subject.commonName).toBe(identity);
    expect(s.issuer.commonName).toBe("identity.meshtls.cluster.local");
    expect(s.san).toEqual({ dns: [identity], uri: [spiffe], ip: [], email: [] });
    expect(s.ca).toBe(false);
    expect(s.keyUsage).toEqual(["digitalSignature", "keyEncipherment"]);
    expect(s.extKeyUsage).toEqual(["serverAuth", "clientAuth"]);
    expect(s.publicKey).toEqual({ algorithm: "ECDSA", curve: "P-256", namedCurve: true, bits: 256 });
    expect(s.signatureAlgorithm).toBe("ecdsa-with-SHA256");
    expect(s.fingerprintSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(s.selfSigned).toBe(false);
    const mid = parseCertificate(pemCert(issuer.certificate));
    expect(mid).toMatchObject({ ca: true, pathLength: 0, keyUsage: ["keyCertSign", "cRLSign"] });
    expect(parseCertificate(anchor.certificate)).toMatchObject({ ca: true, selfSigned: true });
    expect(parseCertificate(anchor.certificate).pathLength).toBeUndefined();
  });

  it("agrees with openssl on the fingerprint and serial", async () => {
    const fp = (await openssl(["x509", "-noout", "-fingerprint", "-sha256", "-serial", "-in", "leaf.pem"], { cwd: tmp.dir })).stdout;
    const s = parseCertificate(leaf);
    expect(fp).toContain(s.fingerprintSha256.toUpperCase().replace(/(..)(?!$)/g, "$1:"));
    expect(fp.toLowerCase()).toContain(`serial=${s.serialNumber}`);
  });

  it("applies the lifetime defaults: leaf 24 h ± 20 s skew, issuer 1 year, anchor 10 years", async () => {
    const a = await createTrustAnchor({ now });
    const i = await createIssuer({ anchor: { certificate: a.certificate, privateKey: a.keyPair.privateKey }, now });
    const l = await issueLeaf({ issuer: { certificate: i.certificate, privateKey: i.keyPair.privateKey }, publicKey: leafKey.publicKey, identity, now });
    const [as, is, ls] = [a.certificate, i.certificate, l].map((d) => parseCertificate(d));
    expect(as!.notAfter.getTime() - NOW.getTime()).toBe(3650 * 86_400_000);
    expect(is!.notAfter.getTime() - NOW.getTime()).toBe(365 * 86_400_000);
    expect(ls!.notBefore.toISOString()).toBe("2025-12-31T23:59:40.000Z");
    expect(ls!.notAfter.toISOString()).toBe("2026-01-02T00:00:20.000Z");
  });

  it("clamps notAfter to the issuer's and to the anchor's", async () => {
    const a = await createTrustAnchor({ now, lifetimeMs: 3_600_000 });
    const i = await createIssuer({ anchor: { certificate: a.certificate, privateKey: a.keyPair.privateKey }, now });
    const l = await issueLeaf({ issuer: { certificate: i.certificate, privateKey: i.keyPair.privateKey }, publicKey: leafKey.publicKey, identity, now });
    expect(parseCertificate(i.certificate).notAfter).toEqual(parseCertificate(a.certificate).notAfter);
    expect(parseCertificate(l).notAfter).toEqual(parseCertificate(a.certificate).notAfter);
    const later = () => new Date(NOW.getTime() + 2 * 3_600_000);
    expect(await code(issueLeaf({ issuer: { certificate: i.certificate, privateKey: i.keyPair.privateKey }, publicKey: leafKey.publicKey, identity, now: later }))).toBe("ERR_ISSUE_INVALID");
  });

  it("puts a long identity in the SAN only, marked critical, with an empty subject", async () => {
    const long = identityName({ serviceAccount: "a".repeat(40), namespace: "b".repeat(40) });
    const l = await issueLeaf({ issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey }, publicKey: leafKey.publicKey, identity: long });
    const s = parseCertificate(l);
    expect(s.subject.text).toBe("");
    expect(s.san.dns).toEqual([long]);
    expect(s.extensions.find((e) => e.oid === "2.5.29.17")?.critical).toBe(true);
    await tmp.write("long.pem", pemCert(l));
    const r = await openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", "ca.pem", "-untrusted", "issuer.pem", "long.pem"], { cwd: tmp.dir });
    expect(r.stdout.trim()).toBe("long.pem: OK");
  });

  it("checks keys and issuers", async () => {
    expect(await certificateMatchesKey(leaf, leafKey.privateKey)).toBe(true);
    expect(await certificateMatchesKey(leaf, issuer.keyPair.privateKey)).toBe(false);
    expect(await code(prepareIssuer({ certificate: issuer.certificate, privateKey: anchor.keyPair.privateKey }))).toBe("ERR_KEY_MISMATCH");
    expect(await code(issueLeaf({ issuer: { certificate: leaf, privateKey: leafKey.privateKey }, publicKey: leafKey.publicKey, identity }))).toBe("ERR_ISSUE_INVALID");
    const prepared = await prepareIssuer({ certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey });
    expect(await code(issueLeaf({ issuer: prepared, publicKey: leafKey.publicKey, identity: "Not A Name" }))).toBe("ERR_NAME_INVALID");
    expect(await code(issueLeaf({ issuer: prepared, publicKey: leafKey.publicKey, identity, spiffeId: "spiffe://x/" }))).toBe("ERR_SPIFFE_ID_INVALID");
    expect(await code(issueLeaf({ issuer: prepared, publicKey: new Uint8Array([0x30, 0]), identity }))).toBe("ERR_KEY_INVALID");
    expect(await code(issueLeaf({ issuer: prepared, publicKey: leafKey.publicKey, identity, serialNumber: new Uint8Array([0x80]) }))).toBe("ERR_ISSUE_INVALID");
    const serial = await issueLeaf({ issuer: prepared, publicKey: leafKey.publicKey, identity, serialNumber: new Uint8Array([1, 2, 3]) });
    expect(parseCertificate(serial).serialNumber).toBe("010203");
  });

  it("reads keys and CSRs made by openssl and issues for them", async () => {
    const r = await openssl(
      ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "os.key", "-out", "os.csr", "-subj", `/CN=${identity}`, "-addext", `subjectAltName=DNS:${identity},URI:${spiffe}`],
      { cwd: tmp.dir },
    );
    expect(r.code).toBe(0);
    const summary = await parseCsr(await readFile(`${tmp.dir}/os.csr`, "utf8"));
    expect(summary).toMatchObject({ version: 0, signatureValid: true, san: { dns: [identity], uri: [spiffe] }, publicKey: { algorithm: "ECDSA", curve: "P-256", namedCurve: true } });
    const l = await issueLeaf({ issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey }, publicKey: summary.publicKey.spki, identity, spiffeId: spiffe });
    const key = await importPrivateKey(await readFile(`${tmp.dir}/os.key`, "utf8"));
    expect(await certificateMatchesKey(l, key.privateKey)).toBe(true);
  });

  it("serves real TLS 1.3 with the issued leaf, verified by node against the anchor", async () => {
    const key = await exportPrivateKey(leafKey.privateKey);
    const server = createServer({ key, cert: pemCert(leaf) + pemCert(issuer.certificate), minVersion: "TLSv1.3" }, (s) => s.end("hi"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const data = await new Promise<string>((resolve, reject) => {
        const c = connect({ host: "127.0.0.1", port, servername: identity, ca: pemCert(anchor.certificate), minVersion: "TLSv1.3" }, () => undefined);
        let got = "";
        c.on("data", (d) => (got += String(d)));
        c.on("end", () => resolve(got));
        c.on("error", reject);
        c.setTimeout(5000, () => reject(new Error("timeout")));
      });
      expect(data).toBe("hi");
    } finally {
      server.close();
    }
  });

  it("round-trips bundles", () => {
    const bundle = pemCert(leaf) + pemCert(issuer.certificate);
    expect(decodeCertificates(bundle)).toEqual([leaf, issuer.certificate]);
    expect(toDer(bundle, "CERTIFICATE")).toEqual(leaf);
  });
});
