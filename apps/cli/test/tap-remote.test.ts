import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { decodeCertificates, exportPrivateKey, generateKeyPair, importPrivateKey, issueLeaf, pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TapLine } from "../src/commands/tap.ts";
import type { LocalMesh, Workload } from "../src/demo/mesh.ts";
import { runCli, runOpenssl } from "./helpers.ts";
import { curlThrough, eventually, startLocalMesh, startTap } from "./mesh-helpers.ts";

const API = "api.default.serviceaccount.identity.meshtls.cluster.local";
const WEB = "web.default.serviceaccount.identity.meshtls.cluster.local";
const OPS = "ops.tools.serviceaccount.identity.meshtls.cluster.local";
const INTRUDER = "intruder.tools.serviceaccount.identity.meshtls.cluster.local";

/** A mesh leaf for `identity` from the issuer in `issuerDir`, written as `<name>.crt` (leaf + issuer) and `<name>.key`. */
async function issueClientCertificate(issuerDir: string, outDir: string, identity: string, name: string): Promise<{ cert: string; key: string }> {
  const issuerDer = decodeCertificates(await readFile(path.join(issuerDir, "issuer.crt")))[0]!;
  const issuerKey = await importPrivateKey(await readFile(path.join(issuerDir, "issuer.key"), "utf8"));
  const pair = await generateKeyPair();
  const [sa, ns] = identity.split(".");
  const leaf = await issueLeaf({ issuer: { certificate: issuerDer, privateKey: issuerKey.privateKey }, publicKey: pair.publicKey, identity, spiffeId: `spiffe://cluster.local/ns/${ns}/sa/${sa}`, lifetimeMs: 3_600_000 });
  const cert = path.join(outDir, `${name}.crt`);
  const key = path.join(outDir, `${name}.key`);
  await writeFile(cert, pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuerDer));
  await writeFile(key, await exportPrivateKey(pair.privateKey), { mode: 0o600 });
  return { cert, key };
}

describe("meshtls tap --proxy-tap: a proxy's --tap-addr over mutual TLS, for --tap-allow identities only", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let mesh: LocalMesh;
  let api: Workload;
  let web: Workload;
  let ops: { cert: string; key: string };
  let intruder: { cert: string; key: string };
  let foreign: { cert: string; key: string };

  beforeAll(async () => {
    ({ dir, mesh, cleanup } = await startLocalMesh());
    // api's tap listener is on its own (non-admin) address, as a pod IP would be; only ops may tap it.
    api = await mesh.startWorkload({ name: "api", ip: "127.0.1.52", proxyArgs: ["--tap-addr", "127.0.1.52:0", "--tap-allow", OPS] });
    web = await mesh.startWorkload({ name: "web", ip: "127.0.1.51" });
    ops = await issueClientCertificate(mesh.issuerDir, dir, OPS, "ops");
    intruder = await issueClientCertificate(mesh.issuerDir, dir, INTRUDER, "intruder");
    // The same identity name from another mesh's issuer.
    expect((await runCli(["certs", "create", "--out", path.join(dir, "other")])).code).toBe(0);
    foreign = await issueClientCertificate(path.join(dir, "other"), dir, OPS, "foreign");
  }, 180_000);

  afterAll(async () => {
    await mesh?.stop();
    await cleanup?.();
  });

  const tapFlags = (client: { cert: string; key: string }): string[] => ["--proxy-tap", api.tap!, "--cert", client.cert, "--key", client.key, "--ca", mesh.bundleFile];

  it("the proxy says where it serves tap; without a client certificate (openssl s_client) the handshake is refused: certificate required", async () => {
    expect(api.tap).toMatch(/^127\.0\.1\.52:\d+$/);
    expect(web.tap).toBeUndefined();
    const result = await runOpenssl(["s_client", "-connect", api.tap!, "-tls1_3", "-CAfile", mesh.bundleFile, "-ign_eof"], { input: "GET /tap HTTP/1.1\r\nhost: tap\r\n\r\n", timeoutMs: 15_000 });
    const said = result.stdout + result.stderr;
    expect(said).toMatch(/alert certificate required|certificate required/i);
    expect(said).not.toMatch(/HTTP\/1\.1 200/);
    // The CLI will not try without one.
    const usage = await runCli(["tap", "--proxy-tap", api.tap!]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--proxy-tap needs --cert, --key and --ca/);
  }, 60_000);

  it("a valid mesh identity --tap-allow does not name gets 403; a certificate from another mesh's issuer is refused by the handshake", async () => {
    const wrong = await runCli(["tap", ...tapFlags(intruder), "--max-events", "1"], { timeoutMs: 20_000 });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain(`HTTP 403: tap is not allowed for ${INTRUDER}`);
    const other = await runCli(["tap", ...tapFlags(foreign), "--max-events", "1"], { timeoutMs: 20_000 });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/no proxy could be tapped/);
    expect(other.stderr).not.toMatch(/HTTP 200/);
    // The proxy must present the identity asked for.
    const impostor = await runCli(["tap", ...tapFlags(ops), "--proxy-identity", WEB, "--max-events", "1"], { timeoutMs: 20_000 });
    expect(impostor.code).toBe(1);
    expect(impostor.stderr).toContain(`the proxy presents ${API}, not ${WEB}`);
  }, 60_000);

  it("an allowed identity streams a connection made during the test within a second: api's inbound mTLS connection from web, with its policy decision", async () => {
    const tap = await startTap([...tapFlags(ops), "--proxy-identity", API], 1);
    try {
      expect(tap.stderr.find((l) => l.includes('"tapping"'))).toContain('"workload":"default/api"');
      const sent = Date.now();
      expect((await curlThrough(web, "http://api.default.svc.cluster.local/")).status).toBe("200");
      const find = (probe: (l: TapLine) => boolean): Promise<TapLine> => eventually("event", async () => tap.lines.find(probe), 5_000, 20);
      const opened = await find((l) => l.type === "connection" && l.direction === "inbound" && l["peer"] === "src" && l.tls === "true" && l["phase"] === "open");
      expect(opened).toMatchObject({ proxy: { admin: api.tap, identity: API, workload: "default/api" }, peerId: WEB, policy: { allow: true, reason: "authenticated", server: { kind: "default" } } });
      // Within a second of the request (generous: the machine is shared).
      expect(opened.timeMs - sent).toBeLessThan(1_000 + 2_000);
      // The connection's policy event names the same client.
      const decision = await find((l) => l.type === "authz" && l["proto"] === "tcp");
      expect(decision).toMatchObject({ allow: true, peerAddr: opened["peerAddr"], peerId: WEB });
      // Metadata only: no event carries a body.
      expect(JSON.stringify(tap.lines)).not.toMatch(/"(body|payload|headers)"/);
    } finally {
      tap.child.kill("SIGTERM");
      expect(await tap.exited).toBe(0);
    }
  }, 60_000);
});
