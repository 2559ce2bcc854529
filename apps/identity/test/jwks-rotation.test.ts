// Token signer key rotation against the built binary, without a restart: the
// --token-jwks file goes A → A+B → B; tokens from B are accepted as soon as B
// is published and tokens from A refused once A is removed; a broken file is
// refused (counted) and B keeps working. With --workers, every worker follows.
import { execFile } from "node:child_process";
import { readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import type { IdentityClient } from "@meshtls/api";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { certify, cli, createMaterial, identityBin, identityClient, identityFor, mintToken, opensslCsr, startIdentity, tempDir, TOKEN_ISSUER } from "./harness.ts";
import type { IdentityProcess } from "./harness.ts";

const identity = identityFor("web");

describe("token signer key rotation without restart", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let jwksFile: string;
  let jwksA: { keys: Record<string, unknown>[] };
  let jwksB: { keys: Record<string, unknown>[] };
  let csr: Buffer;
  let tokenA: Buffer;
  let tokenB: Buffer;
  let proc: IdentityProcess | undefined;
  const clients: IdentityClient[] = [];

  const publish = async (content: string) => {
    // Written aside, then renamed in: what `mv` and rollout tools do.
    await writeFile(`${jwksFile}.new`, content);
    await rename(`${jwksFile}.new`, jwksFile);
  };
  const both = () => JSON.stringify({ keys: [...jwksA.keys, ...jwksB.keys] });

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("jwks"));
    await createMaterial(dir); // signer A: token/token-signer.key, token/jwks.json
    await cli(["token", "keygen", "--out", path.join(dir, "signer-b")]);
    jwksFile = path.join(dir, "token", "jwks.json");
    jwksA = JSON.parse(await readFile(jwksFile, "utf8")) as typeof jwksA;
    jwksB = JSON.parse(await readFile(path.join(dir, "signer-b", "jwks.json"), "utf8")) as typeof jwksB;
    csr = (await opensslCsr(dir, { san: `DNS:${identity}` })).der;
    tokenA = Buffer.from(await mintToken(dir, "default", "web"));
    tokenB = Buffer.from(
      (await cli(["token", "mint", "--key", path.join(dir, "signer-b", "token-signer.key"), "--namespace", "default", "--service-account", "web"])).trim(),
    );
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await proc?.stop();
    proc = undefined;
    await publish(JSON.stringify(jwksA));
  });
  afterAll(() => cleanup());

  /** A fresh connection (with --workers, the primary hands each to the next worker). */
  const request = async (p: IdentityProcess, token: Buffer) => {
    const client = await identityClient(dir, p.grpcAddress);
    clients.push(client);
    return certify(client, { identity, token, certificateSigningRequest: csr });
  };
  const refusal = async (p: IdentityProcess, token: Buffer) => (await request(p, token).catch((e: unknown) => e)) as ServiceError;
  const metric = async (p: IdentityProcess, name: string) => {
    const text = await (await fetch(`${p.adminUrl}/metrics`)).text();
    return text.split("\n").filter((l) => l.startsWith(name)).join("\n");
  };
  const kidOf = (set: { keys: Record<string, unknown>[] }) => set.keys[0]!["kid"];

  it("A → A+B → B in the same process; a broken file is refused and counted, B keeps working", async () => {
    proc = await startIdentity({ dir, args: ["--token-jwks-poll-interval", "500ms"] });
    const p = proc;
    const pid = p.child.pid;
    const after = (index: number, msg: string) => p.waitForLog((l) => p.logs.indexOf(l) >= index && l["msg"] === msg);

    // 1. Signer A only: A's token is accepted, B's refused as an unknown key.
    expect((await request(p, tokenA)).leafCertificate.length).toBeGreaterThan(0);
    const unknownB = await refusal(p, tokenB);
    expect(unknownB.code).toBe(status.UNAUTHENTICATED);
    expect(unknownB.details).toMatch(/signed by a key that is not in the trusted JWKS/);
    expect(await metric(p, "identity_token_jwks_keys ")).toBe("identity_token_jwks_keys 1");

    // 2. A+B: B's token accepted without a restart, A's still.
    let mark = p.logs.length;
    await publish(both());
    expect(await after(mark, "token JWKS loaded")).toMatchObject({ keys: 2, kids: [kidOf(jwksA), kidOf(jwksB)] });
    expect((await request(p, tokenB)).leafCertificate.length).toBeGreaterThan(0);
    expect((await request(p, tokenA)).leafCertificate.length).toBeGreaterThan(0);
    expect(await metric(p, "identity_token_jwks_keys ")).toBe("identity_token_jwks_keys 2");

    // 3. B only: A's token is refused once A is removed.
    mark = p.logs.length;
    await publish(JSON.stringify(jwksB));
    expect(await after(mark, "token JWKS loaded")).toMatchObject({ keys: 1, kids: [kidOf(jwksB)] });
    const removedA = await refusal(p, tokenA);
    expect(removedA.code).toBe(status.UNAUTHENTICATED);
    expect(removedA.details).toMatch(/signed by a key that is not in the trusted JWKS/);
    expect((await request(p, tokenB)).leafCertificate.length).toBeGreaterThan(0);

    // 4. Broken files are refused with the reason; B stays in use, A stays out.
    const broken: [string, string][] = [
      ["{\"keys\": [", "bad_json"],
      [JSON.stringify({ keys: [] }), "empty"],
      [await readFile(path.join(dir, "signer-b", "token-signer.key"), "utf8"), "bad_json"],
    ];
    for (const [content, rejection] of broken) {
      mark = p.logs.length;
      await publish(content);
      expect(await after(mark, "token JWKS replacement refused; keeping the current set")).toMatchObject({ rejection, keeping: 1 });
      expect((await request(p, tokenB)).leafCertificate.length).toBeGreaterThan(0);
      expect((await refusal(p, tokenA)).code).toBe(status.UNAUTHENTICATED);
    }
    const rejected = await metric(p, "identity_token_jwks_rejected_total");
    expect(rejected).toMatch(/^identity_token_jwks_rejected_total\{reason="bad_json"\} 2$/m);
    expect(rejected).toMatch(/^identity_token_jwks_rejected_total\{reason="empty"\} 1$/m);
    expect(await metric(p, "identity_token_jwks_loaded_total")).toBe("identity_token_jwks_loaded_total 3");
    expect(await metric(p, "identity_token_jwks_keys ")).toBe("identity_token_jwks_keys 1");

    expect(p.child.exitCode).toBeNull();
    expect(p.child.pid).toBe(pid);
    expect(p.logs.filter((l) => l["msg"] === "listening")).toHaveLength(1);
  }, 90_000);

  it("with --workers 2, each worker follows the file", async () => {
    proc = await startIdentity({ dir, args: ["--workers", "2", "--token-jwks-poll-interval", "500ms"] });
    const p = proc;
    const mark = p.logs.length;
    await publish(both());
    // Both workers load the new set themselves.
    await p.waitForLog((l) => p.logs.indexOf(l) >= mark && l["msg"] === "token JWKS loaded" && l["worker"] === 1);
    await p.waitForLog((l) => p.logs.indexOf(l) >= mark && l["msg"] === "token JWKS loaded" && l["worker"] === 2);
    // Four connections: round-robin over both workers; each accepts B.
    for (let i = 0; i < 4; i++) expect((await request(p, tokenB)).leafCertificate.length).toBeGreaterThan(0);
    expect(await metric(p, "identity_token_jwks_keys ")).toBe("identity_token_jwks_keys 2");
    // Two loads per worker (start, A+B), summed by the primary.
    expect(await metric(p, "identity_token_jwks_loaded_total")).toBe("identity_token_jwks_loaded_total 4");
  }, 60_000);

  it("a refused JWKS file at start is an error with the reason (exit 1)", async () => {
    await publish(JSON.stringify({ keys: [] }));
    const run = promisify(execFile);
    const result = await run(
      process.execPath,
      [identityBin, "--trust-anchors", path.join(dir, "ca.crt"), "--issuer-dir", dir, "--token-jwks", jwksFile, "--token-issuer", TOKEN_ISSUER, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
      { timeout: 20_000 },
    ).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code?: number; stderr?: string }) => ({ code: e.code ?? -1, stderr: e.stderr ?? "" }),
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`--token-jwks ${jwksFile}: ${jwksFile} holds no keys`);
  });
});
