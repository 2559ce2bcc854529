import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  decodeCertificates,
  generateKeyPair,
  importPrivateKey,
  issueLeaf,
  pemEncode,
} from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectFile, type InspectResult } from "../src/commands/inspect.ts";
import { CliError } from "../src/errors.ts";
import { createMemoryOutput } from "../src/output.ts";
import { makeTempDir, runCli, runOpenssl, vectorsDir } from "./helpers.ts";

const IDENTITY = "web.default.serviceaccount.identity.meshtls.cluster.local";
let dir: string;
let cleanup: () => Promise<void>;
let certsDir: string;
let chainFile: string;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
  certsDir = path.join(dir, "certs");
  expect((await runCli(["certs", "create", "--out", certsDir])).code).toBe(0);
  const caPem = await readFile(path.join(certsDir, "ca.crt"), "utf8");
  const issuerPem = await readFile(path.join(certsDir, "issuer.crt"), "utf8");
  const issuerKey = await importPrivateKey(await readFile(path.join(certsDir, "issuer.key"), "utf8"));
  const leaf = await issueLeaf({
    issuer: { certificate: decodeCertificates(issuerPem)[0]!, privateKey: issuerKey.privateKey },
    publicKey: (await generateKeyPair()).publicKey,
    identity: IDENTITY,
    spiffeId: "spiffe://cluster.local/ns/default/sa/web",
  });
  chainFile = path.join(dir, "chain.pem");
  await writeFile(chainFile, pemEncode("CERTIFICATE", leaf) + issuerPem + caPem);
});
afterAll(async () => {
  await cleanup();
});

async function opensslFingerprint(file: string): Promise<string> {
  const out = (await runOpenssl(["x509", "-in", file, "-noout", "-fingerprint", "-sha256"])).stdout;
  return /=([0-9A-F:]+)/.exec(out)![1]!.toLowerCase();
}

