// Guards before a rollout, against stand-ins for running parts on loopback: a
// small HTTP server answering a proxy's admin `GET /identity` and `POST /renew`
// (the meshtls-proxy admin API), and a TLS server presenting an identity
// service's chain. Certificates come from the CLI itself (certs create, certs leaf).
import { readFile, stat } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CheckReport } from "../src/commands/check.ts";
import { makeTempDir, runCli, runOpenssl } from "./helpers.ts";

const WEB = "web.default.serviceaccount.identity.meshtls.cluster.local";
const IDENTITY = "identity.meshtls.serviceaccount.identity.meshtls.cluster.local";

let dir: string;
let cleanup: () => Promise<void>;
/** Anchor A (the one in use), anchor B (the new one), each with an issuer. */
let a: string;
let b: string;
/** What the fake proxy answers on /identity and /renew; tests change it. */
const fake = {
  identityStatus: 200,
  identity: {} as Record<string, unknown>,
  renewStatus: 200,
  renewBody: {} as Record<string, unknown>,
  renewCalls: 0,
};
let proxyAdmin: string;
let proxyServer: http.Server;
let identityServer: tls.Server;
let identityAddr: string;

async function cli(args: string[]): ReturnType<typeof runCli> {
  return runCli(args, { timeoutMs: 30_000 });
}

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
  a = path.join(dir, "certs");
  b = path.join(dir, "certs-new");
  for (const out of [a, b]) expect((await cli(["certs", "create", "--out", out])).code).toBe(0);
  // The workload's certificate and the identity service's serving certificate, both under A.
  expect((await cli(["certs", "leaf", "--identity", WEB, "--issuer-dir", a, "--out", path.join(dir, "web")])).code).toBe(0);
  expect((await cli(["certs", "leaf", "--identity", IDENTITY, "--issuer-dir", a, "--out", path.join(dir, "identity")])).code).toBe(0);
  const webChain = await readFile(path.join(dir, "web", "leaf.crt"), "utf8");
  const anchorsA = await readFile(path.join(a, "ca.crt"), "utf8");
  fake.identity = { identity: WEB, notAfter: new Date(Date.now() + 3_600_000).toISOString(), certificateChainPem: webChain, trustAnchorsPem: anchorsA };

  proxyServer = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/identity") {
      res.writeHead(fake.identityStatus, { "content-type": "application/json" }).end(JSON.stringify(fake.identity));
    } else if (req.url === "/ready") {
      res.end("ready\n");
    } else if (req.url === "/metrics") {
      res.end(`identity_cert_expiration_timestamp_seconds ${Math.floor(new Date(String(fake.identity.notAfter)).getTime() / 1000)}\nidentity_cert_refreshes_total{result="ok"} 1\n`);
    } else if (req.method === "POST" && req.url === "/renew") {
      fake.renewCalls++;
      res.writeHead(fake.renewStatus, { "content-type": "application/json" }).end(JSON.stringify(fake.renewBody));
    } else {
      res.writeHead(404).end("not found\n");
    }
  });
  await new Promise<void>((resolve) => proxyServer.listen(0, "127.0.0.1", resolve));
  proxyAdmin = `127.0.0.1:${(proxyServer.address() as AddressInfo).port}`;

  identityServer = tls.createServer({
    cert: await readFile(path.join(dir, "identity", "leaf.crt"), "utf8"),
    key: await readFile(path.join(dir, "identity", "leaf.key"), "utf8"),
    ALPNProtocols: ["h2"],
  });
  identityServer.on("secureConnection", (socket) => socket.end());
  await new Promise<void>((resolve) => identityServer.listen(0, "127.0.0.1", resolve));
  identityAddr = `127.0.0.1:${(identityServer.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  await new Promise((resolve) => proxyServer?.close(resolve));
  await new Promise((resolve) => identityServer?.close(resolve));
  await cleanup();
});

describe("meshtls certs bundle, told where certificates run", () => {
  it("refuses a bundle without the anchor in use (writes nothing, exit 1), and says which part would break", async () => {
    const out = path.join(dir, "bundle-b-only.crt");
    const result = await cli(["certs", "bundle", "--out", out, path.join(b, "ca.crt"), "--proxy-admin", proxyAdmin, "--identity-addr", identityAddr]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^meshtls: refusing to write .*bundle-b-only\.crt: running certificates would not verify under it/);
    expect(result.stderr).toContain(`proxy ${proxyAdmin} (${WEB}) would no longer verify`);
    expect(result.stderr).toContain(`identity service ${identityAddr} (${IDENTITY}) would no longer verify`);
    expect(result.stderr).toMatch(/--allow-drop/);
    await expect(stat(out)).rejects.toThrow(/ENOENT/);
  });

  it("writes old + new, naming the anchor each running certificate chains to", async () => {
    const out = path.join(dir, "bundle-ab.crt");
    const result = await cli(["certs", "bundle", "--out", out, path.join(a, "ca.crt"), path.join(b, "ca.crt"), "--proxy-admin", proxyAdmin, "--identity-addr", identityAddr]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`running: proxy ${proxyAdmin} \\(${WEB.replaceAll(".", "\\.")}\\) chains to CN=root\\.meshtls\\.cluster\\.local \\d{4}-\\d{2}-\\d{2} [0-9a-f]{8} \\(sha256:[0-9a-f]{12}\\), kept by this bundle`));
    expect(result.stdout).toMatch(/wrote .*bundle-ab\.crt with 2 trust anchors/);
  });

  it("--allow-drop writes the refused bundle with a warning; an unreachable proxy is refused too (fail closed)", async () => {
    const out = path.join(dir, "bundle-dropped.crt");
    const forced = await cli(["certs", "bundle", "--out", out, path.join(b, "ca.crt"), "--proxy-admin", proxyAdmin, "--allow-drop"]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toMatch(/^warning: writing anyway \(--allow-drop\); rolling this bundle out breaks these running certificates:\n {2}proxy .* would no longer verify/);
    expect((await stat(out)).isFile()).toBe(true);

    const closed = await new Promise<number>((resolve) => {
      const s = http.createServer().listen(0, "127.0.0.1", () => {
        const port = (s.address() as AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const gone = await cli(["certs", "bundle", "--out", path.join(dir, "bundle-gone.crt"), path.join(a, "ca.crt"), "--proxy-admin", `127.0.0.1:${closed}`]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/proxy 127\.0\.0\.1:\d+: cannot read its certificate \(cannot reach 127\.0\.0\.1:\d+: ECONNREFUSED\)/);
  });
});

describe("meshtls check with proxies' /identity and a candidate bundle", () => {
  it("names the issuer and anchor each proxy's certificate chains to, and whether it has loaded the bundle", async () => {
    const result = await cli(["check", "--anchors", path.join(a, "ca.crt"), "--proxy-admin", proxyAdmin, "--json"]);
    const report = JSON.parse(result.stdout) as CheckReport;
    const chain = report.findings.find((f) => f.check === "proxy-chain");
    expect(chain).toMatchObject({ status: "ok" });
    expect(chain!.message).toMatch(new RegExp(`^proxy ${proxyAdmin} holds ${WEB.replaceAll(".", "\\.")}: issuer CN=identity\\.meshtls\\.cluster\\.local \\(sha256:[0-9a-f]{12}\\), trust anchor CN=root\\.meshtls\\.cluster\\.local \\S+ [0-9a-f]{8} \\(sha256:[0-9a-f]{12}\\)$`));
    expect(report.findings.find((f) => f.check === "proxy-anchors")).toMatchObject({ status: "ok", message: `proxy ${proxyAdmin} trusts exactly the 1 anchor of ${path.join(a, "ca.crt")}` });

    // A bundle the proxy has not loaded yet: an anchor it lacks is an error.
    const bundle = path.join(dir, "bundle-check.crt");
    expect((await cli(["certs", "bundle", "--out", bundle, path.join(a, "ca.crt"), path.join(b, "ca.crt")])).code).toBe(0);
    const notLoaded = await cli(["check", "--anchors", bundle, "--proxy-admin", proxyAdmin]);
    expect(notLoaded.code).toBe(1);
    expect(notLoaded.stdout).toMatch(new RegExp(`\\[error\\] proxy ${proxyAdmin} does not trust 1 of the 2 anchors of .*bundle-check\\.crt yet \\(it holds 1\\): it has not loaded that bundle`));
  });

  it("after the outage rollout (the proxy trusts B, its certificate chains to A), plain check --proxy-admin fails", async () => {
    const before = fake.identity;
    fake.identity = { ...before, trustAnchorsPem: await readFile(path.join(b, "ca.crt"), "utf8") };
    try {
      const result = await cli(["check", "--proxy-admin", proxyAdmin]);
      expect(result.code).toBe(1);
      expect(result.stdout).toMatch(new RegExp(`\\[error\\] proxy ${proxyAdmin} holds ${WEB.replaceAll(".", "\\.")}, which does NOT verify under its own trust bundle: .*peers with that bundle refuse it`));
    } finally {
      fake.identity = before;
    }
  });

  it("--candidate-anchors: exit 1 when a running certificate does not verify under it, 0 when all do", async () => {
    const bad = await cli(["check", "--candidate-anchors", path.join(b, "ca.crt"), "--proxy-admin", proxyAdmin, "--identity-addr", identityAddr, "--issuer-dir", a, "--anchors", path.join(a, "ca.crt")]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(new RegExp(`\\[error\\] proxy ${proxyAdmin}'s certificate for ${WEB.replaceAll(".", "\\.")} does NOT verify under the candidate .*certs-new/ca\\.crt: .*rolling it out now would break its connections`));
    expect(bad.stdout).toMatch(/\[error\] identity service .*'s certificate for identity\.meshtls\.serviceaccount\.identity\.meshtls\.cluster\.local does NOT verify under the candidate/);
    expect(bad.stdout).toMatch(/\[error\] issuer CN=identity\.meshtls\.cluster\.local \(sha256:[0-9a-f]{12}\) does NOT chain to the candidate/);

    const bundle = path.join(dir, "bundle-candidate.crt");
    expect((await cli(["certs", "bundle", "--out", bundle, path.join(a, "ca.crt"), path.join(b, "ca.crt")])).code).toBe(0);
    const good = await cli(["check", "--candidate-anchors", bundle, "--proxy-admin", proxyAdmin, "--identity-addr", identityAddr]);
    expect(good.stdout).toMatch(new RegExp(`\\[ok\\] +proxy ${proxyAdmin}'s certificate for ${WEB.replaceAll(".", "\\.")} verifies under the candidate .*bundle-candidate\\.crt \\(issuer .*, trust anchor CN=root`));
    expect(good.stdout).toMatch(/Status: healthy/);
    expect(good.code).toBe(0);

    expect((await cli(["check", "--candidate-anchors", bundle, "--anchors", bundle])).code).toBe(2);
  });

  it("a proxy without /identity: a warning for check, an error under --candidate-anchors (cannot tell: fail closed)", async () => {
    const old = http.createServer((req, res) => {
      if (req.url === "/ready") res.end("ready\n");
      else if (req.url === "/metrics") res.end(`identity_cert_expiration_timestamp_seconds ${Math.floor(Date.now() / 1000) + 3600}\n`);
      else res.writeHead(404).end("not found\n");
    });
    await new Promise<void>((resolve) => old.listen(0, "127.0.0.1", resolve));
    const address = `127.0.0.1:${(old.address() as AddressInfo).port}`;
    try {
      const plain = await cli(["check", "--proxy-admin", address]);
      expect(plain.code).toBe(0);
      expect(plain.stdout).toMatch(/\[warn\] +proxy .* has no \/identity endpoint/);
      const candidate = await cli(["check", "--proxy-admin", address, "--candidate-anchors", path.join(a, "ca.crt")]);
      expect(candidate.code).toBe(1);
      expect(candidate.stdout).toMatch(/\[error\] cannot tell whether every running certificate verifies under the candidate/);
    } finally {
      await new Promise((resolve) => old.close(resolve));
    }
  });

  it("--wait repeats the checks until the proxy has loaded the bundle", async () => {
    const bundle = path.join(dir, "bundle-wait.crt");
    expect((await cli(["certs", "bundle", "--out", bundle, path.join(a, "ca.crt"), path.join(b, "ca.crt")])).code).toBe(0);
    const before = fake.identity.trustAnchorsPem;
    const loaded = setTimeout(() => {
      void readFile(bundle, "utf8").then((pem) => (fake.identity = { ...fake.identity, trustAnchorsPem: pem }));
    }, 2_500);
    try {
      const started = Date.now();
      const result = await cli(["check", "--anchors", bundle, "--proxy-admin", proxyAdmin, "--wait", "20s"]);
      expect(result.stdout).toMatch(/trusts exactly the 2 anchors/);
      expect(result.code).toBe(0);
      expect(Date.now() - started).toBeGreaterThan(2_000);
    } finally {
      clearTimeout(loaded);
      fake.identity = { ...fake.identity, trustAnchorsPem: before };
    }
    const never = await cli(["check", "--anchors", bundle, "--proxy-admin", proxyAdmin, "--wait", "2s"]);
    expect(never.code).toBe(1);
    expect(never.stdout).toMatch(/Status: FAILED \(1 error, 0 warnings; still failing after --wait 2s\)/);
    expect((await cli(["check", "--anchors", bundle, "--wait", "2h"])).code).toBe(2);
  });
});

