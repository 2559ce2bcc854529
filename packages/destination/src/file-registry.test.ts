import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createFileRegistry, type RegistryReload } from "./file-registry.js";
import type { Logger } from "./logger.js";
import type { RegistrySnapshot } from "./registry.js";
import { eventually } from "./test-support.js";

const registryText = (addresses: string[]): string =>
  `services:\n  - name: api\n    endpoints:\n${addresses.map((a) => `      - { address: ${a}, serviceAccount: api }\n`).join("")}`;

const addressesOf = (s: RegistrySnapshot): string[] => s.services.flatMap((x) => x.endpoints.map((e) => e.address));

describe("file registry", () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  function tempFile(text: string): string {
    const dir = mkdtempSync(path.join(tmpdir(), "meshtls-registry-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, "registry.yaml");
    writeFileSync(file, text);
    return file;
  }

  it("sees edits in place and by rename within a second", async () => {
    const file = tempFile(registryText(["127.0.1.1"]));
    const registry = await createFileRegistry({ file, pollIntervalMs: 0 });
    cleanups.push(() => registry.close());
    const seen: string[][] = [];
    registry.watch((s) => seen.push(addressesOf(s)));
    expect(addressesOf(registry.list())).toEqual(["127.0.1.1"]);

    let start = Date.now();
    writeFileSync(file, registryText(["127.0.1.1", "127.0.1.2"]));
    await eventually(() => seen.length === 1, 1000, "in-place edit");
    const inPlaceMs = Date.now() - start;
    start = Date.now();
    writeFileSync(`${file}.tmp`, registryText(["127.0.1.3"]));
    renameSync(`${file}.tmp`, file);
    await eventually(() => seen.length === 2, 1000, "rename edit");
    expect(seen).toEqual([["127.0.1.1", "127.0.1.2"], ["127.0.1.3"]]);
    expect(inPlaceMs).toBeLessThan(1000);
    expect(Date.now() - start).toBeLessThan(1000);
  });

  it("reports a broken edit with file, line and reason and keeps serving the last good registry", async () => {
    const file = tempFile(registryText(["127.0.1.1"]));
    const logged: { obj: object; msg: string | undefined }[] = [];
    const logger: Logger = { info() {}, warn() {}, debug() {}, error: (obj, msg) => logged.push({ obj, msg }) };
    const reloads: RegistryReload[] = [];
    const registry = await createFileRegistry({ file, pollIntervalMs: 0, logger, onReload: (r) => reloads.push(r) });
    cleanups.push(() => registry.close());
    let changes = 0;
    registry.watch(() => changes++);

    writeFileSync(file, registryText(["127.0.1.1", "127.0.1.999"]));
    await eventually(() => reloads.some((r) => !r.ok), 1000, "the failed reload");
    expect(changes).toBe(0);
    expect(addressesOf(registry.list())).toEqual(["127.0.1.1"]);
    const error = registry.lastError();
    expect(error).toMatchObject({ code: "ERR_REGISTRY_INVALID", file, line: 5 });
    expect(error?.reason).toContain('"127.0.1.999" is not an IP address');
    expect(logged[0]?.obj).toMatchObject({ file, line: 5, code: "ERR_REGISTRY_INVALID" });

    rmSync(file);
    await eventually(() => registry.lastError()?.code === "ERR_REGISTRY_READ", 1000, "the missing file");
    expect(addressesOf(registry.list())).toEqual(["127.0.1.1"]);

    writeFileSync(file, registryText(["127.0.1.2"]));
    await eventually(() => changes === 1, 1000, "recovery");
    expect(registry.lastError()).toBeUndefined();
    expect(addressesOf(registry.list())).toEqual(["127.0.1.2"]);
  });

  it("refuses to start from a missing or invalid file", async () => {
    await expect(createFileRegistry({ file: "/nonexistent/registry.yaml" })).rejects.toMatchObject({ code: "ERR_REGISTRY_READ" });
    const file = tempFile("services:\n  - name: api\n    endpoints: [{ address: nope }]\n");
    await expect(createFileRegistry({ file })).rejects.toMatchObject({ code: "ERR_REGISTRY_INVALID", line: 3 });
  });

  it("sees a Kubernetes ConfigMap-style update (symlinked ..data folder swapped)", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "meshtls-registry-cm-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const version = (n: number, text: string): void => {
      mkdirSync(path.join(dir, `..v${n}`));
      writeFileSync(path.join(dir, `..v${n}`, "registry.yaml"), text);
      symlinkSync(`..v${n}`, path.join(dir, "..data_tmp"));
      renameSync(path.join(dir, "..data_tmp"), path.join(dir, "..data"));
    };
    version(1, registryText(["127.0.1.1"]));
    symlinkSync(path.join("..data", "registry.yaml"), path.join(dir, "registry.yaml"));
    const registry = await createFileRegistry({ file: path.join(dir, "registry.yaml"), pollIntervalMs: 0 });
    cleanups.push(() => registry.close());
    version(2, registryText(["127.0.1.7"]));
    await eventually(() => addressesOf(registry.list())[0] === "127.0.1.7", 1000, "the swapped folder");
  });

  it("refuses an oversized file without reading it", async () => {
    const file = tempFile(registryText(["127.0.1.1"]));
    const registry = await createFileRegistry({ file, pollIntervalMs: 0 });
    cleanups.push(() => registry.close());
    truncateSync(file, 64 * 1024 * 1024);
    const result = await registry.reload();
    expect(result).toMatchObject({ ok: false, error: { code: "ERR_REGISTRY_INVALID" } });
    expect(addressesOf(registry.list())).toEqual(["127.0.1.1"]);
  });

  it("polls as a backup when events are missed", async () => {
    const file = tempFile(registryText(["127.0.1.1"]));
    const registry = await createFileRegistry({ file, pollIntervalMs: 100 });
    cleanups.push(() => registry.close());
    writeFileSync(file, registryText(["127.0.1.5"]));
    await eventually(() => addressesOf(registry.list())[0] === "127.0.1.5", 2000, "the poll");
  });
});
