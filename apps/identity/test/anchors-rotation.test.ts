// Trust anchor rotation against the built binary, without a restart: the
// anchors file (a Kubernetes ConfigMap layout, swapped through `..data`) goes
// A → A+B → (issuer switched to one under B) → B only; a broken file is
// refused and the bundle in use kept; anchors that no longer cover the issuer
// stop issuance (fail closed) until they do again.
import { mkdir, readFile, rename, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import type { IdentityClient } from "@meshtls/api";
import { decodeCertificates } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certify, cli, createMaterial, derToPem, identityClient, identityFor, mintToken, openssl, opensslCsr, SERVER_NAME, startIdentity, tempDir } from "./harness.ts";
import type { IdentityProcess } from "./harness.ts";

const identity = identityFor("web");

async function firstCert(file: string): Promise<Buffer> {
  const [first] = decodeCertificates(await readFile(file, "utf8"));
  if (!first) throw new Error(`no certificate in ${file}`);
  return Buffer.from(first);
}

describe("trust anchors rotation without restart", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let proc: IdentityProcess | undefined;
  const clients: IdentityClient[] = [];

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("anchors"));
    await createMaterial(dir); // anchor A (ca.crt) and its issuer
    await cli(["certs", "create", "--out", path.join(dir, "b")]); // anchor B and an issuer under it
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await proc?.stop();
    await cleanup();
  });

  it("A → A+B → issuer under B → B only, with the same process; bad files refused; untrusted issuer fails closed", async () => {
    const anchorA = path.join(dir, "ca.crt");
    const anchorB = path.join(dir, "b", "ca.crt");
    const bundle = async (...files: string[]) => (await Promise.all(files.map((f) => readFile(f, "utf8")))).join("");

    // The ConfigMap volume: ca-bundle.crt → ..data/ca-bundle.crt, ..data → the current generation.
    const cm = path.join(dir, "anchors");
    let generation = 0;
    const publish = async (content: string) => {
      const name = `..gen_${++generation}`;
      await mkdir(path.join(cm, name), { recursive: true });
      await writeFile(path.join(cm, name, "ca-bundle.crt"), content);
      if (generation === 1) {
        await symlink(name, path.join(cm, "..data"));
        await symlink("..data/ca-bundle.crt", path.join(cm, "ca-bundle.crt"));
        return;
      }
      await symlink(name, path.join(cm, "..data_tmp"));
      await rename(path.join(cm, "..data_tmp"), path.join(cm, "..data"));
    };
    await publish(await bundle(anchorA));
    const issuerDir = path.join(dir, "issuer");
    await mkdir(issuerDir);
    const useIssuer = async (from: string) => {
      // Key and certificate written aside, then renamed in: what rotation tools do.
      for (const name of ["issuer.key", "issuer.crt"]) await writeFile(path.join(issuerDir, `.${name}.new`), await readFile(path.join(from, name)));
      for (const name of ["issuer.key", "issuer.crt"]) await rename(path.join(issuerDir, `.${name}.new`), path.join(issuerDir, name));
    };
    await useIssuer(dir);

    proc = await startIdentity({
      dir,
      issuerDir,
      trustAnchors: path.join(cm, "ca-bundle.crt"),
      args: ["--issuer-poll-interval", "500ms", "--trust-anchors-poll-interval", "500ms"],
    });
    const p = proc;
    const pid = p.child.pid;
    const csr = (await opensslCsr(dir, { san: `DNS:${identity}` })).der;
    const token = Buffer.from(await mintToken(dir, "default", "web"));
    const bundleFile = async (name: string, content: string) => {
      const file = path.join(dir, name);
      await writeFile(file, content);
      return file;
    };
    /** A fresh TLS client trusting `anchorsFile` (a new handshake, so it sees the certificate served now). */
    const request = async (anchorsFile: string) => {
      const client = await identityClient(dir, p.grpcAddress, { anchors: anchorsFile });
      clients.push(client);
      return certify(client, { identity, token, certificateSigningRequest: csr });
    };
    const after = (index: number, msg: string, extra: (l: Record<string, unknown>) => boolean = () => true) =>
      p.waitForLog((l) => p.logs.indexOf(l) >= index && l["msg"] === msg && extra(l));
    const metric = async (name: string) => {
      const text = await (await fetch(`${p.adminUrl}/metrics`)).text();
      return text.split("\n").filter((l) => l.startsWith(name)).join("\n");
    };
    const ready = async () => {
      const res = await fetch(`${p.adminUrl}/ready`);
      return { status: res.status, body: await res.text() };
    };

    // 1. Anchor A only.
    const issuerA = await firstCert(path.join(dir, "issuer.crt"));
    expect(Buffer.from((await request(anchorA)).intermediateCertificates[0]!).equals(issuerA)).toBe(true);
    expect(await metric("identity_trust_anchors ")).toBe("identity_trust_anchors 1");

    // 2. Bundle A+B: reloaded, the issuer under A revalidated and kept.
    let mark = p.logs.length;
    await publish(await bundle(anchorA, anchorB));
    expect(await after(mark, "trust anchors loaded")).toMatchObject({ anchors: 2 });
    const revalidated = await after(mark, "issuer revalidated against the new trust anchors");
    // The service's own certificate is re-issued from the revalidated issuer.
    await after(p.logs.indexOf(revalidated), "serving certificate issued");
    expect(await metric("identity_trust_anchors ")).toBe("identity_trust_anchors 2");

    // 3. The issuer under B: accepted without a restart; leaves and the service's own certificate chain to B.
    mark = p.logs.length;
    await useIssuer(path.join(dir, "b"));
    const issuerB = await firstCert(path.join(dir, "b", "issuer.crt"));
    const loadedB = await after(mark, "issuer loaded");
    await after(p.logs.indexOf(loadedB), "serving certificate issued");
    const underB = await request(anchorB);
    expect(Buffer.from(underB.intermediateCertificates[0]!).equals(issuerB)).toBe(true);
    const leafFile = await bundleFile("leaf-b.pem", derToPem(underB.leafCertificate));
    const untrusted = await bundleFile("issuer-b.pem", derToPem(underB.intermediateCertificates[0]!));
    const verified = await openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", anchorB, "-untrusted", untrusted, leafFile]);
    expect(verified.stdout + verified.stderr).toMatch(/leaf-b\.pem: OK/);

    // 4. Bundle B only: the issuer under B stays; A no longer verifies the service.
    mark = p.logs.length;
    await publish(await bundle(anchorB));
    expect(await after(mark, "trust anchors loaded")).toMatchObject({ anchors: 1 });
    await after(mark, "issuer revalidated against the new trust anchors");
    expect(Buffer.from((await request(anchorB)).intermediateCertificates[0]!).equals(issuerB)).toBe(true);
    const shownB = await openssl(["s_client", "-connect", p.grpcAddress, "-servername", SERVER_NAME, "-alpn", "h2", "-CAfile", anchorB, "-verify_return_error"]);
    expect(shownB.stdout).toMatch(/Verify return code: 0 \(ok\)/);
    const shownA = await openssl(["s_client", "-connect", p.grpcAddress, "-servername", SERVER_NAME, "-alpn", "h2", "-CAfile", anchorA, "-verify_return_error"]);
    expect(shownA.stdout + shownA.stderr).not.toMatch(/Verify return code: 0 \(ok\)/);
    expect((await ready()).status).toBe(200);

    // 5. Broken anchors files are refused; the bundle B stays in use.
    const broken: [string, string][] = [
      ["", "empty"],
      ["-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n", "bad_certificate"],
      [await readFile(path.join(dir, "b", "issuer.key"), "utf8"), "bad_certificate"],
    ];
    for (const [content, rejection] of broken) {
      mark = p.logs.length;
      await publish(content);
      const line = await after(mark, "trust anchors replacement refused; keeping the current bundle");
      expect(line).toMatchObject({ rejection, keeping: 1 });
      expect(Buffer.from((await request(anchorB)).intermediateCertificates[0]!).equals(issuerB)).toBe(true);
    }
    expect(await metric("identity_trust_anchors_rejected_total")).toMatch(/reason="empty"} 1[\s\S]*reason="bad_certificate"} 2|reason="bad_certificate"} 2[\s\S]*reason="empty"} 1/);
    expect(await metric("identity_trust_anchors ")).toBe("identity_trust_anchors 1");
    expect((await ready()).status).toBe(200);

    // 6. Anchors that do not cover the issuer (A alone while the issuer is under B): fail closed, with the reason.
    mark = p.logs.length;
    await publish(await bundle(anchorA));
    await after(mark, "the current issuer is not valid under the new trust anchors; no leaves are issued until a trusted issuer is loaded");
    const refused = (await request(anchorB).catch((e: unknown) => e)) as ServiceError;
    expect(refused.code).toBe(status.UNAVAILABLE);
    expect(refused.details).toMatch(/does not chain to the trust anchors.*load an issuer under the current trust anchors/);
    const notReady = await ready();
    expect(notReady.status).toBe(503);
    expect(notReady.body).toMatch(/does not chain to the trust anchors/);

    // B back: the same issuer files are accepted again, still without a restart.
    mark = p.logs.length;
    await publish(await bundle(anchorB));
    await after(mark, "issuer loaded");
    expect(Buffer.from((await request(anchorB)).intermediateCertificates[0]!).equals(issuerB)).toBe(true);
    expect((await ready()).status).toBe(200);

    expect(p.child.exitCode).toBeNull();
    expect(p.child.pid).toBe(pid);
    expect(p.logs.filter((l) => l["msg"] === "listening")).toHaveLength(1);
  }, 90_000);
});