describe("meshtls inspect on certificates (process)", () => {
  it("describes the trust anchor in words", async () => {
    const file = path.join(certsDir, "ca.crt");
    const result = await runCli(["inspect", file]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const text = result.stdout;
    expect(text).toMatch(/^ca\.crt: certificate\n/);
    expect(text).toMatch(/Subject: +CN=root\.meshtls\.cluster\.local/);
    expect(text).toMatch(/Issuer: +CN=root\.meshtls\.cluster\.local/);
    expect(text).toMatch(/Valid: .*\(expires in 36(49|50)d/);
    expect(text).toMatch(/CA: +yes/);
    expect(text).toMatch(/Key usage: +.*keyCertSign.*cRLSign/);
    expect(text).toMatch(/Public key: +ECDSA P-256 \(named curve\)/);
    expect(text).toMatch(/Self-signed: +yes/);
    expect(text).toContain(`SHA-256:         ${await opensslFingerprint(file)}`);
    const serial = (await runOpenssl(["x509", "-in", file, "-noout", "-serial"])).stdout.trim().replace(/^serial=/, "");
    expect(text.replace(/:/g, "").toLowerCase()).toContain(serial.toLowerCase().replace(/^0+/, ""));
  });

  it("describes a leaf -> issuer -> anchor chain, each signed by the next, and verifies it", async () => {
    const result = await runCli(["inspect", chainFile]);
    expect(result.code, result.stderr).toBe(0);
    const text = result.stdout;
    expect(text).toMatch(/^chain\.pem: chain of 3 certificates/);
    expect(text).toMatch(/Certificate 1 of 3\n +Subject: +CN=web\.default\.serviceaccount\.identity\.meshtls\.cluster\.local/);
    expect(text).toContain(`DNS:${IDENTITY}, URI:spiffe://cluster.local/ns/default/sa/web`);
    expect(text).toMatch(/Ext key usage: +serverAuth, clientAuth/);
    expect(text).toMatch(/CA: +yes, path length 0/);
    expect(text).toMatch(/Valid: .*\(expires in (23h|1d)/);
    expect(text.match(/Signed by next: +yes/g)).toHaveLength(2);
    expect(text).toMatch(/Chain: verifies to the self-signed certificate at its end/);
  });

  it("prints the chain as JSON", async () => {
    const result = await runCli(["inspect", chainFile, "--json"]);
    expect(result.code).toBe(0);
    const json = JSON.parse(result.stdout) as Extract<InspectResult, { certificates: unknown }>;
    expect(json.kind).toBe("chain");
    expect(json.certificates).toHaveLength(3);
    const [leaf, issuer, anchor] = json.certificates;
    expect(leaf!.san.dns).toEqual([IDENTITY]);
    expect(leaf!.san.uri).toEqual(["spiffe://cluster.local/ns/default/sa/web"]);
    expect(leaf!.ca).toBe(false);
    expect(leaf!.extKeyUsage).toEqual(["serverAuth", "clientAuth"]);
    expect(leaf!.signedByNext).toBe(true);
    expect(leaf!.expiresInSeconds).toBeGreaterThan(86_000);
    expect(issuer!.pathLength).toBe(0);
    expect(issuer!.signedByNext).toBe(true);
    expect(anchor!.selfSigned).toBe(true);
    expect(anchor!.signedByNext).toBeUndefined();
    expect(json.verification).toEqual({ ok: true });
    expect(anchor!.fingerprintSha256).toBe((await opensslFingerprint(path.join(certsDir, "ca.crt"))).replace(/:/g, ""));
  });

  it("says when a certificate is not signed by the next one", async () => {
    const other = path.join(dir, "other");
    expect((await runCli(["certs", "create", "--out", other])).code).toBe(0);
    const mixed = path.join(dir, "mixed.pem");
    await writeFile(mixed, (await readFile(path.join(certsDir, "issuer.crt"), "utf8")) + (await readFile(path.join(other, "ca.crt"), "utf8")));
    const result = await runCli(["inspect", mixed]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Signed by next: +NO: certificate 2 did not sign it/);
    expect(result.stdout).toMatch(/Chain: does NOT verify: .+ \(ERR_CHAIN_[A-Z_]+\)/);
  });

  it("verifies an issuer + anchor bundle (a chain that starts at a CA) under RFC 5280 rules", async () => {
    const bundle = path.join(dir, "issuer-bundle.pem");
    await writeFile(bundle, (await readFile(path.join(certsDir, "issuer.crt"), "utf8")) + (await readFile(path.join(certsDir, "ca.crt"), "utf8")));
    const result = await runCli(["inspect", bundle]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/chain of 2 certificates/);
    expect(result.stdout).toMatch(/Chain: verifies to the self-signed certificate at its end/);
  });

  it("reads DER certificates made by openssl", async () => {
    const der = path.join(dir, "ca.der");
    expect((await runOpenssl(["x509", "-in", path.join(certsDir, "ca.crt"), "-outform", "DER", "-out", der])).code).toBe(0);
    const result = await runCli(["inspect", der]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/Subject: +CN=root\.meshtls\.cluster\.local/);
  });
});

describe("meshtls inspect on CSRs", () => {
  it("describes an openssl req CSR in PEM and DER", async () => {
    const key = path.join(dir, "req.key");
    const pem = path.join(dir, "req.csr");
    const der = path.join(dir, "req.der");
    expect((await runOpenssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key])).code).toBe(0);
    const req = await runOpenssl(["req", "-new", "-key", key, "-subj", `/CN=${IDENTITY}`, "-addext", `subjectAltName=DNS:${IDENTITY}`, "-out", pem]);
    expect(req.code, req.stderr).toBe(0);
    expect((await runOpenssl(["req", "-in", pem, "-outform", "DER", "-out", der])).code).toBe(0);
    for (const file of [pem, der]) {
      const result = await runCli(["inspect", file]);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/certificate signing request/);
      expect(result.stdout).toMatch(new RegExp(`Subject: +CN=${IDENTITY.replace(/\./g, "\\.")}`));
      expect(result.stdout).toContain(`SANs:            DNS:${IDENTITY}`);
      expect(result.stdout).toMatch(/Public key: +ECDSA P-256 \(named curve\)/);
      expect(result.stdout).toMatch(/Signature: +ecdsa-with-SHA256, valid/);
      expect(result.stdout).toMatch(/Mesh identity: +acceptable for web\.default/);
    }
    const json = JSON.parse((await runCli(["inspect", der, "--json"])).stdout) as Extract<InspectResult, { kind: "csr" }>;
    expect(json.kind).toBe("csr");
    expect(json.csr.san.dns).toEqual([IDENTITY]);
    expect(json.csr.signatureValid).toBe(true);
    expect(json.csr.publicKey).toMatchObject({ algorithm: "ECDSA", curve: "P-256", namedCurve: true });
    expect(json.csr.meshProblems).toEqual([]);
  });

  const vector = (...parts: string[]): string => path.join(vectorsDir, "csr", ...parts);

  it("describes the pyca P-384 CSR (PEM, and the old NEW CERTIFICATE REQUEST header) as refused by the mesh", async () => {
    for (const name of ["ec_sha256.pem", "ec_sha256_old_header.pem"]) {
      const result = await runCli(["inspect", vector("pyca", name)]);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/Public key: +ECDSA P-384/);
      expect(result.stdout).toMatch(/Signature: +ecdsa-with-SHA256, valid/);
      expect(result.stdout).toMatch(/Mesh identity: +would be refused: CSR key is on curve P-384; meshtls requires P-256/);
    }
  });

  it("describes an RSA CSR with SANs (pyca san_rsa_sha1, golang vectors), text and JSON", async () => {
    const result = await runCli(["inspect", vector("pyca", "san_rsa_sha1.pem")]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/Public key: +RSA \d+ bits/);
    expect(result.stdout).toMatch(/SANs: +DNS:/);
    for (const name of ["csr_v3req_only.pem", "csr_v3req_and_attributes.pem"]) {
      const json = await runCli(["inspect", vector("golang", name), "--json"]);
      expect(json.code, json.stderr).toBe(0);
      const parsed = JSON.parse(json.stdout) as Extract<InspectResult, { kind: "csr" }>;
      expect(parsed.csr.publicKey.algorithm).toBe("RSA");
      expect(parsed.csr.signatureValid).toBe(true);
      expect(parsed.csr.san.dns.length + parsed.csr.san.email.length + parsed.csr.san.ip.length + parsed.csr.san.uri.length).toBeGreaterThan(0);
    }
  });

  it("reports the invalid signature of pyca invalid_signature.pem", async () => {
    const result = await runCli(["inspect", vector("pyca", "invalid_signature.pem")]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/Signature: .*INVALID \(does not verify\)/);
    // The identity service's first refusal of this RSA CSR is its key; the signature line above says it does not verify.
    expect(result.stdout).toMatch(/would be refused: CSR key is \d+-bit RSA; meshtls requires an ECDSA P-256 key/);
    const json = JSON.parse((await runCli(["inspect", vector("pyca", "invalid_signature.pem"), "--json"])).stdout) as Extract<InspectResult, { kind: "csr" }>;
    expect(json.csr.signatureValid).toBe(false);
  });

  it("reports explicit curve parameters (x509-limbo CSRs)", async () => {
    for (const name of ["explicit_curve_leaf.csr", "explicit_curve_ca.csr"]) {
      const result = await runCli(["inspect", vector("x509-limbo", name)]);
      if (result.code === 0) {
        expect(result.stdout).toMatch(/explicit curve parameters/);
      } else {
        expect(result.code).toBe(1);
        expect(result.stderr).toMatch(/^meshtls: .*(explicit|curve)/i);
      }
    }
  });

  it("refuses the pyca bad-version CSR with one line and exit 1", async () => {
    const result = await runCli(["inspect", vector("pyca", "bad-version.pem")]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^meshtls: .*bad-version\.pem: not a valid CSR: .*version/i);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("meshtls inspect on bad input", () => {
  it("exits 1 with one clear line for garbage, empty, truncated, PEM-garbage, keys and missing files", async () => {
    const write = async (name: string, data: string | Uint8Array): Promise<string> => {
      const file = path.join(dir, name);
      await writeFile(file, data);
      return file;
    };
    const caDer = decodeCertificates(await readFile(path.join(certsDir, "ca.crt"), "utf8"))[0]!;
    const cases: [string, RegExp][] = [
      [await write("random.bin", randomBytes(300)), /random\.bin is neither a certificate nor a CSR in PEM or DER/],
      [await write("empty", ""), /empty is neither a certificate nor a CSR/],
      [await write("text.txt", "hello world\n"), /text\.txt is neither a certificate nor a CSR/],
      [await write("truncated.der", caDer.subarray(0, caDer.length - 10)), /truncated\.der is neither a certificate nor a CSR in PEM or DER \(as a certificate: /],
      [await write("bad.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), /bad\.pem: malformed PEM: /],
      [await write("unterminated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n"), /unterminated\.pem: malformed PEM: /],
      [await write("junk-in-pem.pem", pemEncode("CERTIFICATE", randomBytes(64))), /junk-in-pem\.pem \(certificate 1\): not a valid certificate: /],
      [path.join(certsDir, "ca.key"), /ca\.key contains a private key \(PRIVATE KEY\); inspect describes certificates and CSRs only/],
      [path.join(dir, "does-not-exist.pem"), /cannot read file .*does-not-exist\.pem: no such file or directory/],
      [dir, /is not a regular file/],
    ];
    for (const [file, pattern] of cases) {
      const result = await runCli(["inspect", file]);
      expect(result.code, `${file}: ${result.stderr}`).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`^meshtls: .*${pattern.source}`));
      expect(result.stderr.trim().split("\n"), result.stderr).toHaveLength(1);
      expect(result.stdout).toBe("");
    }
  });

  it("in-process: random and mutated inputs (fast-check) give only CliError, never another exception", async () => {
    const caDer = decodeCertificates(await readFile(path.join(certsDir, "ca.crt"), "utf8"))[0]!;
    const chainPem = await readFile(chainFile, "utf8");
    const file = path.join(dir, "fuzz.bin");
    const mutated = fc
      .array(fc.tuple(fc.nat({ max: caDer.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 })
      .map((edits) => {
        const copy = new Uint8Array(caDer);
        for (const [at, value] of edits) copy[at] = value;
        return copy;
      });
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 2048 }),
      mutated,
      mutated.map((der) => new TextEncoder().encode(pemEncode("CERTIFICATE", der))),
      fc.nat({ max: chainPem.length }).map((n) => new TextEncoder().encode(chainPem.slice(0, n))),
      fc.string({ maxLength: 400 }).map((t) => new TextEncoder().encode(`-----BEGIN CERTIFICATE REQUEST-----\n${t}\n-----END CERTIFICATE REQUEST-----\n`)),
    );
    await fc.assert(
      fc.asyncProperty(input, async (data) => {
        await writeFile(file, data);
        try {
          await inspectFile({ file, json: true }, createMemoryOutput());
        } catch (error) {
          expect(error).toBeInstanceOf(CliError);
        }
      }),
      { numRuns: 150 },
    );
  });
});
