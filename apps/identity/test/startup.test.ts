// Starting the built binary: strict boolean variables and a refused anchors file, as a user meets them.
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMaterial, identityBin, startIdentity, tempDir, TOKEN_ISSUER } from "./harness.ts";

const run = promisify(execFile);

/** Runs the binary expecting it to exit by itself; returns its exit code and stderr. */
async function exitOf(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [identityBin, ...args], { timeout: 20_000, env: { PATH: process.env["PATH"] ?? "", ...env } });
    return { code: 0, stderr: "" };
  } catch (error) {
    const e = error as { code?: number; stderr?: string };
    return { code: e.code ?? -1, stderr: e.stderr ?? "" };
  }
}

describe("meshtls-identity start", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const base = () => [
    "--issuer-dir", dir,
    "--token-jwks", path.join(dir, "token", "jwks.json"),
    "--token-issuer", TOKEN_ISSUER,
    "--listen", "127.0.0.1:0",
    "--admin", "127.0.0.1:0",
  ];

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("startup"));
    await createMaterial(dir);
  });
  afterAll(() => cleanup());

  it("MESHTLS_INSECURE_PLAINTEXT=false serves TLS; =0 too; =1 plaintext", async () => {
    for (const [value, tls] of [["false", true], ["0", true], ["1", false]] as const) {
      const proc = await startIdentity({ dir, env: { MESHTLS_INSECURE_PLAINTEXT: value } });
      try {
        const listening = await proc.waitForLog((l) => l["msg"] === "listening");
        expect(listening["tls"], value).toBe(tls);
      } finally {
        expect(await proc.stop()).toBe(0);
      }
    }
  });

  it("any other value exits 2 naming the variable", async () => {
    const result = await exitOf(["--trust-anchors", path.join(dir, "ca.crt"), ...base()], { MESHTLS_INSECURE_PLAINTEXT: "yes" });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('meshtls-identity: MESHTLS_INSECURE_PLAINTEXT: "yes" is not a boolean (use true, 1, false or 0)');
  });

  it("an empty or broken anchors file at start exits 1 with the reason", async () => {
    const empty = path.join(dir, "empty.crt");
    await writeFile(empty, "");
    const first = await exitOf(["--trust-anchors", empty, ...base()]);
    expect(first.code).toBe(1);
    expect(first.stderr).toMatch(/--trust-anchors: .*empty\.crt is empty/);
    const key = await exitOf(["--trust-anchors", path.join(dir, "issuer.key"), ...base()]);
    expect(key.code).toBe(1);
    expect(key.stderr).toMatch(/--trust-anchors: .*issuer\.key is not a PEM certificate bundle/);
  });
});
