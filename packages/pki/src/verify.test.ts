import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIssuer, createTrustAnchor, issueLeaf } from "./ca.ts";
import { generateKeyPair } from "./keys.ts";
import { identityName, spiffeIdForIdentity } from "./names.ts";
import { decodeCertificates, pemEncode } from "./pem.ts";
import { openssl, tempDir, vectorPath } from "./test-helpers.ts";
import { verifyChain } from "./verify.ts";
import type { CertifiedKey } from "./ca.ts";

const identity = identityName({ serviceAccount: "web", namespace: "default" });
const spiffe = spiffeIdForIdentity(identity, {});
const NOW = new Date("2026-03-01T12:00:00Z");
const now = () => NOW;

describe("verifyChain", () => {
  let anchor: CertifiedKey;
  let issuer: CertifiedKey;
  let leaf: Uint8Array;
  beforeAll(async () => {
    anchor = await createTrustAnchor({ now });
    issuer = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey }, now });
    const kp = await generateKeyPair();
    leaf = await issueLeaf({ issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey }, publicKey: kp.publicKey, identity, spiffeId: spiffe, now });
  });

  it("accepts leaf → issuer → anchor for the DNS or URI identity and both purposes", async () => {
    for (const purpose of ["serverAuth", "clientAuth"] as const) {
      const r = await verifyChain({ leaf, intermediates: [issuer.certificate], anchors: [anchor.certificate], now: NOW, expectedName: { dns: identity }, purpose });
      expect(r.ok).toBe(true);
      if (r.ok) expect(r.chain.map((c) => c.subject.commonName)).toEqual([identity, "identity.meshtls.cluster.local", "root.meshtls.cluster.local"]);
    }
    expect((await verifyChain({ leaf, intermediates: [issuer.certificate], anchors: [anchor.certificate], now: NOW, expectedName: { uri: spiffe } })).ok).toBe(true);
    expect((await verifyChain({ leaf, intermediates: [issuer.certificate], anchors: [anchor.certificate], now: NOW, expectedName: { dns: identity.toUpperCase() } })).ok).toBe(true);
  });

  it.each([
    ["name mismatch", { expectedName: { dns: "db.default.serviceaccount.identity.meshtls.cluster.local" } }, "ERR_CHAIN_NAME_MISMATCH"],
    ["URI mismatch", { expectedName: { uri: "spiffe://cluster.local/ns/default/sa/db" } }, "ERR_CHAIN_NAME_MISMATCH"],
    ["expired", { now: new Date(NOW.getTime() + 2 * 86_400_000) }, "ERR_CHAIN_EXPIRED"],
    ["not yet valid", { now: new Date(NOW.getTime() - 60_000) }, "ERR_CHAIN_NOT_YET_VALID"],
    ["missing intermediate", { intermediates: [] }, "ERR_CHAIN_UNKNOWN_ISSUER"],
    ["too deep", { maxDepth: 0 }, "ERR_CHAIN_TOO_DEEP"],
  ] as const)("rejects: %s", async (_what, override, code) => {
    const r = await verifyChain({ leaf, intermediates: [issuer.certificate], anchors: [anchor.certificate], now: NOW, expectedName: { dns: identity }, ...override });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.code).toBe(code);
      expect(r.reason).toMatch(/"/);
    }
  });

  it("reports a bad signature when an impostor issuer has the right name", async () => {
    const other = await createTrustAnchor({ now });
    const impostor = await createIssuer({ anchor: { certificate: other.certificate, privateKey: other.keyPair.privateKey }, now });
    const r = await verifyChain({ leaf, intermediates: [impostor.certificate], anchors: [anchor.certificate], now: NOW });
    expect(r).toMatchObject({ ok: false, code: "ERR_CHAIN_BAD_SIGNATURE" });
    // ...and still finds the real path when both are offered
    expect((await verifyChain({ leaf, intermediates: [impostor.certificate, issuer.certificate], anchors: [anchor.certificate], now: NOW })).ok).toBe(true);
  });

  it("rejects a leaf whose EKU does not allow the purpose", async () => {
    const tmp = await tempDir();
    try {
      // An openssl-made leaf with clientAuth only, signed by our issuer key.
      const { exportPrivateKey } = await import("./keys.ts");
      await tmp.write("issuer.pem", pemEncode("CERTIFICATE", issuer.certificate));
      await tmp.write("issuer.key", await exportPrivateKey(issuer.keyPair.privateKey));
      await tmp.write("ext.cnf", `[v]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:${identity}\n`);
      expect((await openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "l.key", "-out", "l.csr", "-subj", `/CN=${identity}`], { cwd: tmp.dir })).code).toBe(0);
      expect((await openssl(["x509", "-req", "-in", "l.csr", "-CA", "issuer.pem", "-CAkey", "issuer.key", "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-extensions", "v", "-out", "l.pem"], { cwd: tmp.dir })).code).toBe(0);
      const osLeaf = decodeCertificates(readFileSync(`${tmp.dir}/l.pem`, "utf8"))[0]!;
      const base = { leaf: osLeaf, intermediates: [issuer.certificate], anchors: [anchor.certificate], expectedName: { dns: identity } };
      expect((await verifyChain({ ...base, purpose: "clientAuth" })).ok).toBe(true);
      expect(await verifyChain({ ...base, purpose: "serverAuth" })).toMatchObject({ ok: false, code: "ERR_CHAIN_EKU" });
    } finally {
      await tmp.cleanup();
    }
  });

  it("never throws on garbage", async () => {
    expect(await verifyChain({ leaf: new Uint8Array([1, 2, 3]), anchors: [anchor.certificate] })).toMatchObject({ ok: false, code: "ERR_CHAIN_INVALID" });
    expect(await verifyChain({ leaf, anchors: [new Uint8Array([0x30, 0])] })).toMatchObject({ ok: false, code: "ERR_CHAIN_UNKNOWN_ISSUER" });
    expect(await verifyChain(undefined as never)).toMatchObject({ ok: false });
    expect(await verifyChain({ leaf, anchors: [anchor.certificate], now: new Date(Number.NaN) })).toMatchObject({ ok: false, code: "ERR_CHAIN_INVALID" });
  });
});

