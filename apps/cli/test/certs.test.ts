import { readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  decodeCertificates,
  generateKeyPair,
  identityName,
  importPrivateKey,
  issueLeaf,
  pemEncode,
  spiffeId,
} from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCerts } from "../src/commands/certs-create.ts";
import { createMemoryOutput } from "../src/output.ts";
import { makeTempDir, runCli, runOpenssl } from "./helpers.ts";

let dir: string;
let cleanup: () => Promise<void>;
let certsDir: string;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
  certsDir = path.join(dir, "certs");
  const result = await runCli(["certs", "create", "--out", certsDir]);
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
});
afterAll(async () => {
  await cleanup();
});

const FILES = ["ca.crt", "ca.key", "issuer.crt", "issuer.key"];

/** Issues a leaf for web.default from an issuer folder, with pki, as the identity service would. */
async function issueTestLeaf(folder: string, trustDomain = "cluster.local"): Promise<string> {
  const issuerCert = decodeCertificates(await readFile(path.join(folder, "issuer.crt"), "utf8"))[0]!;
  const issuerKey = await importPrivateKey(await readFile(path.join(folder, "issuer.key"), "utf8"));
  const workload = await generateKeyPair();
  const identity = identityName({ serviceAccount: "web", namespace: "default", trustDomain });
  const leaf = await issueLeaf({
    issuer: { certificate: issuerCert, privateKey: issuerKey.privateKey },
    publicKey: workload.publicKey,
    identity,
    spiffeId: spiffeId({ trustDomain, namespace: "default", serviceAccount: "web" }),
  });
  const file = path.join(folder, `leaf-${Math.random().toString(16).slice(2)}.crt`);
  await writeFile(file, pemEncode("CERTIFICATE", leaf));
  return file;
}

