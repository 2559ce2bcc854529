import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  bufBin,
  createMaterial,
  derToPem,
  identityFor,
  mintToken,
  openssl,
  opensslCsr,
  protoDir,
  SERVER_NAME,
  startIdentity,
  tempDir,
} from "./harness.ts";
import type { IdentityProcess } from "./harness.ts";

const run = promisify(execFile);

interface BufCertifyResponse {
  leafCertificate: string;
  intermediateCertificates: string[];
  validUntil: string;
}

async function bufCurl(url: string, dataFile: string, tls: string[] = []): Promise<BufCertifyResponse> {
  const { stdout } = await run(
    bufBin,
    ["curl", "--protocol", "grpc", ...(tls.length ? tls : ["--http2-prior-knowledge"]), "--schema", protoDir, "--data", `@${dataFile}`, url],
    { timeout: 30_000 },
  );
  return JSON.parse(stdout) as BufCertifyResponse;
}

/** Checks a Certify answer the way an outside party would: with openssl only. */
async function checkWithOpenssl(dir: string, answer: BufCertifyResponse, identity: string): Promise<void> {
  const leafFile = path.join(dir, `leaf-${Date.now()}.pem`);
  const chainFile = path.join(dir, `chain-${Date.now()}.pem`);
  await writeFile(leafFile, derToPem(Buffer.from(answer.leafCertificate, "base64")));
  await writeFile(chainFile, answer.intermediateCertificates.map((c) => derToPem(Buffer.from(c, "base64"))).join(""));
  expect(answer.intermediateCertificates.length).toBeGreaterThanOrEqual(1);

  const verify = await openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", path.join(dir, "ca.crt"), "-untrusted", chainFile, leafFile]);
  expect(verify.stderr).toBe("");
  expect(verify.stdout.trim()).toBe(`${leafFile}: OK`);
  const serverPurpose = await openssl(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", path.join(dir, "ca.crt"), "-untrusted", chainFile, leafFile]);
  expect(serverPurpose.stdout.trim()).toBe(`${leafFile}: OK`);

  const san = await openssl(["x509", "-in", leafFile, "-noout", "-ext", "subjectAltName"]);
  const names = san.stdout.split("\n")[1]!.trim().split(/,\s*/).sort();
  expect(names).toEqual([`DNS:${identity}`, "URI:spiffe://cluster.local/ns/default/sa/web"]);

  const end = await openssl(["x509", "-in", leafFile, "-noout", "-enddate"]);
  const notAfter = new Date(end.stdout.trim().replace(/^notAfter=/, ""));
  expect(new Date(answer.validUntil).getTime()).toBe(notAfter.getTime());
  // 24 h + 20 s skew allowance from (about) now.
  expect(notAfter.getTime() - Date.now()).toBeGreaterThan(24 * 3600_000);
  expect(notAfter.getTime() - Date.now()).toBeLessThan(24 * 3600_000 + 25_000);
}

describe("meshtls-identity end to end (meshtls CLI, openssl, buf curl)", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const procs: IdentityProcess[] = [];
  const identity = identityFor("web");

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("e2e"));
    await createMaterial(dir);
  });
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await cleanup();
  });

  async function requestFile(name: string): Promise<string> {
    const { der } = await opensslCsr(dir, { cn: identity, san: `DNS:${identity}` });
    const token = await mintToken(dir, "default", "web");
    const file = path.join(dir, `${name}.json`);
    await writeFile(
      file,
      JSON.stringify({ identity, token: Buffer.from(token).toString("base64"), certificateSigningRequest: der.toString("base64") }),
    );
    return file;
  }

  it("plaintext on loopback: buf curl Certify, then openssl verify -x509_strict -purpose sslclient", async () => {
    const proc = await startIdentity({ dir, args: ["--insecure-plaintext"] });
    procs.push(proc);
    const answer = await bufCurl(`http://${proc.grpcAddress}/io.linkerd.proxy.identity.Identity/Certify`, await requestFile("plain"));
    await checkWithOpenssl(dir, answer, identity);
    // One log line per issuance with identity, serial, notAfter, result.
    const line = await proc.waitForLog((l) => l["msg"] === "certified");
    expect(line).toMatchObject({ identity, result: "ok" });
    expect(String(line["serial"])).toMatch(/^[0-9a-f]+$/);
    expect(new Date(String(line["notAfter"])).toISOString()).toBe(new Date(answer.validUntil).toISOString());
    // Admin endpoints.
    expect((await fetch(`${proc.adminUrl}/live`)).status).toBe(200);
    expect((await fetch(`${proc.adminUrl}/ready`)).status).toBe(200);
    const metrics = await (await fetch(`${proc.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/identity_certify_total\{result="ok"\} 1/);
    expect(metrics).toMatch(/issuer_cert_ttl_seconds \d+/);
    expect(metrics).toMatch(/identity_certify_duration_seconds_count\{result="ok"\} 1/);
  });

  it("TLS with its own identity: buf curl verifies the service against ca.crt as " + SERVER_NAME, async () => {
    const proc = await startIdentity({ dir });
    procs.push(proc);
    const answer = await bufCurl(`https://${proc.grpcAddress}/io.linkerd.proxy.identity.Identity/Certify`, await requestFile("tls"), [
      "--cacert",
      path.join(dir, "ca.crt"),
      "--servername",
      SERVER_NAME,
    ]);
    await checkWithOpenssl(dir, answer, identity);
    // The service's own certificate names its identity and chains to the anchor.
    const [host, port] = [proc.grpcAddress.slice(0, proc.grpcAddress.lastIndexOf(":")), proc.grpcAddress.slice(proc.grpcAddress.lastIndexOf(":") + 1)];
    const sclient = await openssl(
      ["s_client", "-connect", `${host}:${port}`, "-servername", SERVER_NAME, "-verify_hostname", SERVER_NAME, "-CAfile", path.join(dir, "ca.crt"), "-verify_return_error", "-alpn", "h2", "-brief"],
      { input: Buffer.alloc(0) },
    );
    expect(sclient.stderr).toMatch(/Verification: OK/);
  });

  it("shuts down gracefully on SIGTERM", async () => {
    const proc = await startIdentity({ dir, args: ["--insecure-plaintext"] });
    expect(await proc.stop()).toBe(0);
    expect(proc.logs.some((l) => l["msg"] === "stopped")).toBe(true);
  });

  it("refuses --insecure-plaintext on a non-loopback address, with a message", async () => {
    await expect(startIdentity({ dir, args: ["--insecure-plaintext"], listen: "0.0.0.0:0" })).rejects.toThrow(
      /--insecure-plaintext is allowed only on a loopback listen address/,
    );
  });
});