describe("verifyChain with an openssl-made CA (openssl req -x509 / openssl x509 -req)", () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    tmp = await tempDir();
    const run = async (args: string[]) => expect((await openssl(args, { cwd: tmp.dir })).code).toBe(0);
    await tmp.write("ca.cnf", "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n[int]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:" + identity + ",URI:" + spiffe + "\n");
    await run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=os-root", "-days", "30"]);
    await run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", "int.key", "-out", "int.csr", "-subj", "/CN=os-int"]);
    await run(["x509", "-req", "-in", "int.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "10", "-sha384", "-extfile", "ca.cnf", "-extensions", "int", "-out", "int.pem"]);
    await run(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", `/CN=${identity}`]);
    await run(["x509", "-req", "-in", "leaf.csr", "-CA", "int.pem", "-CAkey", "int.key", "-CAcreateserial", "-days", "2", "-sha256", "-extfile", "ca.cnf", "-extensions", "leaf", "-out", "leaf.pem"]);
  });
  afterAll(async () => {
    await tmp.cleanup();
  });

  it("parses and verifies anchor → P-384 issuer → RSA leaf", async () => {
    const [leaf] = decodeCertificates(readFileSync(`${tmp.dir}/leaf.pem`, "utf8"));
    const [int] = decodeCertificates(readFileSync(`${tmp.dir}/int.pem`, "utf8"));
    const [ca] = decodeCertificates(readFileSync(`${tmp.dir}/ca.pem`, "utf8"));
    const r = await verifyChain({ leaf: leaf!, intermediates: [int!], anchors: [ca!], expectedName: { uri: spiffe }, purpose: "serverAuth" });
    expect(r.ok, r.ok ? "" : r.reason).toBe(true);
    if (r.ok) {
      expect(r.chain[0]).toMatchObject({ publicKey: { algorithm: "RSA", bits: 2048 }, signatureAlgorithm: "ecdsa-with-SHA256" });
      expect(r.chain[1]).toMatchObject({ ca: true, pathLength: 0, publicKey: { curve: "P-384" }, signatureAlgorithm: "ecdsa-with-SHA384" });
      expect(r.chain[2]).toMatchObject({ selfSigned: true, subject: { commonName: "os-root" } });
    }
  });
});

describe("go-spiffe X509-SVID fixtures under the mesh profile", () => {
  const svid = (f: string) => decodeCertificates(readFileSync(vectorPath("x509-svid", f), "utf8"));
  // These fixtures expired long ago: verify at the middle of the leaf's validity window.
  it.each([
    ["wrong-leaf-ca-true.pem", "ERR_CHAIN_NOT_CA"],
    ["wrong-leaf-cert-sign.pem", "ERR_CHAIN_KEY_USAGE"],
    ["wrong-leaf-crl-sign.pem", "ERR_CHAIN_KEY_USAGE"],
    ["wrong-leaf-no-digital-signature.pem", "ERR_CHAIN_KEY_USAGE"],
  ])("%s is rejected with %s", async (file, code) => {
    const [leaf, ...rest] = svid(file);
    const { parseCertificate } = await import("./certificate.ts");
    const when = new Date((parseCertificate(leaf!).notBefore.getTime() + parseCertificate(leaf!).notAfter.getTime()) / 2);
    const r = await verifyChain({ leaf: leaf!, intermediates: rest, anchors: rest.length > 0 ? rest : [leaf!], now: when });
    expect(r).toMatchObject({ ok: false, code });
  });
});
