import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { decodeCertificates, exportPrivateKey, generateKeyPair, importPrivateKey, issueLeaf, pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InspectRemoteResult } from "../src/commands/inspect-remote.ts";
import { freePort, LocalMesh, type Workload } from "../src/demo/mesh.ts";
import { scrapeMetrics } from "../src/mesh/admin-client.ts";
import { sumSamples } from "../src/mesh/prometheus.ts";
import { makeTempDir, runCli } from "./helpers.ts";
import { eventually, testBinaries } from "./mesh-helpers.ts";

const API = "api.default.serviceaccount.identity.meshtls.cluster.local";
const OPS = "ops.default.serviceaccount.identity.meshtls.cluster.local";

/** A mesh leaf for `identity` issued by the issuer in `certsDir`, written as `<name>.crt` (leaf + issuer) and `<name>.key`. */
async function issueClientCertificate(certsDir: string, outDir: string, serviceAccount: string, identity: string, name = serviceAccount): Promise<{ cert: string; key: string }> {
  const issuerDer = decodeCertificates(await readFile(path.join(certsDir, "issuer.crt")))[0]!;
  const issuerKey = await importPrivateKey(await readFile(path.join(certsDir, "issuer.key"), "utf8"));
  const pair = await generateKeyPair();
  const leaf = await issueLeaf({ issuer: { certificate: issuerDer, privateKey: issuerKey.privateKey }, publicKey: pair.publicKey, identity, spiffeId: `spiffe://cluster.local/ns/default/sa/${serviceAccount}`, lifetimeMs: 3_600_000 });
  const cert = path.join(outDir, `${name}.crt`);
  const key = path.join(outDir, `${name}.key`);
  await writeFile(cert, pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuerDer));
  await writeFile(key, await exportPrivateKey(pair.privateKey), { mode: 0o600 });
  return { cert, key };
}

let dir: string;
let cleanup: () => Promise<void>;
let mesh: LocalMesh;
let api: Workload;
let ops: { cert: string; key: string };
let foreign: { cert: string; key: string };

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
  mesh = await LocalMesh.create({ dir: path.join(dir, "mesh"), leafLifetimeMs: 60_000, binaries: testBinaries() });
  ops = await issueClientCertificate(mesh.certsDir, dir, "ops", OPS);
  // A valid mesh leaf, but from another mesh's issuer.
  expect((await runCli(["certs", "create", "--out", path.join(dir, "other")])).code).toBe(0);
  foreign = await issueClientCertificate(path.join(dir, "other"), dir, "ops", OPS, "foreign");
}, 60_000);

afterAll(async () => {
  await mesh?.stop();
  await cleanup();
});

describe("meshtls inspect HOST:PORT --cert --key against openssl s_server -Verify 1 (a client certificate required)", () => {
  let server: ChildProcessWithoutNullStreams;
  let address: string;
  let serverOutput = "";

  beforeAll(async () => {
    const port = await freePort("127.0.0.1");
    address = `127.0.0.1:${port}`;
    // stdin stays open: s_server stops at its end.
    server = spawn("openssl", [
      "s_server", "-accept", address, "-tls1_3", "-Verify", "1", "-verify_return_error", "-CAfile", path.join(mesh.certsDir, "ca.crt"),
      "-cert", path.join(mesh.certsDir, "issuer.crt"), "-key", path.join(mesh.certsDir, "issuer.key"),
    ]);
    server.stdout.setEncoding("utf8").on("data", (chunk: string) => (serverOutput += chunk));
    server.stderr.setEncoding("utf8").on("data", (chunk: string) => (serverOutput += chunk));
    await eventually("s_server listening", async () => (serverOutput.includes("ACCEPT") ? true : undefined), 10_000, 100);
  });

  afterAll(() => {
    server?.kill("SIGKILL");
  });

  it("presents the certificate: openssl sees and verifies it; the server keeps the connection open", async () => {
    serverOutput = "";
    const result = await runCli(["inspect", address, "--cert", ops.cert, "--key", ops.key]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`Client cert: +presented CN=${OPS.replaceAll(".", "\\.")}, identity ${OPS.replaceAll(".", "\\.")}`));
    expect(result.stdout).toMatch(/Then: +the server kept the connection open/);
    // OpenSSL 3.0 knows no ML-KEM: it takes the X25519 share the inspector also sends.
    expect(result.stdout).toMatch(/TLS: +TLSv1\.3, TLS_\w+, X25519, no ALPN/);
    await eventually("s_server printed the client certificate", async () => (serverOutput.includes(`subject=CN = ${OPS}`) ? true : undefined), 5_000, 100);
    expect(serverOutput).toMatch(/depth=0 CN = ops\.default\.serviceaccount\.identity\.meshtls\.cluster\.local\nverify return:1/);

    const json = JSON.parse((await runCli(["inspect", address, "--cert", ops.cert, "--key", ops.key, "--json"])).stdout) as InspectRemoteResult;
    expect(json.clientCertificate).toEqual({ subject: `CN=${OPS}`, identity: OPS, spiffeId: "spiffe://cluster.local/ns/default/sa/ops" });
    expect(json.afterHandshake).toEqual({ open: true, observedMs: 500 });
    expect(json.group).toBe("X25519");
  });

  it("a certificate the server does not trust: its refusal after the TLS 1.3 handshake is reported; without one, the hint", async () => {
    const untrusted = await runCli(["inspect", address, "--cert", foreign.cert, "--key", foreign.key, "--json"]);
    expect(untrusted.code).toBe(0);
    expect((JSON.parse(untrusted.stdout) as InspectRemoteResult).afterHandshake).toEqual({ open: false, reason: "tlsv1 alert unknown ca (ERR_SSL_TLSV1_ALERT_UNKNOWN_CA)" });
    const text = await runCli(["inspect", address, "--cert", foreign.cert, "--key", foreign.key]);
    expect(text.stdout).toMatch(/Then: +the server ended the connection right after the handshake: tlsv1 alert unknown ca .*it refused this client/);

    // Without a certificate the connection is closed at once (nothing observed), with a hint.
    const none = await runCli(["inspect", address]);
    expect(none.code).toBe(0);
    expect(none.stdout).toMatch(/Client cert: +none presented \(a server may still refuse the connection after the handshake, as a proxy under all-authenticated does: give --cert and --key\)/);
    expect(none.stdout).not.toMatch(/Then:/);
    expect((JSON.parse((await runCli(["inspect", address, "--json"])).stdout) as InspectRemoteResult).afterHandshake).toBeUndefined();
  });

  it("--cert without --key, a key that is not the certificate's, unreadable files: one line, before connecting", async () => {
    const halfCert = await runCli(["inspect", address, "--cert", ops.cert]);
    expect(halfCert.code).toBe(2);
    expect(halfCert.stderr).toBe("meshtls: --cert and --key go together: the client certificate and its private key\n");
    const halfKey = await runCli(["inspect", address, "--key", ops.key]);
    expect(halfKey.code).toBe(2);

    const mismatch = await runCli(["inspect", address, "--cert", ops.cert, "--key", foreign.key]);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toMatch(/^meshtls: .*foreign\.key is not the private key of .*ops\.crt \(CN=ops\.default/);
    expect(mismatch.stderr.trim().split("\n")).toHaveLength(1);

    const missing = await runCli(["inspect", address, "--cert", path.join(dir, "nope.crt"), "--key", ops.key]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^meshtls: cannot read client certificate .*nope\.crt: no such file or directory\n$/);
    const notKey = await runCli(["inspect", address, "--cert", ops.cert, "--key", ops.cert]);
    expect(notKey.code).toBe(1);
    expect(notKey.stderr).toMatch(/^meshtls: client key .*ops\.crt is not a usable private key/);
  });
});