describe("meshtls renew", () => {
  it("POSTs /renew and prints the new expiry with the issuer and anchor; a refusal exits 1", async () => {
    const notAfter = new Date(Date.now() + 86_400_000).toISOString();
    fake.renewStatus = 200;
    fake.renewBody = { notAfter };
    const calls = fake.renewCalls;
    const result = await cli(["renew", "--proxy-admin", proxyAdmin]);
    expect(result.code, result.stderr).toBe(0);
    expect(fake.renewCalls).toBe(calls + 1);
    expect(result.stdout).toMatch(new RegExp(`^proxy ${proxyAdmin}: renewed; the new certificate expires in 23h 59m( \\d+s)? \\(at ${notAfter.replaceAll(".", "\\.")}\\), issuer CN=identity\\.meshtls\\.cluster\\.local \\(sha256:[0-9a-f]{12}\\), trust anchor CN=root`));

    fake.renewStatus = 503;
    fake.renewBody = { error: "Certify at 127.0.0.1:8080 failed: unavailable" };
    const refused = await cli(["renew", "--proxy-admin", proxyAdmin, "--proxy-admin", proxyAdmin]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(/NOT renewed: HTTP 503: Certify at 127\.0\.0\.1:8080 failed: unavailable/);
    expect(refused.stderr).toMatch(/^meshtls: 2 of 2 proxies were not renewed/);
    expect((await cli(["renew"])).code).toBe(2);
    expect((await cli(["renew", "--proxy-admin", "nope"])).code).toBe(2);
    expect((await cli(["renew", "--proxy-admin", proxyAdmin, "--timeout", "500ms"])).code).toBe(2);
  });
});

describe("meshtls certs leaf (testing only)", () => {
  it("writes a short-lived leaf + issuer chain and a 0600 key that openssl verifies for clientAuth and serverAuth", async () => {
    const leaf = path.join(dir, "web", "leaf.crt");
    expect((await stat(path.join(dir, "web", "leaf.key"))).mode & 0o777).toBe(0o600);
    const chain = await readFile(leaf, "utf8");
    expect(chain.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    for (const purpose of ["sslclient", "sslserver"]) {
      const verify = await runOpenssl(["verify", "-x509_strict", "-purpose", purpose, "-CAfile", path.join(a, "ca.crt"), "-untrusted", leaf, leaf]);
      expect(verify.code, verify.stderr).toBe(0);
    }
    const inspected = await cli(["inspect", leaf, "--anchors", path.join(a, "ca.crt"), "--json"]);
    expect(inspected.code).toBe(0);
    const json = JSON.parse(inspected.stdout) as { certificates: { expiresInSeconds: number; san: { dns: string[]; uri: string[] } }[]; verification: { ok: boolean } };
    expect(json.certificates[0]!.san).toMatchObject({ dns: [WEB], uri: ["spiffe://cluster.local/ns/default/sa/web"] });
    expect(json.certificates[0]!.expiresInSeconds).toBeGreaterThan(3_500);
    expect(json.certificates[0]!.expiresInSeconds).toBeLessThanOrEqual(3_600 + 20);
    expect(json.verification).toEqual({ ok: true, anchor: expect.stringMatching(/^CN=root\.meshtls\.cluster\.local /) as unknown });

    const made = await cli(["certs", "leaf", "--identity", WEB, "--issuer-dir", a, "--out", path.join(dir, "leaf-2"), "--lifetime", "10m"]);
    expect(made.stdout).toMatch(/TEST certificate for web\.default\..* expires in 10m \d+s: for testing by hand, not for workloads/);
    expect((await cli(["certs", "leaf", "--identity", WEB, "--issuer-dir", a, "--out", path.join(dir, "leaf-3"), "--lifetime", "25h"])).code).toBe(2);
    expect((await cli(["certs", "leaf", "--identity", "not a name", "--issuer-dir", a, "--out", path.join(dir, "leaf-4")])).code).toBe(2);
    const again = await cli(["certs", "leaf", "--identity", WEB, "--issuer-dir", a, "--out", path.join(dir, "leaf-2")]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/refusing to overwrite/);
    const help = await cli(["certs", "leaf", "--help"]);
    expect(help.stdout).toMatch(/TESTING ONLY/);
  });
});

describe("meshtls inspect FILE --anchors", () => {
  it("exit 0 when the chain verifies to an anchor of the bundle, 1 when it does not", async () => {
    const leaf = path.join(dir, "web", "leaf.crt");
    const ok = await cli(["inspect", leaf, "--anchors", path.join(a, "ca.crt")]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/Trust: chains to trust anchor CN=root\.meshtls\.cluster\.local \S+ [0-9a-f]{8} \(.*certs\/ca\.crt\)/);
    const other = await cli(["inspect", leaf, "--anchors", path.join(b, "ca.crt")]);
    expect(other.code).toBe(1);
    expect(other.stdout).toMatch(/Trust: does NOT verify against .*certs-new\/ca\.crt: .*\(ERR_CHAIN_/);
  });
});

describe("trust anchors tell themselves apart", () => {
  it("each anchor's CN carries its creation date and key id", async () => {
    const names = await Promise.all([a, b].map(async (d) => (await runOpenssl(["x509", "-in", path.join(d, "ca.crt"), "-noout", "-subject"])).stdout.trim()));
    const today = new Date().toISOString().slice(0, 10);
    for (const name of names) expect(name).toMatch(new RegExp(`^subject=CN ?= ?root\\.meshtls\\.cluster\\.local ${today} [0-9a-f]{8}$`));
    expect(names[0]).not.toBe(names[1]);
  });
});
