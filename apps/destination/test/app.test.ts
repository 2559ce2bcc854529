import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { adminGet, bufCurlGet, mainJs, startDestination, waitFor } from "./support.js";

describe("meshtls-destination process", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "meshtls-destination-app-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "registry.json");
  writeFileSync(file, JSON.stringify({ services: [{ name: "api", endpoints: [{ address: "127.0.1.1", serviceAccount: "api" }] }] }));

  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [mainJs, ...args], { encoding: "utf8", timeout: 15_000, env: { PATH: process.env.PATH ?? "", ...env } });

  it("serves /live, /ready and /metrics, and ends open streams and exits 0 on SIGTERM", async () => {
    const server = await startDestination({ registryFile: file });
    expect(await adminGet(server.adminPort, "/live")).toEqual({ status: 200, text: "live\n" });
    expect((await adminGet(server.adminPort, "/ready")).status).toBe(200);
    const stream = bufCurlGet({ port: server.grpcPort, path: "api.default.svc.cluster.local:80" });
    await waitFor(() => stream.messages[0], 15_000, "the first update");
    const metrics = (await adminGet(server.adminPort, "/metrics")).text;
    expect(metrics).toMatch(/^destination_get_streams 1$/m);
    expect(metrics).toMatch(/^destination_get_requests_total\{result="ok"\} 1$/m);
    expect(metrics).toMatch(/^destination_updates_total\{kind="add"\} 1$/m);
    expect(metrics).toMatch(/^destination_registry_endpoints 1$/m);
    expect(metrics).toMatch(/^process_resident_memory_bytes \d+/m);
    const started = Date.now();
    expect(await server.stop("SIGTERM")).toBe(0);
    expect(Date.now() - started).toBeLessThan(5000);
    const { code } = await stream.exited;
    expect(code).toBe(0); // The server ended the stream cleanly.
    expect(server.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(["shutting down", "stopped"]));
  });

  it("reads MESHTLS_* environment variables", async () => {
    const result = run(["--admin", "127.0.0.1:0"], { MESHTLS_REGISTRY_FILE: "/nonexistent.yaml", MESHTLS_LISTEN: "127.0.0.1:0", MESHTLS_INSECURE_PLAINTEXT: "1" });
    expect(result.status).toBe(1);
    const line = JSON.parse(result.stdout.trim().split("\n").pop() ?? "{}") as Record<string, unknown>;
    expect(line).toMatchObject({ code: "ERR_REGISTRY_READ", file: "/nonexistent.yaml" });
  });

  it("reads boolean variables strictly: false means off, junk is refused", () => {
    const off = run(["--registry", file, "--listen", "127.0.0.1:0"], { MESHTLS_INSECURE_PLAINTEXT: "false" });
    expect(off.status).toBe(2);
    expect(off.stderr).toMatch(/give --tls-cert and --tls-key, or --insecure-plaintext/);
    const junk = run(["--registry", file, "--listen", "127.0.0.1:0"], { MESHTLS_INSECURE_PLAINTEXT: "yes please" });
    expect(junk.status).toBe(2);
    expect(junk.stderr).toMatch(/MESHTLS_INSECURE_PLAINTEXT: "yes please" is not a boolean \(use true, 1, false or 0\)/);
  });

  it("refuses bad configuration with a clear message", () => {
    const cases: [string[], RegExp][] = [
      [[], /--registry \(or MESHTLS_REGISTRY_FILE\) is required/],
      [["--registry", file, "--listen", "0.0.0.0:0", "--insecure-plaintext"], /allowed only on a loopback/],
      [["--registry", file, "--listen", "127.0.0.1:0"], /give --tls-cert and --tls-key, or --insecure-plaintext/],
      [["--registry", file, "--listen", "nope", "--insecure-plaintext"], /--listen: "nope" is not host:port/],
      [["--registry", file, "--listen", "127.0.0.1:0", "--insecure-plaintext", "--trust-domain", "Bad_Domain"], /--trust-domain/],
      [["--registry", file, "--tls-cert", "c.pem"], /--tls-cert and --tls-key go together/],
      [["--registry", file, "--insecure-plaintext", "--listen", "127.0.0.1:0", "--max-streams", "0"], /--max-streams: "0" is not a whole number from 1 to 10000000/],
      [["--registry", file, "--insecure-plaintext", "--listen", "127.0.0.1:0", "--max-streams", "10", "--max-streams-per-peer", "11"], /--max-streams-per-peer \(11\) must not exceed --max-streams \(10\)/],
      [["--registry", file, "--insecure-plaintext", "--listen", "127.0.0.1:0", "--max-connection-age", "soon"], /--max-connection-age: "soon" is not a duration/],
    ];
    for (const [args, message] of cases) {
      const result = run(args);
      expect(result.status, `${args.join(" ")}: ${result.stderr} ${result.stdout}`).toBe(2);
      expect(result.stderr).toMatch(message);
    }
  });

  it("refuses to start on an invalid registry, naming file and line", () => {
    const bad = path.join(dir, "bad.yaml");
    writeFileSync(bad, "services:\n  - name: api\n    endpoints:\n      - { address: 127.0.1.1, weight: -1 }\n");
    const result = run(["--registry", bad, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"]);
    expect(result.status).toBe(1);
    const line = JSON.parse(result.stdout.trim().split("\n").pop() ?? "{}") as Record<string, unknown>;
    expect(line).toMatchObject({ code: "ERR_REGISTRY_INVALID", file: bad, line: 4 });
    expect(String(line.msg)).toContain(`${bad}:4:`);
  });
});
