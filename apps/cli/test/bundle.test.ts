import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { decodeCertificates, generateKeyPair, importPrivateKey, issueLeaf, pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir, runCli, runOpenssl } from "./helpers.ts";

let dir: string;
let cleanup: () => Promise<void>;
let leaf: string;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
  const certs = path.join(dir, "leaf-certs");
  expect((await runCli(["certs", "create", "--out", certs])).code).toBe(0);
  const issuerKey = await importPrivateKey(await readFile(path.join(certs, "issuer.key"), "utf8"));
  const der = await issueLeaf({
    issuer: { certificate: decodeCertificates(await readFile(path.join(certs, "issuer.crt"), "utf8"))[0]!, privateKey: issuerKey.privateKey },
    publicKey: (await generateKeyPair()).publicKey,
    identity: "web.default.serviceaccount.identity.meshtls.cluster.local",
  });
  leaf = path.join(dir, "leaf.crt");
  await writeFile(leaf, pemEncode("CERTIFICATE", der));
});
afterAll(async () => {
  await cleanup();
});

describe("meshtls certs bundle", () => {
  it("merges, dedupes and refuses non-CA input", async () => {
    const a = path.join(dir, "bundle-a");
    const b = path.join(dir, "bundle-b");
    expect((await runCli(["certs", "create", "--out", a])).code).toBe(0);
    expect((await runCli(["certs", "create", "--out", b])).code).toBe(0);
    const out = path.join(dir, "bundles", "trust.crt");
    const result = await runCli(["certs", "bundle", "--out", out, path.join(a, "ca.crt"), path.join(b, "ca.crt"), path.join(a, "ca.crt")]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/skipped duplicate CN=root\.meshtls\.cluster\.local/);
    expect(result.stdout).toMatch(/with 2 trust anchors/);
    const pem = await readFile(out, "utf8");
    expect(pem.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2);
    expect(pem).toContain((await readFile(path.join(a, "ca.crt"), "utf8")).trim());
    expect(pem).toContain((await readFile(path.join(b, "ca.crt"), "utf8")).trim());
    const verify = await runOpenssl(["verify", "-x509_strict", "-CAfile", out, path.join(b, "issuer.crt")]);
    expect(verify.code, verify.stderr).toBe(0);

    const again = await runCli(["certs", "bundle", "--out", out, path.join(a, "ca.crt")]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/refusing to overwrite/);

    const notCa = await runCli(["certs", "bundle", "--out", path.join(dir, "x.crt"), leaf]);
    expect(notCa.code).toBe(1);
    expect(notCa.stderr).toMatch(/^meshtls: .*leaf\.crt: CN=web\.default\.serviceaccount\.identity\.meshtls\.cluster\.local is not a CA certificate and cannot be a trust anchor\n$/);

    const key = await runCli(["certs", "bundle", "--out", path.join(dir, "x.crt"), path.join(a, "ca.key")]);
    expect(key.code).toBe(1);
    expect(key.stderr.trim().split("\n")).toHaveLength(1);

    const none = await runCli(["certs", "bundle", "--out", path.join(dir, "y.crt")]);
    expect(none.code).toBe(2);
  });
});
