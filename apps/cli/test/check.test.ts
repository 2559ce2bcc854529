import { copyFile, mkdir } from "node:fs/promises";
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
    expect(result.stdout).toMatch(/\[ok\] +trust anchor CN=root\.meshtls\.cluster\.local uses a supported algorithm \(ECDSA P-256\)/);
    expect(result.stdout).toMatch(/\[ok\] +issuer CN=identity\.meshtls\.cluster\.local chains to trust anchor CN=root\.meshtls\.cluster\.local/);
    expect(result.stdout).toMatch(/\[ok\] +.*issuer\.key is the private key of issuer/);
    expect(result.stdout).toMatch(/Status: healthy \(0 errors, 0 warnings\)/);

    const json = await check(path.join(certs, "ca.crt"), certs, "--json");
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as CheckReport;
    expect(report).toMatchObject({ ok: true, errors: 0, warnings: 0 });
    expect(report.findings.map((f) => f.check)).toEqual(
      expect.arrayContaining(["anchor-algorithm", "anchor-validity", "anchor-ca", "issuer-algorithm", "issuer-validity", "issuer-ca", "issuer-chain", "issuer-key-match"]),
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
    expect(result.stdout).toMatch(/\[ok\] +trust anchor CN=root\.meshtls\.cluster\.local is valid now/);
    expect(result.stdout).toMatch(/\[ok\] +issuer CN=identity\.meshtls\.cluster\.local chains to trust anchor/);
    expect(result.stdout).toMatch(/Status: FAILED \(1 error, 0 warnings\)/);
  });

  it("issuer not signed by the anchor: exit 1 with the chain reason", async () => {
    const a = path.join(dir, "anchor-a");
    const b = path.join(dir, "anchor-b");
    expect((await runCli(["certs", "create", "--out", a])).code).toBe(0);
    expect((await runCli(["certs", "create", "--out", b])).code).toBe(0);
    const result = await check(path.join(a, "ca.crt"), b);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/\[error\] issuer CN=identity\.meshtls\.cluster\.local does not chain to a trust anchor in the bundle: .+ \(ERR_CHAIN_[A-Z_]+\)/);
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
    expect(result.stdout).toMatch(/\[error\] trust anchor CN=root\.meshtls\.cluster\.local expired 1d .*ago/);
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
    expect(result.stdout).toMatch(/\[error\] .*mixed-issuer\/issuer\.key is not the private key of issuer CN=identity\.meshtls\.cluster\.local/);
    expect(result.stdout).toMatch(/Status: FAILED \(1 error, 0 warnings\)/);
  });

  it("missing files are errors, not crashes", async () => {
    const result = await check(path.join(dir, "nope.crt"), path.join(dir, "nope"));
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/\[error\] cannot read trust anchors .*nope\.crt: no such file or directory/);
    expect(result.stdout).toMatch(/\[error\] cannot read issuer key/);
    expect(result.stderr).toBe("");
  });
});
