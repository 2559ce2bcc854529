import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CheckReport } from "../src/commands/check.ts";
import type { InspectRemoteResult } from "../src/commands/inspect-remote.ts";
import { freePort, LocalMesh, type Workload } from "../src/demo/mesh.ts";
import { startProcess, type ManagedProcess } from "../src/mesh/supervisor.ts";
import { makeTempDir, runCli, runOpenssl } from "./helpers.ts";
import { testBinaries } from "./mesh-helpers.ts";

const API = "api.default.serviceaccount.identity.meshtls.cluster.local";

describe("check and inspect against running services and proxies", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let mesh: LocalMesh;
  let api: Workload;
  let web: Workload;
  const extra: ManagedProcess[] = [];

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir());
    mesh = await LocalMesh.create({ dir: path.join(dir, "mesh"), leafLifetimeMs: 60_000, binaries: testBinaries() });
    await mesh.startIdentity();
    await mesh.startDestination();
    api = await mesh.startWorkload({ name: "api", ip: "127.0.1.12" });
    web = await mesh.startWorkload({ name: "web", ip: "127.0.1.11" });
    // Another mesh's anchor, to see a chain refused.
    expect((await runCli(["certs", "create", "--out", path.join(dir, "other")])).code).toBe(0);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(extra.map((p) => p.stop()));
    await mesh?.stop();
    await cleanup();
  });

  it("healthy identity service and proxies: exit 0", async () => {
    const result = await runCli(["check", "--anchors", mesh.bundleFile, "--issuer-dir", mesh.issuerDir, "--identity-addr", mesh.identity!.grpcAddress, "--proxy-admin", api.admin, "--proxy-admin", web.admin]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`\\[ok\\] +identity service ${mesh.identity!.grpcAddress} answers TLS \\(TLSv1\\.3, h2\\)`));
    expect(result.stdout).toMatch(/\[ok\] +identity service .* serves identity\.meshtls\.serviceaccount\.identity\.meshtls\.cluster\.local, valid now and expires in/);
    expect(result.stdout).toMatch(/\[ok\] +issuer CN=identity\.meshtls\.cluster\.local \(served by .*\) expires in 364d/);
    expect(result.stdout).toMatch(/\[ok\] +identity service .* chains to trust anchor CN=root\.meshtls\.cluster\.local \S+ [0-9a-f]{8} \(sha256:[0-9a-f]{12}\)/);
    expect(result.stdout).toMatch(new RegExp(`\\[ok\\] +proxy ${api.admin} is ready`));
    expect(result.stdout).toMatch(new RegExp(`\\[ok\\] +proxy ${web.admin} certificate expires in \\d+[sm]`));
    // Each proxy's GET /identity: the certificate it holds, the issuer and anchor that certificate chains to, and its bundle.
    expect(result.stdout).toMatch(new RegExp(`\\[ok\\] +proxy ${api.admin} holds ${API.replaceAll(".", "\\.")}: issuer CN=identity\\.meshtls\\.cluster\\.local \\(sha256:[0-9a-f]{12}\\), trust anchor CN=root\\.meshtls\\.cluster\\.local \\S+ [0-9a-f]{8} \\(sha256:[0-9a-f]{12}\\)`));
    expect(result.stdout).toMatch(new RegExp(`\\[ok\\] +proxy ${web.admin} trusts exactly the 1 anchor of `));
    expect(result.stdout).toMatch(/Status: healthy \(0 errors, 0 warnings\)/);

    const json = await runCli(["check", "--identity-addr", mesh.identity!.grpcAddress, "--proxy-admin", api.admin, "--json"]);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as CheckReport;
    expect(report.findings.map((f) => f.check)).toEqual(["identity-tls", "identity-served-validity", "identity-issuer-validity", "proxy-ready", "proxy-cert-expiry", "proxy-chain"]);
  });

  it("the issuer served by the identity service within the warning window: exit 0, exit 1 with --strict", async () => {
    const result = await runCli(["check", "--identity-addr", mesh.identity!.grpcAddress, "--warn", "400d"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/\[warn\] +issuer CN=identity\.meshtls\.cluster\.local \(served by .*\) expires in 364d .*within the 400d warning window: rotate it/);
    expect((await runCli(["check", "--identity-addr", mesh.identity!.grpcAddress, "--warn", "400d", "--strict"])).code).toBe(1);
  });

  it("an identity service that does not chain to the given anchors, or is not there: exit 1", async () => {
    const foreign = await runCli(["check", "--anchors", path.join(dir, "other", "ca.crt"), "--identity-addr", mesh.identity!.grpcAddress]);
    expect(foreign.code).toBe(1);
    expect(foreign.stdout).toMatch(/\[error\] identity service .* does not chain to the trust anchors: .*proxies will refuse it/);
    const closed = await freePort("127.0.0.1");
    const gone = await runCli(["check", "--identity-addr", `127.0.0.1:${closed}`]);
    expect(gone.code).toBe(1);
    expect(gone.stdout).toMatch(new RegExp(`\\[error\\] identity service 127\\.0\\.0\\.1:${closed}: .*ECONNREFUSED`));
    // The destination service speaks plaintext gRPC: not a TLS identity service.
    const plain = await runCli(["check", "--identity-addr", mesh.destination!.grpcAddress]);
    expect(plain.code).toBe(1);
    expect(plain.stdout).toMatch(/\[error\] identity service .*TLS handshake failed/);
  });

  it("a proxy without a certificate is not ready: exit 1; an admin port that is not there: exit 1", async () => {
    // A proxy whose identity service does not exist never gets a certificate.
    const ip = "127.0.1.13";
    const token = path.join(dir, "mesh", "tokens", "api.token");
    const proxy = startProcess({
      name: "lonely proxy",
      file: process.execPath,
      args: [testBinaries().proxy, "--identity", API, "--token-file", token, "--trust-anchors", mesh.bundleFile,
        "--identity-addr", `127.0.0.1:${await freePort("127.0.0.1")}`, "--identity-name", mesh.identity!.serverName,
        "--destination-addr", mesh.destination!.grpcAddress, "--destination-insecure-plaintext",
        "--inbound", `${ip}:0`, "--outbound", `${ip}:0`, "--admin", `${ip}:0`, "--workload", `${ip}:1`],
    });
    extra.push(proxy);
    const listening = await proxy.waitFor((l) => l.msg === "listening", { timeoutMs: 30_000, what: "listening" });
    const admin = String(listening.admin);
    const result = await runCli(["check", "--proxy-admin", admin, "--proxy-admin", web.admin]);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(new RegExp(`\\[error\\] proxy ${admin} is not ready: HTTP 503 not ready: no certificate yet`));
    expect(result.stdout).toMatch(new RegExp(`\\[error\\] proxy ${admin} reports no certificate expiry`));
    expect(result.stdout).toMatch(new RegExp(`\\[ok\\] +proxy ${web.admin} is ready`));
    expect(result.stdout).toMatch(new RegExp(`\\[error\\] proxy ${admin} holds no certificate`));
    expect(result.stdout).toMatch(/Status: FAILED \(3 errors/);

    const closed = await freePort("127.0.0.1");
    const gone = await runCli(["check", "--proxy-admin", `127.0.0.1:${closed}`]);
    expect(gone.code).toBe(1);
    expect(gone.stdout).toMatch(/\[error\] proxy 127\.0\.0\.1:\d+: cannot reach 127\.0\.0\.1:\d+: ECONNREFUSED/);
  });

  it("inspect HOST:PORT --sni: the identity, SPIFFE ID, issuer and chain api's proxy presents, the same certificate openssl s_client sees", async () => {
    const result = await runCli(["inspect", api.inbound, "--sni", API, "--anchors", mesh.bundleFile]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`${api.inbound} (SNI ${API})`);
    expect(result.stdout).toMatch(/TLS: +TLSv1\.3, TLS_\w+, X25519MLKEM768, no ALPN/);
    expect(result.stdout).toMatch(new RegExp(`Identity: +${API.replaceAll(".", "\\.")}`));
    expect(result.stdout).toMatch(/SPIFFE ID: +spiffe:\/\/cluster\.local\/ns\/default\/sa\/api/);
    expect(result.stdout).toMatch(/Matches SNI: +yes/);
    expect(result.stdout).toMatch(/Issuer: +CN=identity\.meshtls\.cluster\.local/);
    expect(result.stdout).toMatch(/Chain: +2 certificates presented/);
    expect(result.stdout).toMatch(new RegExp(`Trust: +chains to trust anchor CN=root\\.meshtls\\.cluster\\.local \\S+ [0-9a-f]{8} \\(${mesh.bundleFile.replaceAll(".", "\\.")}\\)`));

    const json = JSON.parse((await runCli(["inspect", api.inbound, "--sni", API, "--json"])).stdout) as InspectRemoteResult;
    expect(json).toMatchObject({ kind: "remote", sni: API, protocol: "TLSv1.3", matchesSni: true });
    expect(json.chain[0]).toMatchObject({ identity: API, spiffeId: "spiffe://cluster.local/ns/default/sa/api", ca: false });
    expect(json.chain[1]).toMatchObject({ ca: true, subject: "CN=identity.meshtls.cluster.local" });

    // openssl s_client, the reference peer, sees the same leaf (compared by fingerprint).
    const sClient = await new Promise<string>((resolve) => {
      const child = spawn("openssl", ["s_client", "-connect", api.inbound, "-servername", API, "-showcerts"], { stdio: ["pipe", "pipe", "ignore"] });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += String(d)));
      child.stdin.end();
      const timer = setTimeout(() => child.kill(), 10_000);
      child.on("exit", () => {
        clearTimeout(timer);
        resolve(out);
      });
    });
    const leafPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(sClient)?.[0];
    expect(leafPem).toBeDefined();
    await writeFile(path.join(dir, "s_client-leaf.pem"), `${leafPem!}\n`);
    const fingerprint = await runOpenssl(["x509", "-in", path.join(dir, "s_client-leaf.pem"), "-noout", "-fingerprint", "-sha256"]);
    const expected = fingerprint.stdout.trim().split("=")[1]!.replaceAll(":", "").toLowerCase();
    // The certificate may have been refreshed between the two handshakes (60 s leaves): compare when both are current.
    const again = JSON.parse((await runCli(["inspect", api.inbound, "--sni", API, "--json"])).stdout) as InspectRemoteResult;
    expect([json.chain[0]!.fingerprintSha256, again.chain[0]!.fingerprintSha256]).toContain(expected);
  });

  it("inspect HOST:PORT against another mesh's anchors: does NOT verify; a wrong SNI: not terminated by the proxy", async () => {
    const foreign = await runCli(["inspect", api.inbound, "--sni", API, "--anchors", path.join(dir, "other", "ca.crt")]);
    expect(foreign.code).toBe(1);
    expect(foreign.stdout).toMatch(/Trust: +does NOT verify against .*other\/ca\.crt/);

    // Another SNI is passed to the workload (plain HTTP here): the handshake fails with a hint, exit 1, no stack trace.
    const wrong = await runCli(["inspect", api.inbound, "--sni", "web.default.serviceaccount.identity.meshtls.cluster.local"], { timeoutMs: 30_000 });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^meshtls: 127\.0\.1\.12:\d+: (TLS handshake failed|no TLS handshake)/);
    expect(wrong.stderr).not.toMatch(/\n\s+at /);

    const noSni = await runCli(["inspect", api.inbound], { timeoutMs: 30_000 });
    expect(noSni.code).toBe(1);
    expect(noSni.stderr).toMatch(/give --sni <identity>/);
  });

  it("inspect HOST:PORT against a server that accepts and says nothing: bounded by the timeout, exit 1", async () => {
    const ip = "127.0.1.14";
    const port = await freePort(ip);
    const silent = startProcess({ name: "silent", file: process.execPath, args: ["-e", `require("net").createServer(()=>{}).listen(${port}, "${ip}", () => console.log("listening"))`] });
    extra.push(silent);
    await silent.waitFor((l) => l.msg === "listening", { timeoutMs: 10_000, what: "listening" });
    const started = Date.now();
    const result = await runCli(["inspect", `${ip}:${port}`, "--sni", API], { timeoutMs: 30_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/no TLS handshake within 10 s/);
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});
