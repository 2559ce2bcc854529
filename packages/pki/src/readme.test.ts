// Runs the example that opens README.md, exactly as written there.
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { tmpdir } from "node:os";
import { afterEach, expect, it, vi } from "vitest";
import { repoRoot } from "./test-helpers.ts";

afterEach(() => {
  vi.restoreAllMocks();
});

it("the README example runs and verifies the chain it built", async () => {
  const readme = readFileSync(path.join(repoRoot, "packages/pki/README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code).toBeDefined();
  const dir = await mkdtemp(path.join(tmpdir(), "pki-readme-"));
  try {
    const file = path.join(dir, "example.ts");
    await writeFile(file, code as string);
    const log = vi.spyOn(console, "log").mockImplementation(() => undefined);
    await import(/* @vite-ignore */ file);
    expect(log).toHaveBeenCalledWith([
      "web.default.serviceaccount.identity.meshtls.cluster.local",
      "identity.meshtls.cluster.local",
      "root.meshtls.cluster.local",
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
