import { copyFile, mkdir, readFile, rename, symlink, writeFile } from "node:fs/promises";
import { createIssuer, decodeCertificates, exportPrivateKey, importPrivateKey, pemEncode } from "@meshtls/pki";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCerts } from "../src/commands/certs-create.ts";
import type { CheckReport } from "../src/commands/check.ts";
import { createMemoryOutput } from "../src/output.ts";
import { makeTempDir, runCli } from "./helpers.ts";

const DAY_MS = 86_400_000;
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
});
afterAll(async () => {
  await cleanup();
});

/** `meshtls certs create` in-process, with a clock set `agoMs` in the past. */
async function createAt(name: string, agoMs: number, options: { anchorLifetimeMs?: number; issuerLifetimeMs?: number } = {}): Promise<string> {
  const out = path.join(dir, name);
  await createCerts({ outDir: out, now: () => new Date(Date.now() - agoMs), ...options }, createMemoryOutput());
  return out;
}

function check(anchors: string, issuerDir: string, ...flags: string[]): ReturnType<typeof runCli> {
  return runCli(["check", "--anchors", anchors, "--issuer-dir", issuerDir, ...flags]);
}

describe("meshtls check", () => {
  it("healthy: exit 0, every check ok", async () => {
    const certs = path.join(dir, "healthy");
    expect((await runCli(["certs", "create", "--out", certs])).code).toBe(0);
    const result = await check(path.join(certs, "ca.crt"), certs);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).not.toMatch(/\[(warn|error)\]/);
    expect(result.stdout).toMatch(/\[ok\] +trust anchor CN=root\.meshtls\.cluster\.local \d{4}-\d{2}-\d{2} [0-9a-f]{8} uses a supported algorithm \(ECDSA P-256\)/);
    expect(result.stdout).toMatch(/\[ok\] +issuer CN=identity\.meshtls\.cluster\.local would be loaded by the identity service: .*issuer\.key is its private key and a leaf it signs chains to the trust anchors/);
    expect(result.stdout).toMatch(/Status: healthy \(0 errors, 0 warnings\)/);

    const json = await check(path.join(certs, "ca.crt"), certs, "--json");
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as CheckReport;
    expect(report).toMatchObject({ ok: true, errors: 0, warnings: 0 });
    expect(report.findings.map((f) => f.check)).toEqual(
      expect.arrayContaining(["anchor-algorithm", "anchor-validity", "anchor-ca", "issuer-files", "issuer-read", "issuer-valid", "issuer-validity"]),
    );
  });

  it("issuer expiring within the warning window: exit 0 with a warning, exit 1 with --strict", async () => {
    const certs = path.join(dir, "expiring");
    expect((await runCli(["certs", "create", "--out", certs, "--issuer-lifetime", "240h"])).code).toBe(0);
    const result = await check(path.join(certs, "ca.crt"), certs);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/\[warn\] +issuer CN=identity\.meshtls\.cluster\.local expires in 9d 23h .*within the 60d warning window: rotate it/);
    expect(result.stdout).toMatch(/Status: healthy \(0 errors, 1 warning\)/);

    const strict = await check(path.join(certs, "ca.crt"), certs, "--strict");
    expect(strict.code).toBe(1);
    expect(strict.stdout).toMatch(/Status: FAILED \(0 errors, 1 warning; warnings fail under --strict\)/);

    const narrow = await check(path.join(certs, "ca.crt"), certs, "--strict", "--warn", "5d");
    expect(narrow.code).toBe(0);
  });

  it("expired issuer: exit 1 naming the issuer and when it expired", async () => {
    const certs = await createAt("expired-issuer", 400 * DAY_MS);
    const result = await check(path.join(certs, "ca.crt"), certs);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/\[error\] issuer CN=identity\.meshtls\.cluster\.local expired 3[45]d .*ago/);
    expect(result.stdout).toMatch(/\[ok\] +trust anchor CN=root\.meshtls\.cluster\.local \S+ \S+ is valid now/);
    expect(result.stdout).toMatch(/\[error\] the identity service would refuse this issuer: issuer certificate CN=identity\.meshtls\.cluster\.local expired at /);
    expect(result.stdout).toMatch(/Status: FAILED \(2 errors, 0 warnings\)/);
  });

  it("issuer not signed by the anchor: exit 1 with the chain reason", async () => {
    const a = path.join(dir, "anchor-a");
    const b = path.join(dir, "anchor-b");
    expect((await runCli(["certs", "create", "--out", a])).code).toBe(0);
    expect((await runCli(["certs", "create", "--out", b])).code).toBe(0);
    const result = await check(path.join(a, "ca.crt"), b);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/\[error\] the identity service would refuse this issuer: issuer CN=identity\.meshtls\.cluster\.local does not chain to the trust anchors: .+/);
    expect(result.stdout).toMatch(/Status: FAILED \(1 error, 0 warnings\)/);

    // After `certs bundle` merges both anchors, the same issuer chains again.
    const bundle = path.join(dir, "bundle.crt");
    expect((await runCli(["certs", "bundle", "--out", bundle, path.join(a, "ca.crt"), path.join(b, "ca.crt")])).code).toBe(0);
    expect((await check(bundle, b)).code).toBe(0);
  });

  it("expired anchor: exit 1 naming the anchor", async () => {
    const certs = await createAt("expired-anchor", 3 * DAY_MS, { anchorLifetimeMs: 2 * DAY_MS, issuerLifetimeMs: DAY_MS });
    const result = await check(path.join(certs, "ca.crt"), certs);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/\[error\] trust anchor CN=root\.meshtls\.cluster\.local \S+ \S+ expired 1d .*ago/);
  });

  it("mismatched key: exit 1 saying the key does not belong to the issuer", async () => {
    const a = path.join(dir, "key-a");
    const b = path.join(dir, "key-b");
    expect((await runCli(["certs", "create", "--out", a])).code).toBe(0);
    expect((await runCli(["certs", "create", "--out", b])).code).toBe(0);
    const mixed = path.join(dir, "mixed-issuer");
    await mkdir(mixed);
    await copyFile(path.join(a, "issuer.crt"), path.join(mixed, "issuer.crt"));
    await copyFile(path.join(b, "issuer.key"), path.join(mixed, "issuer.key"));
    const result = await check(path.join(a, "ca.crt"), mixed);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/\[error\] the identity service would refuse this issuer: .*mixed-issuer\/issuer\.key is not the private key of issuer certificate CN=identity\.meshtls\.cluster\.local/);
    expect(result.stdout).toMatch(/Status: FAILED \(1 error, 0 warnings\)/);
  });

  it("missing files are errors, not crashes", async () => {
    const result = await check(path.join(dir, "nope.crt"), path.join(dir, "nope"));
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/\[error\] cannot read trust anchors .*nope\.crt: no such file or directory/);
    expect(result.stdout).toMatch(/\[error\] cannot read issuer folder .*nope: no such file or directory/);
    expect(result.stderr).toBe("");
  });
});