describe("meshtls certs create", () => {
  it("writes PEM files, keys PKCS#8 with mode 0600 and certificates 0644", async () => {
    for (const name of FILES) {
      const file = path.join(certsDir, name);
      const mode = (await stat(file)).mode & 0o777;
      const text = await readFile(file, "utf8");
      if (name.endsWith(".key")) {
        expect(mode, name).toBe(0o600);
        expect(text).toMatch(/^-----BEGIN PRIVATE KEY-----\n[\s\S]+-----END PRIVATE KEY-----\n$/);
        const pkey = await runOpenssl(["pkey", "-in", file, "-noout", "-text"]);
        expect(pkey.code, pkey.stderr).toBe(0);
        expect(pkey.stdout).toMatch(/prime256v1|P-256/);
      } else {
        expect(mode, name).toBe(0o644);
        expect(text).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
      }
    }
  });

  it("each key matches its certificate (openssl pkey -pubout vs x509 -pubkey)", async () => {
    for (const base of ["ca", "issuer"]) {
      const fromKey = await runOpenssl(["pkey", "-in", path.join(certsDir, `${base}.key`), "-pubout"]);
      const fromCert = await runOpenssl(["x509", "-in", path.join(certsDir, `${base}.crt`), "-noout", "-pubkey"]);
      expect(fromKey.code).toBe(0);
      expect(fromKey.stdout).toBe(fromCert.stdout);
    }
  });

  it("openssl x509 -text shows the anchor and issuer profiles", async () => {
    const ca = await runOpenssl(["x509", "-in", path.join(certsDir, "ca.crt"), "-noout", "-text"]);
    expect(ca.code).toBe(0);
    expect(ca.stdout).toMatch(/Subject: CN ?= ?root\.meshtls\.cluster\.local/);
    expect(ca.stdout).toMatch(/Issuer: CN ?= ?root\.meshtls\.cluster\.local/);
    expect(ca.stdout).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE/);
    expect(ca.stdout).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(ca.stdout).toMatch(/ASN1 OID: prime256v1/);
    expect(ca.stdout).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);

    const issuer = await runOpenssl(["x509", "-in", path.join(certsDir, "issuer.crt"), "-noout", "-text"]);
    expect(issuer.stdout).toMatch(/Subject: CN ?= ?identity\.meshtls\.cluster\.local/);
    expect(issuer.stdout).toMatch(/Issuer: CN ?= ?root\.meshtls\.cluster\.local/);
    expect(issuer.stdout).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(issuer.stdout).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);

    // Default lifetimes: anchor 10 years (87600 h), issuer 1 year (8760 h).
    const days = async (file: string): Promise<number> => {
      const text = (await runOpenssl(["x509", "-in", file, "-noout", "-startdate", "-enddate"])).stdout;
      const start = Date.parse(/notBefore=(.*)/.exec(text)![1]!);
      const end = Date.parse(/notAfter=(.*)/.exec(text)![1]!);
      return (end - start) / 86_400_000;
    };
    expect(await days(path.join(certsDir, "ca.crt"))).toBeCloseTo(3650, 0);
    expect(await days(path.join(certsDir, "issuer.crt"))).toBeCloseTo(365, 0);
  });

  it("openssl verify -x509_strict accepts anchor -> issuer -> pki leaf for sslserver and sslclient", async () => {
    const issuerOnly = await runOpenssl(["verify", "-x509_strict", "-CAfile", path.join(certsDir, "ca.crt"), path.join(certsDir, "issuer.crt")]);
    expect(issuerOnly.code, issuerOnly.stderr + issuerOnly.stdout).toBe(0);
    const leaf = await issueTestLeaf(certsDir);
    for (const purpose of ["sslserver", "sslclient"]) {
      const verify = await runOpenssl([
        "verify", "-x509_strict", "-purpose", purpose,
        "-CAfile", path.join(certsDir, "ca.crt"), "-untrusted", path.join(certsDir, "issuer.crt"), leaf,
      ]);
      expect(verify.code, verify.stderr + verify.stdout).toBe(0);
      expect(verify.stdout).toMatch(/: OK/);
    }
  });

  it("refuses to overwrite without --force, leaving every file unchanged; --force replaces all four", async () => {
    const before = await Promise.all(FILES.map((name) => readFile(path.join(certsDir, name), "utf8")));
    const refused = await runCli(["certs", "create", "--out", certsDir]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^meshtls: refusing to overwrite .*ca\.crt.*ca\.key.*issuer\.crt.*issuer\.key \(use --force to replace\)\n$/);
    expect(refused.stdout).toBe("");
    const after = await Promise.all(FILES.map((name) => readFile(path.join(certsDir, name), "utf8")));
    expect(after).toEqual(before);

    // One existing file is enough to refuse, and nothing else is written.
    const partial = path.join(dir, "partial");
    await runCli(["token", "keygen", "--out", partial]); // creates the folder
    await writeFile(path.join(partial, "issuer.key"), "keep me");
    const refusedPartial = await runCli(["certs", "create", "--out", partial]);
    expect(refusedPartial.code).toBe(1);
    await expect(stat(path.join(partial, "ca.crt"))).rejects.toMatchObject({ code: "ENOENT" });
    expect(await readFile(path.join(partial, "issuer.key"), "utf8")).toBe("keep me");

    const forcedDir = path.join(dir, "forced");
    expect((await runCli(["certs", "create", "--out", forcedDir])).code).toBe(0);
    const old = await readFile(path.join(forcedDir, "ca.crt"), "utf8");
    const forced = await runCli(["certs", "create", "--out", forcedDir, "--force"]);
    expect(forced.code).toBe(0);
    expect(await readFile(path.join(forcedDir, "ca.crt"), "utf8")).not.toBe(old);
    expect((await stat(path.join(forcedDir, "ca.key"))).mode & 0o777).toBe(0o600);
  });

  it("says the issuer was clamped only when it was, however long issuance takes", async () => {
    // A clock that moves 5 s per reading: the issuer (1 year) is not clamped by the anchor (10 years).
    let t = Date.parse("2026-01-01T00:00:00Z");
    const output = createMemoryOutput();
    await createCerts({ outDir: path.join(dir, "slow-clock"), now: () => new Date((t += 5000)) }, output);
    expect(output.stderr.join("\n")).not.toMatch(/clamped/);
  });

  it("takes the trust domain, control namespace and lifetimes from flags, clamping the issuer to the anchor", async () => {
    const out = path.join(dir, "custom");
    const result = await runCli([
      "certs", "create", "--out", out, "--trust-domain", "example.org", "--control-namespace", "mesh-system",
      "--anchor-lifetime", "2d", "--issuer-lifetime", "72h",
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/clamped/);
    const ca = (await runOpenssl(["x509", "-in", path.join(out, "ca.crt"), "-noout", "-subject", "-enddate"])).stdout;
    const issuer = (await runOpenssl(["x509", "-in", path.join(out, "issuer.crt"), "-noout", "-subject", "-enddate"])).stdout;
    expect(ca).toMatch(/CN ?= ?root\.mesh-system\.example\.org/);
    expect(issuer).toMatch(/CN ?= ?identity\.mesh-system\.example\.org/);
    const end = (text: string): number => Date.parse(/notAfter=(.*)/.exec(text)![1]!);
    expect(Math.abs(end(ca) - Date.now() - 2 * 86_400_000)).toBeLessThan(120_000);
    expect(end(issuer)).toBeLessThanOrEqual(end(ca));
    const leaf = await issueTestLeaf(out, "example.org");
    const verify = await runOpenssl(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", path.join(out, "ca.crt"), "-untrusted", path.join(out, "issuer.crt"), leaf]);
    expect(verify.code, verify.stderr).toBe(0);
  });

  it("rejects bad names and lifetimes with exit 2", async () => {
    const cases: [string[], RegExp][] = [
      [["--trust-domain", "Bad_Domain"], /--trust-domain "Bad_Domain" is not a DNS-1123 subdomain/],
      [["--control-namespace", "a.b"], /--control-namespace "a.b" is not a DNS-1123 label/],
      [["--anchor-lifetime", "10"], /--anchor-lifetime: "10" is not a duration/],
      [["--issuer-lifetime", "0s"], /--issuer-lifetime must be at least 1m/],
    ];
    for (const [flags, pattern] of cases) {
      const result = await runCli(["certs", "create", "--out", path.join(dir, "never"), ...flags]);
      expect(result.code, flags.join(" ")).toBe(2);
      expect(result.stderr).toMatch(pattern);
    }
    await expect(stat(path.join(dir, "never"))).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("meshtls certs issuer", () => {
  it("makes a new issuer under the existing anchor that openssl verifies, with a leaf under it", async () => {
    const out = path.join(dir, "rotated");
    const result = await runCli([
      "certs", "issuer", "--ca-cert", path.join(certsDir, "ca.crt"), "--ca-key", path.join(certsDir, "ca.key"),
      "--out", out, "--issuer-lifetime", "720h",
    ]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect((await stat(path.join(out, "issuer.key"))).mode & 0o777).toBe(0o600);
    const old = await readFile(path.join(certsDir, "issuer.crt"), "utf8");
    expect(await readFile(path.join(out, "issuer.crt"), "utf8")).not.toBe(old);
    const leaf = await issueTestLeaf(out);
    for (const purpose of ["sslserver", "sslclient"]) {
      const verify = await runOpenssl(["verify", "-x509_strict", "-purpose", purpose, "-CAfile", path.join(certsDir, "ca.crt"), "-untrusted", path.join(out, "issuer.crt"), leaf]);
      expect(verify.code, verify.stderr).toBe(0);
    }
    const refused = await runCli(["certs", "issuer", "--ca-cert", path.join(certsDir, "ca.crt"), "--ca-key", path.join(certsDir, "ca.key"), "--out", out]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/refusing to overwrite/);
  });

  it("accepts an openssl-made anchor with a SEC1 'EC PRIVATE KEY'", async () => {
    const out = path.join(dir, "openssl-anchor");
    const key = path.join(dir, "openssl-ca.key");
    const cert = path.join(dir, "openssl-ca.crt");
    expect((await runOpenssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key])).code).toBe(0);
    expect(await readFile(key, "utf8")).toMatch(/BEGIN EC PRIVATE KEY/);
    const req = await runOpenssl([
      "req", "-x509", "-new", "-key", key, "-subj", "/CN=root.example", "-days", "30", "-out", cert,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    expect(req.code, req.stderr).toBe(0);
    const result = await runCli(["certs", "issuer", "--ca-cert", cert, "--ca-key", key, "--out", out]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/clamped/); // 1 year requested, the anchor lives 30 days
    const verify = await runOpenssl(["verify", "-x509_strict", "-CAfile", cert, path.join(out, "issuer.crt")]);
    expect(verify.code, verify.stderr).toBe(0);
  });

  it("refuses a key that does not match, a non-CA certificate, a pathlen-0 CA and unreadable input", async () => {
    const other = path.join(dir, "other");
    expect((await runCli(["certs", "create", "--out", other])).code).toBe(0);
    const leaf = await issueTestLeaf(certsDir);
    const cases: [string, string, RegExp][] = [
      [path.join(certsDir, "ca.crt"), path.join(other, "ca.key"), /ca\.key is not the private key of .*ca\.crt \(CN=root\.meshtls\.cluster\.local \S+ [0-9a-f]{8}\)/],
      [leaf, path.join(certsDir, "ca.key"), /is not a CA certificate/],
      [path.join(certsDir, "issuer.crt"), path.join(certsDir, "issuer.key"), /path length 0/],
      [path.join(certsDir, "ca.crt"), path.join(certsDir, "ca.crt"), /CA key .*ca\.crt is not a usable private key/],
      [path.join(certsDir, "ca.key"), path.join(certsDir, "ca.key"), /CA certificate .*ca\.key (contains no certificate|is not a PEM or DER certificate)/],
      [path.join(dir, "missing.crt"), path.join(certsDir, "ca.key"), /cannot read CA certificate .*missing\.crt: no such file or directory/],
    ];
    for (const [cert, key, pattern] of cases) {
      const out = path.join(dir, "never-issuer");
      const result = await runCli(["certs", "issuer", "--ca-cert", cert, "--ca-key", key, "--out", out]);
      expect(result.code, `${cert} ${key}: ${result.stderr}`).toBe(1);
      expect(result.stderr).toMatch(pattern);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      await expect(stat(out)).rejects.toMatchObject({ code: "ENOENT" });
    }
  });
});
