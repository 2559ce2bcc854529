import { copyFile, mkdir, readFile, rename, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import type { IdentityClient } from "@meshtls/api";
import { createIssuer, decodeCertificates, exportPrivateKey, importPrivateKey, parseCertificate, pemEncode } from "@meshtls/pki";
import { status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certify, cli, createMaterial, derToPem, identityClient, identityFor, mintToken, openssl, opensslCsr, SERVER_NAME, startIdentity, tempDir } from "./harness.ts";
import type { IdentityProcess } from "./harness.ts";

const identity = identityFor("web");

async function replaceFiles(dir: string, files: Record<string, string | Buffer>): Promise<void> {
  // Write every file first, then rename them in: what rotation tools do.
  for (const [name, content] of Object.entries(files)) await writeFile(path.join(dir, `.${name}.new`), content);
  for (const name of Object.keys(files)) await rename(path.join(dir, `.${name}.new`), path.join(dir, name));
}

async function pemOf(file: string): Promise<Uint8Array> {
  const [first] = decodeCertificates(await readFile(file, "utf8"));
  if (!first) throw new Error(`no certificate in ${file}`);
  return first;
}

describe("issuer rotation without restart", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const procs: IdentityProcess[] = [];
  const clients: IdentityClient[] = [];
  let csr: Buffer;
  let token: string;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("rotate"));
    await createMaterial(dir);
    csr = (await opensslCsr(dir, { san: `DNS:${identity}` })).der;
    token = await mintToken(dir, "default", "web");
    // More issuers under the same anchor, one under another anchor.
    for (const name of ["b", "c"]) {
      await cli(["certs", "issuer", "--ca-cert", path.join(dir, "ca.crt"), "--ca-key", path.join(dir, "ca.key"), "--out", path.join(dir, name)]);
    }
    await cli(["certs", "create", "--out", path.join(dir, "other")]);
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(procs.map((p) => p.stop()));
    await cleanup();
  });

  async function issuedBy(client: IdentityClient): Promise<Uint8Array> {
    const answer = await certify(client, { identity, token: Buffer.from(token), certificateSigningRequest: csr });
    return new Uint8Array(answer.intermediateCertificates[0] ?? []);
  }

  async function eventually(client: IdentityClient, expected: Uint8Array, timeoutMs = 10_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      // Refusals (UNAVAILABLE while no issuer is usable) also mean "not yet".
      const got = await issuedBy(client).catch(() => new Uint8Array());
      if (Buffer.from(got).equals(Buffer.from(expected))) return;
      if (Date.now() > until) throw new Error("the new issuer was not picked up in time");
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Bad candidates, each with the reason the service must give. */
  async function badCandidates(): Promise<{ name: string; rejection: string; reason: RegExp; crt: string; key: string }[]> {
    const anchorKey = (await importPrivateKey(await readFile(path.join(dir, "ca.key"), "utf8"))).privateKey;
    const anchorCert = await pemOf(path.join(dir, "ca.crt"));
    const expired = await createIssuer({ anchor: { certificate: anchorCert, privateKey: anchorKey }, lifetimeMs: 3600_000, now: () => new Date(Date.now() - 48 * 3600_000) });
    // A non-CA certificate under the right anchor, made by openssl.
    const ext = path.join(dir, "leaf.ext");
    await writeFile(ext, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n");
    const leafReq = await opensslCsr(dir, { cn: "not-a-ca", name: "not-a-ca" });
    await writeFile(path.join(dir, "not-a-ca.csr.der"), leafReq.der);
    const signed = await openssl(["x509", "-req", "-inform", "DER", "-in", path.join(dir, "not-a-ca.csr.der"), "-CA", path.join(dir, "ca.crt"), "-CAkey", path.join(dir, "ca.key"), "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", path.join(dir, "not-a-ca.crt")]);
    if (signed.code !== 0) throw new Error(signed.stderr);
    return [
      { name: "an expired issuer", rejection: "expired", reason: /expired at/, crt: pemEncode("CERTIFICATE", expired.certificate), key: (await exportPrivateKey(expired.keyPair.privateKey)) as string },
      { name: "a non-CA", rejection: "not_ca", reason: /is not a CA/, crt: await readFile(path.join(dir, "not-a-ca.crt"), "utf8"), key: await readFile(leafReq.keyFile, "utf8") },
      { name: "an issuer under another anchor", rejection: "untrusted", reason: /does not chain to the trust anchors/, crt: await readFile(path.join(dir, "other", "issuer.crt"), "utf8"), key: await readFile(path.join(dir, "other", "issuer.key"), "utf8") },
      { name: "a mismatched key", rejection: "key_mismatch", reason: /is not the private key of issuer certificate/, crt: await readFile(path.join(dir, "b", "issuer.crt"), "utf8"), key: await readFile(path.join(dir, "c", "issuer.key"), "utf8") },
    ];
  }

  it("file replacement: the next leaf chains to the new issuer; bad replacements keep the old one and say why", async () => {
    const issuerDir = path.join(dir, "live");
    await mkdir(issuerDir);
    await copyFile(path.join(dir, "issuer.crt"), path.join(issuerDir, "issuer.crt"));
    await copyFile(path.join(dir, "issuer.key"), path.join(issuerDir, "issuer.key"));
    const proc = await startIdentity({ dir, issuerDir, args: ["--issuer-poll-interval", "500ms"] });
    procs.push(proc);
    const client = await identityClient(dir, proc.grpcAddress);
    clients.push(client);
    expect(Buffer.from(await issuedBy(client)).equals(Buffer.from(await pemOf(path.join(dir, "issuer.crt"))))).toBe(true);

    const b = await pemOf(path.join(dir, "b", "issuer.crt"));
    await replaceFiles(issuerDir, { "issuer.crt": await readFile(path.join(dir, "b", "issuer.crt")), "issuer.key": await readFile(path.join(dir, "b", "issuer.key")) });
    await eventually(client, b);
    // The leaf verifies under the anchor with the new intermediate (openssl).
    const answer = await certify(client, { identity, token: Buffer.from(token), certificateSigningRequest: csr });
    await writeFile(path.join(dir, "rot-leaf.pem"), derToPem(answer.leafCertificate));
    await writeFile(path.join(dir, "rot-chain.pem"), answer.intermediateCertificates.map((c) => derToPem(c)).join(""));
    const verify = await openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", path.join(dir, "ca.crt"), "-untrusted", path.join(dir, "rot-chain.pem"), path.join(dir, "rot-leaf.pem")]);
    expect(verify.stdout).toMatch(/rot-leaf\.pem: OK/);
    // The service re-issued its own TLS certificate from the new issuer; a new connection verifies it.
    await proc.waitForLog((l) => l["msg"] === "serving certificate issued" && String(l["issuer"]).includes("identity.meshtls.cluster.local") && proc.logs.filter((x) => x["msg"] === "serving certificate issued").length >= 2);
    const fresh = await identityClient(dir, proc.grpcAddress);
    clients.push(fresh);
    expect(Buffer.from(await issuedBy(fresh)).equals(Buffer.from(b))).toBe(true);
    // What the service presents now: its own leaf, then issuer B.
    const shown = await openssl(["s_client", "-connect", proc.grpcAddress, "-servername", SERVER_NAME, "-alpn", "h2", "-showcerts", "-CAfile", path.join(dir, "ca.crt"), "-verify_return_error"]);
    const presented = decodeCertificates(shown.stdout.replace(/^(?!-----|[A-Za-z0-9+/=]+$).*$/gm, ""));
    expect(presented.length).toBe(2);
    expect(Buffer.from(presented[1]!).equals(Buffer.from(b))).toBe(true);
    expect(shown.stdout).toMatch(/Verify return code: 0 \(ok\)/);

    for (const bad of await badCandidates()) {
      const before = proc.logs.length;
      await replaceFiles(issuerDir, { "issuer.crt": bad.crt, "issuer.key": bad.key });
      const line = await proc.waitForLog((l) => proc.logs.indexOf(l) >= before && l["msg"] === "issuer replacement refused; keeping the current issuer" && l["rejection"] === bad.rejection);
      expect(String(line["reason"]), bad.name).toMatch(bad.reason);
      expect(Buffer.from(await issuedBy(client)).equals(Buffer.from(b)), bad.name).toBe(true);
    }
    const metrics = await (await fetch(`${proc.adminUrl}/metrics`)).text();
    for (const reason of ["expired", "not_ca", "untrusted", "key_mismatch"]) {
      expect(metrics).toMatch(new RegExp(`identity_issuer_rejected_total\\{reason="${reason}"\\} [1-9]`));
    }
    expect((await fetch(`${proc.adminUrl}/ready`)).status).toBe(200);
  });

  it("Kubernetes ..data symlink swap: picked up; a bad swap is refused", async () => {
    const k8s = path.join(dir, "secret");
    const generation = async (name: string, crt: string | Buffer, key: string | Buffer) => {
      await mkdir(path.join(k8s, name), { recursive: true });
      await writeFile(path.join(k8s, name, "tls.crt"), crt);
      await writeFile(path.join(k8s, name, "tls.key"), key);
    };
    await generation("..2026_11_28_a", await readFile(path.join(dir, "issuer.crt")), await readFile(path.join(dir, "issuer.key")));
    await symlink("..2026_11_28_a", path.join(k8s, "..data"));
    await symlink("..data/tls.crt", path.join(k8s, "tls.crt"));
    await symlink("..data/tls.key", path.join(k8s, "tls.key"));
    const proc = await startIdentity({ dir, issuerDir: k8s, args: ["--issuer-poll-interval", "500ms"] });
    procs.push(proc);
    const client = await identityClient(dir, proc.grpcAddress);
    clients.push(client);

    const swap = async (name: string) => {
      await symlink(name, path.join(k8s, "..data_tmp"));
      await rename(path.join(k8s, "..data_tmp"), path.join(k8s, "..data"));
    };
    await generation("..2026_11_28_b", await readFile(path.join(dir, "c", "issuer.crt")), await readFile(path.join(dir, "c", "issuer.key")));
    await swap("..2026_11_28_b");
    const c = await pemOf(path.join(dir, "c", "issuer.crt"));
    await eventually(client, c);

    await generation("..2026_11_28_c", await readFile(path.join(dir, "b", "issuer.crt")), await readFile(path.join(dir, "c", "issuer.key")));
    await swap("..2026_11_28_c");
    const line = await proc.waitForLog((l) => l["msg"] === "issuer replacement refused; keeping the current issuer");
    expect(line).toMatchObject({ rejection: "key_mismatch" });
    expect(Buffer.from(await issuedBy(client)).equals(Buffer.from(c))).toBe(true);
  });

  it("an issuer that expires makes Certify UNAVAILABLE (and /ready 503) until a good one arrives", async () => {
    const issuerDir = path.join(dir, "expiring");
    await mkdir(issuerDir);
    const anchorKey = (await importPrivateKey(await readFile(path.join(dir, "ca.key"), "utf8"))).privateKey;
    const anchorCert = await pemOf(path.join(dir, "ca.crt"));
    const short = await createIssuer({ anchor: { certificate: anchorCert, privateKey: anchorKey }, lifetimeMs: 4000 });
    await writeFile(path.join(issuerDir, "issuer.crt"), pemEncode("CERTIFICATE", short.certificate));
    await writeFile(path.join(issuerDir, "issuer.key"), (await exportPrivateKey(short.keyPair.privateKey)) as string);
    // Plaintext: a TLS certificate from this issuer would expire with it and hide the answer.
    const proc = await startIdentity({ dir, issuerDir, args: ["--insecure-plaintext", "--issuer-poll-interval", "500ms"] });
    procs.push(proc);
    const client = await identityClient(dir, proc.grpcAddress, { plaintext: true });
    clients.push(client);
    await issuedBy(client);
    const wait = parseCertificate(short.certificate).notAfter.getTime() - Date.now();
    await new Promise((r) => setTimeout(r, Math.max(0, wait) + 200));
    const error = (await issuedBy(client).catch((e: unknown) => e)) as ServiceError;
    expect(error.code).toBe(status.UNAVAILABLE);
    expect(error.details).toMatch(/no issuer to sign with: issuer .* expired at .*; rotate the issuer/);
    expect((await fetch(`${proc.adminUrl}/ready`)).status).toBe(503);
    await replaceFiles(issuerDir, { "issuer.crt": await readFile(path.join(dir, "b", "issuer.crt")), "issuer.key": await readFile(path.join(dir, "b", "issuer.key")) });
    await eventually(client, await pemOf(path.join(dir, "b", "issuer.crt")));
    expect((await fetch(`${proc.adminUrl}/ready`)).status).toBe(200);
  });
});