describe("meshtls inspect HOST:PORT --cert --key against a real proxy under all-authenticated", () => {
  beforeAll(async () => {
    await mesh.startIdentity();
    await mesh.startDestination();
    api = await mesh.startWorkload({ name: "api", ip: "127.0.1.32", policy: "all-authenticated" });
  }, 120_000);

  it("with a mesh certificate the proxy authenticates the inspector: allowed, kept open, counted with its identity; another mesh's is refused", async () => {
    const without = await runCli(["inspect", api.inbound, "--sni", API, "--anchors", mesh.bundleFile]);
    expect(without.stderr).toBe("");
    expect(without.code).toBe(0);
    expect(without.stdout).toMatch(/Trust: +chains to trust anchor CN=root\.meshtls\.cluster\.local/);
    expect(without.stdout).toMatch(/Client cert: +none presented .*give --cert and --key/);
    // Node 24 on both ends: the post-quantum hybrid.
    expect(without.stdout).toMatch(/TLS: +TLSv1\.3, TLS_\w+, X25519MLKEM768, /);
    const allowedBefore = sumSamples(await scrapeMetrics({ address: api.admin }), "inbound_tcp_authz_allow_total");

    const withCert = await runCli(["inspect", api.inbound, "--sni", API, "--anchors", mesh.bundleFile, "--cert", ops.cert, "--key", ops.key]);
    expect(withCert.stderr).toBe("");
    expect(withCert.code).toBe(0);
    expect(withCert.stdout).toMatch(new RegExp(`Client cert: +presented CN=${OPS.replaceAll(".", "\\.")}`));
    expect(withCert.stdout).toMatch(/Then: +the server kept the connection open/);
    // The proxy authenticated the inspector: its connection is counted with the client's identity, and allowed.
    await eventually("the proxy counted client_id=ops", async () => {
      const samples = await scrapeMetrics({ address: api.admin });
      return sumSamples(samples, "tcp_open_total", { direction: "inbound", tls: "true", client_id: OPS }) >= 1 ? true : undefined;
    }, 10_000);
    expect(sumSamples(await scrapeMetrics({ address: api.admin }), "inbound_tcp_authz_allow_total")).toBeGreaterThan(allowedBefore);
    // The proxy counts the group of each mesh handshake it completes (this one stayed open: --cert observes 500 ms).
    await eventually("the proxy counted an X25519MLKEM768 handshake", async () => {
      const samples = await scrapeMetrics({ address: api.admin });
      return sumSamples(samples, "tls_handshakes_total", { direction: "inbound", group: "X25519MLKEM768" }) >= 1 ? true : undefined;
    }, 10_000);

    // A certificate from another mesh is refused by the proxy's TLS layer.
    const untrusted = await runCli(["inspect", api.inbound, "--sni", API, "--cert", foreign.cert, "--key", foreign.key]);
    expect(untrusted.code).toBe(0);
    expect(untrusted.stdout).toMatch(/Then: +the server ended the connection right after the handshake: .*it refused this client/);
  });
});
