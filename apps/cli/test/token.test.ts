import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { LOCAL_TOKEN_ISSUER } from "@meshtls/identity";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateTokenSigner } from "../src/commands/token-keygen.ts";
import { mintToken, serviceAccountUid } from "../src/commands/token-mint.ts";
import { CliError } from "../src/errors.ts";
import { createMemoryOutput } from "../src/output.ts";
import { cliBin, makeTempDir, run, runCli } from "./helpers.ts";

let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir());
});
afterAll(async () => {
  await cleanup();
});

async function readJwks(folder: string): Promise<JSONWebKeySet> {
  return JSON.parse(await readFile(path.join(folder, "jwks.json"), "utf8")) as JSONWebKeySet;
}

describe("meshtls token keygen (process)", () => {
  it("writes a 0600 PKCS#8 key and a public ES256 JWKS, and refuses to overwrite", async () => {
    const out = path.join(dir, "signer");
    const first = await runCli(["token", "keygen", "--out", out]);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    // The JWKS cannot say its issuer: keygen does, and it is the identity service's default --token-issuer.
    expect(first.stdout).toContain(`token issuer (iss): ${LOCAL_TOKEN_ISSUER} (what token mint writes, and meshtls-identity --token-issuer expects by default)`);
    const keyStat = await stat(path.join(out, "token-signer.key"));
    expect(keyStat.mode & 0o777).toBe(0o600);
    expect(await readFile(path.join(out, "token-signer.key"), "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const jwks = await readJwks(out);
    expect(jwks.keys).toHaveLength(1);
    const key = jwks.keys[0]!;
    expect(key).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig" });
    expect(typeof key.kid).toBe("string");
    expect(key.d).toBeUndefined();

    const again = await runCli(["token", "keygen", "--out", out]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^meshtls: refusing to overwrite .*token-signer\.key.*--force/);
    expect(again.stderr.trim().split("\n")).toHaveLength(1);
    expect((await readJwks(out)).keys[0]!.kid).toBe(key.kid);

    const forced = await runCli(["token", "keygen", "--out", out, "--force"]);
    expect(forced.code).toBe(0);
    expect((await readJwks(out)).keys[0]!.kid).not.toBe(key.kid);
  });
});

describe("meshtls token mint (process)", () => {
  it("prints an ES256 JWT that jose verifies against jwks.json with the projected-token claims", async () => {
    const out = path.join(dir, "mint");
    expect((await runCli(["token", "keygen", "--out", out])).code).toBe(0);
    const result = await runCli([
      "token", "mint", "--key", path.join(out, "token-signer.key"),
      "--namespace", "default", "--service-account", "web", "--lifetime", "1h",
    ]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const token = result.stdout.trim();
    const jwks = await readJwks(out);
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
      audience: "identity.l5d.io",
      issuer: "https://meshtls.local",
      algorithms: ["ES256"],
    });
    expect(protectedHeader.kid).toBe(jwks.keys[0]!.kid);
    expect(payload.sub).toBe("system:serviceaccount:default:web");
    expect(payload.aud).toEqual(["identity.l5d.io"]);
    expect(payload["kubernetes.io"]).toEqual({
      namespace: "default",
      serviceaccount: { name: "web", uid: serviceAccountUid("default", "web") },
    });
    expect(payload.exp! - payload.nbf!).toBe(3600);
    expect(Math.abs(payload.iat! - Date.now() / 1000)).toBeLessThan(60);

    // A different audience fails verification for the default one.
    const other = await runCli([
      "token", "mint", "--key", path.join(out, "token-signer.key"),
      "--namespace", "default", "--service-account", "web", "--audience", "other",
    ]);
    await expect(
      jwtVerify(other.stdout.trim(), createLocalJWKSet(jwks), { audience: "identity.l5d.io" }),
    ).rejects.toMatchObject({ code: "ERR_JWT_CLAIM_VALIDATION_FAILED" });
  });

  it("honours --not-before and --issuer", async () => {
    const out = path.join(dir, "nbf");
    expect((await runCli(["token", "keygen", "--out", out])).code).toBe(0);
    const result = await runCli([
      "token", "mint", "--key", path.join(out, "token-signer.key"), "--namespace", "ns1",
      "--service-account", "sa1", "--issuer", "https://example.test", "--not-before", "2030-01-01T00:00:00Z", "--lifetime", "10m",
    ]);
    expect(result.code).toBe(0);
    const { payload } = await jwtVerify(result.stdout.trim(), createLocalJWKSet(await readJwks(out)), {
      currentDate: new Date("2030-01-01T00:05:00Z"),
      issuer: "https://example.test",
    });
    expect(payload.nbf).toBe(Date.UTC(2030, 0, 1) / 1000);
    expect(payload.exp).toBe(Date.UTC(2030, 0, 1) / 1000 + 600);
  });

  it("rejects namespaces and service accounts that are not DNS-1123 labels with exit 2", async () => {
    const out = path.join(dir, "bad");
    expect((await runCli(["token", "keygen", "--out", out])).code).toBe(0);
    for (const [flag, value] of [
      ["--namespace", "Default"],
      ["--namespace", "a.b"],
      ["--service-account", "-web"],
      ["--service-account", "x".repeat(64)],
    ] as const) {
      const args = ["token", "mint", "--key", path.join(out, "token-signer.key"), "--namespace", "default", "--service-account", "web"];
      args[args.indexOf(flag) + 1] = value;
      const result = await runCli(args);
      expect(result.code, `${flag} ${value}`).toBe(2);
      expect(result.stderr).toMatch(new RegExp(`^meshtls: ${flag} .* is not a DNS-1123 label`));
      expect(result.stdout).toBe("");
    }
  });

  it("fails with exit 1 and one line when the key is not an ES256 key", async () => {
    const out = path.join(dir, "notkey");
    expect((await runCli(["token", "keygen", "--out", out])).code).toBe(0);
    const result = await runCli([
      "token", "mint", "--key", path.join(out, "jwks.json"), "--namespace", "default", "--service-account", "web",
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^meshtls: .*jwks\.json is not an ES256 \(P-256\) PKCS#8 PEM private key/);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("meshtls token mint --out (process)", () => {
  it("writes the token with mode 0600 even under umask 000, prints no token, refuses to overwrite without --force, and replaces by rename", async () => {
    const out = path.join(dir, "out");
    expect((await runCli(["token", "keygen", "--out", out])).code).toBe(0);
    const tokenFile = path.join(out, "tokens", "web.token");
    const mint = ["token", "mint", "--key", path.join(out, "token-signer.key"), "--namespace", "default", "--service-account", "web"];
    // umask 000 would make a plain write world-readable; the file must still be owner-only.
    const shell = (args: string[]): ReturnType<typeof run> =>
      run("sh", ["-c", 'umask 000 && exec "$0" "$@"', process.execPath, cliBin, ...args]);
    const first = await shell([...mint, "--out", tokenFile]);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.stdout).toBe(`wrote ${tokenFile} (mode 0600)\n`);
    const before = await stat(tokenFile);
    expect(before.mode & 0o777).toBe(0o600);
    const token = (await readFile(tokenFile, "utf8")).trim();
    expect(first.stdout).not.toContain(token.slice(0, 20));
    const { payload } = await jwtVerify(token, createLocalJWKSet(await readJwks(out)), { audience: "identity.l5d.io" });
    expect(payload.sub).toBe("system:serviceaccount:default:web");

    const again = await runCli([...mint, "--out", tokenFile]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^meshtls: refusing to overwrite .*web\.token \(use --force to replace\)\n$/);
    expect((await readFile(tokenFile, "utf8")).trim()).toBe(token);

    await new Promise((resolve) => setTimeout(resolve, 1_100)); // a new iat, so a new token
    const forced = await shell([...mint, "--service-account", "api", "--out", tokenFile, "--force"]);
    expect(forced.code).toBe(0);
    const after = await stat(tokenFile);
    expect(after.mode & 0o777).toBe(0o600);
    // Renamed into place, not rewritten: a reader holds either the old file or the whole new one.
    expect(after.ino).not.toBe(before.ino);
    const replaced = (await readFile(tokenFile, "utf8")).trim();
    expect(replaced).not.toBe(token);
    expect((await jwtVerify(replaced, createLocalJWKSet(await readJwks(out)))).payload.sub).toBe("system:serviceaccount:default:api");
    expect(await readdir(path.dirname(tokenFile))).toEqual(["web.token"]);
  });

  it("--force without --out is a usage error; an unwritable --out fails with one line", async () => {
    const out = path.join(dir, "out-usage");
    expect((await runCli(["token", "keygen", "--out", out])).code).toBe(0);
    const mint = ["token", "mint", "--key", path.join(out, "token-signer.key"), "--namespace", "default", "--service-account", "web"];
    const usage = await runCli([...mint, "--force"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toBe("meshtls: --force needs --out\n");
    expect(usage.stdout).toBe("");

    const blocked = await runCli([...mint, "--out", path.join(out, "jwks.json", "web.token")]);
    expect(blocked.code).toBe(1);
    expect(blocked.stderr).toMatch(/^meshtls: cannot create directory .*jwks\.json: .*\n$/);
    expect(blocked.stdout).toBe("");
  });
});

describe("token commands (in-process)", () => {
  it("mint uses the injected clock and the key's thumbprint as kid", async () => {
    const out = path.join(dir, "inproc");
    const sink = createMemoryOutput();
    await generateTokenSigner({ outDir: out }, sink);
    const now = new Date("2031-05-05T05:05:05Z");
    const token = await mintToken(
      { keyFile: path.join(out, "token-signer.key"), namespace: "emojivoto", serviceAccount: "voting", now: () => now },
      sink,
    );
    expect(sink.stdout.at(-1)).toBe(token);
    const jwks = await readJwks(out);
    expect(decodeProtectedHeader(token).kid).toBe(jwks.keys[0]!.kid);
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { currentDate: now, audience: "identity.l5d.io" });
    expect(payload.iat).toBe(now.getTime() / 1000);
    expect(payload.exp).toBe(now.getTime() / 1000 + 86_400);
    await expect(
      mintToken({ keyFile: path.join(out, "token-signer.key"), namespace: "ok", serviceAccount: "UPPER" }, sink),
    ).rejects.toBeInstanceOf(CliError);
  });
});

describe("meshtls token jwks (process)", () => {
  it("merges old + new into the file it reads, tokens of both keys verify against it; then the new key alone", async () => {
    const oldSigner = path.join(dir, "jwks-old");
    const newSigner = path.join(dir, "jwks-new");
    for (const out of [oldSigner, newSigner]) expect((await runCli(["token", "keygen", "--out", out])).code).toBe(0);
    const target = path.join(oldSigner, "jwks.json");
    const merged = await runCli(["token", "jwks", "--out", target, target, path.join(newSigner, "jwks.json"), target, "--force"]);
    expect(merged.code, merged.stderr).toBe(0);
    expect(merged.stdout).toMatch(/wrote .*jwks-old\/jwks\.json with 2 keys/);
    expect(merged.stderr).toMatch(/^note: skipped the second key with kid \S+ \(from .*jwks-old\/jwks\.json\)\n$/);
    expect((await stat(target)).mode & 0o777).toBe(0o644);
    const set = createLocalJWKSet(await readJwks(oldSigner));
    for (const signer of [oldSigner, newSigner]) {
      const minted = await runCli(["token", "mint", "--key", path.join(signer, "token-signer.key"), "--namespace", "default", "--service-account", "web"]);
      await expect(jwtVerify(minted.stdout.trim(), set)).resolves.toBeDefined();
    }
    expect((await runCli(["token", "jwks", "--out", target, path.join(newSigner, "jwks.json")])).stderr).toMatch(/refusing to overwrite/);
    expect((await runCli(["token", "jwks", "--out", target, path.join(newSigner, "jwks.json"), "--force"])).code).toBe(0);
    expect((await readJwks(oldSigner)).keys).toEqual((await readJwks(newSigner)).keys);
  });

  it("refuses a private key, a key without kid and a file that is not a JWKS, writing nothing", async () => {
    const out = path.join(dir, "jwks-refused.json");
    const signer = path.join(dir, "jwks-bad");
    expect((await runCli(["token", "keygen", "--out", signer])).code).toBe(0);
    const cases: [string, RegExp][] = [
      [JSON.stringify({ keys: [{ kty: "EC", kid: "x", d: "secret" }] }), /holds a private key/],
      [JSON.stringify({ keys: [{ kty: "EC" }] }), /a key has no "kid"/],
      [JSON.stringify({ nope: [] }), /is not a JWKS/],
      ["not json", /is not JSON/],
    ];
    for (const [content, message] of cases) {
      const input = path.join(dir, "jwks-input.json");
      await writeFile(input, content);
      const result = await runCli(["token", "jwks", "--out", out, path.join(signer, "jwks.json"), input]);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(message);
      await expect(stat(out)).rejects.toThrow(/ENOENT/);
    }
    expect((await runCli(["token", "jwks", "--out", out])).code).toBe(2);
  });
});
