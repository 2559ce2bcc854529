import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addrsOf, adminGet, bufCurlGet, ipv4Int, startDestination, waitFor, type BufStream, type DestinationProcess } from "./support.js";

const registry = (endpoints: string[]): string => `services:
  - name: api
    namespace: default
    ports: [{ port: 80, targetPort: 8080 }]
    endpoints:
${endpoints.map((e) => `      - ${e}\n`).join("")}`;

describe("registry edits reach every open stream", () => {
  let dir: string;
  let file: string;
  let server: DestinationProcess;
  const streams: BufStream[] = [];

  /** Replaces the file the way editors and config tools do: write aside, rename over. */
  const writeRegistry = (text: string): number => {
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file);
    return Date.now();
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "meshtls-destination-edit-"));
    file = path.join(dir, "registry.yaml");
    writeFileSync(file, registry(["{ address: 127.0.1.1, serviceAccount: api }", "{ address: 127.0.1.2, serviceAccount: api }"]));
    server = await startDestination({ registryFile: file });
  });
  afterAll(async () => {
    for (const s of streams) s.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("delivers the matching add/remove to every stream within a second; a broken edit changes nothing and is reported", async () => {
    const paths = ["api.default.svc.cluster.local:80", "api.default.svc.cluster.local:80", "api.default:80", "api:80", "127.0.1.2:8080"];
    for (const p of paths) streams.push(bufCurlGet({ port: server.grpcPort, path: p, contextToken: '{"ns":"default"}' }));
    await waitFor(() => (streams.every((s) => s.messages.length === 1) ? true : undefined), 20_000, "every first update");
    const [svc1, svc2, svc3, svc4, byIp] = streams as [BufStream, BufStream, BufStream, BufStream, BufStream];

    // Edit: 127.0.1.2 goes, 127.0.1.3 (unmeshed) arrives.
    const editedAt = writeRegistry(registry(["{ address: 127.0.1.1, serviceAccount: api }", "{ address: 127.0.1.3, meshed: false }"]));
    await waitFor(() => ([svc1, svc2, svc3, svc4].every((s) => s.messages.length === 3) && byIp.messages.length === 2 ? true : undefined), 5000, "the edit on every stream");
    const lastSeenMs = Math.max(...streams.map((s) => s.receivedAt[s.receivedAt.length - 1] ?? Infinity)) - editedAt;
    console.log(`registry edit -> last of ${streams.length} buf curl streams: ${lastSeenMs} ms`);
    expect(lastSeenMs).toBeLessThan(1000);
    for (const s of [svc1, svc2, svc3, svc4]) {
      expect(addrsOf(s.messages[1], "remove").map((a) => a.addr)).toEqual([{ ip: { ipv4: ipv4Int("127.0.1.2") }, port: 8080 }]);
      const added = addrsOf(s.messages[2], "add");
      expect(added.map((a) => a.addr)).toEqual([{ ip: { ipv4: ipv4Int("127.0.1.3") }, port: 8080 }]);
      expect(added[0]?.tlsIdentity).toBeUndefined();
    }
    // The IP lookup's endpoint left the registry: it is now an unknown address, without identity.
    expect(addrsOf(byIp.messages[1], "add").map((a) => [a.addr.ip.ipv4, a.tlsIdentity])).toEqual([[ipv4Int("127.0.1.2"), undefined]]);

    // A broken edit: reported with file, line and reason; nothing reaches the streams.
    const counts = streams.map((s) => s.messages.length);
    writeRegistry(registry(["{ address: 127.0.1.1, serviceAccount: api }", "{ address: 127.0.1.300, serviceAccount: api }"]));
    const report = await server.waitForLog((l) => l.level === 50 && l.code === "ERR_REGISTRY_INVALID", 5000);
    expect(report).toMatchObject({ file, line: 7 });
    expect(String(report.reason)).toContain('"127.0.1.300" is not an IP address');
    const metrics = (await adminGet(server.adminPort, "/metrics")).text;
    expect(metrics).toMatch(/destination_registry_file_valid 0/);
    expect(metrics).toMatch(/destination_registry_reloads_total\{result="error"\} 1/);
    await new Promise((r) => setTimeout(r, 700));
    expect(streams.map((s) => s.messages.length)).toEqual(counts);
    // New streams get the last good registry.
    const late = bufCurlGet({ port: server.grpcPort, path: "api.default.svc.cluster.local:80" });
    streams.push(late);
    await waitFor(() => late.messages[0], 15_000, "a late stream's first update");
    expect(addrsOf(late.messages[0], "add").map((a) => a.addr.ip.ipv4).sort()).toEqual([ipv4Int("127.0.1.1"), ipv4Int("127.0.1.3")]);

    // A syntax error too.
    writeRegistry("services:\n  - name: api\n    endpoints: [\n");
    const syntax = await server.waitForLog((l) => l.level === 50 && l.code === "ERR_REGISTRY_INVALID" && l !== report, 5000);
    expect(syntax.file).toBe(file);
    expect(typeof syntax.line).toBe("number");

    // Fixing the file resumes updates: the service goes away entirely.
    writeRegistry("services: []\n");
    await waitFor(() => (svc1.messages.length === counts[0]! + 2 ? true : undefined), 5000, "the fix");
    expect(svc1.messages[svc1.messages.length - 1]).toEqual({ noEndpoints: {} });
    expect((await adminGet(server.adminPort, "/metrics")).text).toMatch(/destination_registry_file_valid 1/);
  });
});