describe("meshtls check --issuer-dir: the identity service's layouts", () => {
  let certs: string;
  beforeAll(async () => {
    certs = path.join(dir, "layouts-source");
    expect((await runCli(["certs", "create", "--out", certs])).code).toBe(0);
  });

  /** A folder holding the issuer under the given file names. */
  async function layout(name: string, certificate: string, key: string): Promise<string> {
    const folder = path.join(dir, name);
    await mkdir(folder);
    await copyFile(path.join(certs, "issuer.crt"), path.join(folder, certificate));
    await copyFile(path.join(certs, "issuer.key"), path.join(folder, key));
    return folder;
  }

  it.each([
    ["issuer.crt", "issuer.key", "meshtls certs create / certs issuer"],
    ["crt.pem", "key.pem", "Linkerd"],
    ["tls.crt", "tls.key", "cert-manager / kubernetes.io/tls Secret"],
  ])("%s + %s: healthy, read from those files", async (certificate, key, source) => {
    const folder = await layout(`layout-${certificate}`, certificate, key);
    const result = await check(path.join(certs, "ca.crt"), folder);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`[ok]    issuer folder ${folder}: ${certificate} + ${key} (${source} layout)`);
    expect(result.stdout).toContain(`issuer certificate: 1 certificate read from ${path.join(folder, certificate)}`);
    expect(result.stdout).toContain(`would be loaded by the identity service: ${path.join(folder, key)} is its private key`);
    expect(result.stdout).toMatch(/Status: healthy \(0 errors, 0 warnings\)/);
  });

  it("a Kubernetes Secret volume (..data symlinks, cert-manager's tls.crt, tls.key and ca.crt): read through ..data; ca.crt is informational", async () => {
    const folder = path.join(dir, "secret-volume");
    const version = path.join(folder, "..2026_11_29_00_00_00.000000001");
    await mkdir(version, { recursive: true });
    await copyFile(path.join(certs, "issuer.crt"), path.join(version, "tls.crt"));
    await copyFile(path.join(certs, "issuer.key"), path.join(version, "tls.key"));
    // An unrelated certificate as ca.crt: were it trusted, it could not make the issuer chain.
    const other = path.join(dir, "secret-volume-other");
    expect((await runCli(["certs", "create", "--out", other])).code).toBe(0);
    await copyFile(path.join(other, "ca.crt"), path.join(version, "ca.crt"));
    await symlink(path.basename(version), path.join(folder, "..data"));
    for (const name of ["tls.crt", "tls.key", "ca.crt"]) await symlink(path.join("..data", name), path.join(folder, name));

    const result = await check(path.join(certs, "ca.crt"), folder);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`issuer folder ${folder}: tls.crt + tls.key (cert-manager / kubernetes.io/tls Secret layout)`);
    expect(result.stdout).toContain(`${path.join(folder, "ca.crt")} is informational only: trust anchors come from --anchors`);
    expect(result.stdout).toMatch(/Status: healthy/);

    // The anchors come from --anchors only: the other anchor does not verify this issuer, even though it is the folder's ca.crt.
    const wrong = await check(path.join(other, "ca.crt"), folder);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(/\[error\] the identity service would refuse this issuer: issuer CN=identity\.meshtls\.cluster\.local does not chain to the trust anchors/);

    // A ..data swap (how the kubelet updates a Secret) is followed: the new issuer's key no longer matches the old anchor's issuer.
    const next = path.join(folder, "..2026_11_29_00_01_00.000000002");
    await mkdir(next);
    await copyFile(path.join(other, "issuer.crt"), path.join(next, "tls.crt"));
    await copyFile(path.join(other, "issuer.key"), path.join(next, "tls.key"));
    await symlink(path.basename(next), path.join(folder, "..data_tmp"));
    await rename(path.join(folder, "..data_tmp"), path.join(folder, "..data"));
    const swapped = await check(path.join(other, "ca.crt"), folder);
    expect(swapped.code).toBe(0);
    expect(swapped.stdout).toMatch(/would be loaded by the identity service/);
  });

  it("the first layout present wins, as in the identity service", async () => {
    const folder = await layout("layout-both", "issuer.crt", "issuer.key");
    await writeFile(path.join(folder, "tls.crt"), "not a certificate\n");
    await writeFile(path.join(folder, "tls.key"), "not a key\n");
    const result = await check(path.join(certs, "ca.crt"), folder);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("issuer.crt + issuer.key (meshtls certs create / certs issuer layout)");
  });

  it("half a layout, a dangling link, or no layout at all: exit 1 with a clear error", async () => {
    const half = path.join(dir, "layout-half");
    await mkdir(half);
    await copyFile(path.join(certs, "issuer.crt"), path.join(half, "crt.pem"));
    const halfResult = await check(path.join(certs, "ca.crt"), half);
    expect(halfResult.code).toBe(1);
    expect(halfResult.stdout).toContain(`[error] ${path.join(half, "crt.pem")} exists but ${path.join(half, "key.pem")} does not: the Linkerd layout needs both`);

    const dangling = path.join(dir, "layout-dangling");
    await mkdir(dangling);
    await symlink("..data/tls.crt", path.join(dangling, "tls.crt"));
    await symlink("..data/tls.key", path.join(dangling, "tls.key"));
    const empty = path.join(dir, "layout-none");
    await mkdir(empty);
    await copyFile(path.join(certs, "ca.crt"), path.join(empty, "ca.crt"));
    for (const folder of [dangling, empty]) {
      const result = await check(path.join(certs, "ca.crt"), folder);
      expect(result.stderr).toBe("");
      expect(result.code).toBe(1);
      expect(result.stdout).toContain(
        `[error] no issuer in ${folder}: expected issuer.crt + issuer.key (meshtls certs create / certs issuer), or crt.pem + key.pem (Linkerd), or tls.crt + tls.key (cert-manager / kubernetes.io/tls Secret)`,
      );
      expect(result.stdout).toMatch(/Status: FAILED \(1 error, 0 warnings\)/);
    }

    const file = await check(path.join(certs, "ca.crt"), path.join(certs, "issuer.crt"));
    expect(file.code).toBe(1);
    expect(file.stdout).toMatch(/\[error\] issuer folder .*issuer\.crt is not a directory/);
  });

  it("a second layout beside the first is ignored by the identity service: a warning naming its files (exit 1 under --strict)", async () => {
    const certs = path.join(dir, "shadowed");
    expect((await runCli(["certs", "create", "--out", certs])).code).toBe(0);
    await copyFile(path.join(certs, "issuer.crt"), path.join(certs, "tls.crt"));
    await copyFile(path.join(certs, "issuer.key"), path.join(certs, "tls.key"));
    const result = await check(path.join(certs, "ca.crt"), certs);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`[warn]  ${path.join(certs, "tls.crt")}, ${path.join(certs, "tls.key")} are ignored: issuer.crt + issuer.key come first and the identity service loads those; remove one layout`);
    expect((await check(path.join(certs, "ca.crt"), certs, "--strict")).code).toBe(1);
  });

  it("an issuer the identity service refuses fails check too: an issuer signed by another issuer (path length 0) chains as a CA but cannot sign a leaf that verifies", async () => {
    const certs = path.join(dir, "issuer-under-issuer-source");
    expect((await runCli(["certs", "create", "--out", certs])).code).toBe(0);
    const [upper] = decodeCertificates(await readFile(path.join(certs, "issuer.crt"), "utf8"));
    const upperKey = await importPrivateKey(await readFile(path.join(certs, "issuer.key"), "utf8"));
    const lower = await createIssuer({ anchor: { certificate: upper!, privateKey: upperKey.privateKey }, commonName: "lower.meshtls.cluster.local" });
    const folder = path.join(dir, "issuer-under-issuer");
    await mkdir(folder);
    await writeFile(path.join(folder, "issuer.crt"), pemEncode("CERTIFICATE", lower.certificate) + pemEncode("CERTIFICATE", upper!));
    await writeFile(path.join(folder, "issuer.key"), await exportPrivateKey(lower.keyPair.privateKey));

    const result = await check(path.join(certs, "ca.crt"), folder);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/\[error\] the identity service would refuse this issuer: issuer CN=lower\.meshtls\.cluster\.local does not chain to the trust anchors: intermediate "CN=identity\.meshtls\.cluster\.local" allows 0 intermediate\(s\) below it/);
    expect(result.stdout).toMatch(/Status: FAILED \(1 error, 0 warnings\)/);

    // Under --candidate-anchors the issuer is judged by the identity service's own checks too, not by a chain check of the issuer alone.
    const candidate = await runCli(["check", "--anchors", path.join(certs, "ca.crt"), "--issuer-dir", folder, "--candidate-anchors", path.join(certs, "ca.crt")]);
    expect(candidate.code).toBe(1);
    expect(candidate.stdout).not.toMatch(/\[ok\] +issuer .*candidate/);
    expect(candidate.stdout).toMatch(/\[error\] issuer CN=lower\.meshtls\.cluster\.local .*does NOT chain to the candidate .*: issuer CN=lower\.meshtls\.cluster\.local does not chain to the trust anchors: intermediate "CN=identity\.meshtls\.cluster\.local" allows 0 intermediate\(s\) below it/);
  });
});
