// --workers: several processes behind one gRPC port, one admin endpoint summing their metrics, SIGTERM draining all.
import { copyFile, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import { IdentityClient } from "@meshtls/api";
import { decodeCertificates } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certify, cli, createMaterial, identityFor, mintToken, opensslCsr, SERVER_NAME, startIdentity, tempDir } from "./harness.ts";
import type { IdentityProcess } from "./harness.ts";

const identity = identityFor("web");

/** A client on a connection of its own (grpc-js would otherwise share one per target), so connections reach different workers. */
async function ownConnection(dir: string, address: string): Promise<IdentityClient> {
  return new IdentityClient(address, credentials.createSsl(await readFile(path.join(dir, "ca.crt"))), {
    "grpc.ssl_target_name_override": SERVER_NAME,
    "grpc.default_authority": SERVER_NAME,
    "grpc.use_local_subchannel_pool": 1,
  });
}

function metricValue(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Polls until `check` holds (log lines of several processes arrive asynchronously), for 10 s at most. */
async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("meshtls-identity --workers", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let csr: Buffer;
  let token: Buffer;
  const procs: IdentityProcess[] = [];
  const clients: IdentityClient[] = [];
  const request = () => ({ identity, token, certificateSigningRequest: csr });

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("workers"));
    await createMaterial(dir);
    await cli(["certs", "issuer", "--ca-cert", path.join(dir, "ca.crt"), "--ca-key", path.join(dir, "ca.key"), "--out", path.join(dir, "b")]);
    csr = (await opensslCsr(dir, { san: `DNS:${identity}` })).der;
    token = Buffer.from(await mintToken(dir, "default", "web"));
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(procs.map((p) => p.stop()));
    await cleanup();
  });

  async function start(workers: number, issuerDir = dir): Promise<{ proc: IdentityProcess; pids: number[] }> {
    const proc = await startIdentity({ dir, issuerDir, args: ["--issuer-poll-interval", "500ms"], env: { MESHTLS_WORKERS: String(workers) } });
    procs.push(proc);
    const listening = await proc.waitForLog((l) => l["msg"] === "listening");
    expect(listening["workers"]).toBe(workers);
    const pids = (listening["workerPids"] as number[]).map(Number);
    expect(new Set(pids).size).toBe(workers);
    expect(pids.every(isAlive)).toBe(true);
    return { proc, pids };
  }

  it("every worker serves on the one port; /metrics sums their counts; /ready is 200", async () => {
    const { proc } = await start(2);
    const connections = await Promise.all(Array.from({ length: 4 }, () => ownConnection(dir, proc.grpcAddress)));
    clients.push(...connections);
    const perConnection = 5;
    for (const client of connections) for (let i = 0; i < perConnection; i++) await certify(client, request());
    // Connections are handed to the workers in turn: both issued leaves.
    await until(() => proc.logs.filter((l) => l["msg"] === "certified").length >= 4 * perConnection);
    const certified = proc.logs.filter((l) => l["msg"] === "certified");
    expect(certified.length).toBe(4 * perConnection);
    const byWorker = new Map<unknown, number>();
    for (const l of certified) byWorker.set(l["worker"], (byWorker.get(l["worker"]) ?? 0) + 1);
    expect([...byWorker.keys()].sort()).toEqual([1, 2]);
    // A refusal, counted by the worker that gave it.
    await expect(certify(connections[0]!, { ...request(), token: Buffer.from("not a jwt") })).rejects.toThrow();

    const metrics = await (await fetch(`${proc.adminUrl}/metrics`)).text();
    expect(metricValue(metrics, 'identity_certify_total{result="ok"}')).toBe(4 * perConnection);
    expect(metricValue(metrics, 'identity_certify_total{result="ERR_TOKEN_MALFORMED"}')).toBe(1);
    expect(metricValue(metrics, 'identity_certify_duration_seconds_count{result="ok"}')).toBe(4 * perConnection);
    // Each worker loaded the issuer and the anchors itself: counters sum, gauges are not summed.
    expect(metricValue(metrics, "identity_issuer_loaded_total")).toBe(2);
    expect(metricValue(metrics, "identity_trust_anchors_loaded_total")).toBe(2);
    expect(metricValue(metrics, "identity_trust_anchors")).toBe(1);
    const ttl = metricValue(metrics, "issuer_cert_ttl_seconds");
    expect(ttl).toBeGreaterThan(300 * 86400);
    expect(ttl).toBeLessThan(366 * 86400);
    expect((await fetch(`${proc.adminUrl}/ready`)).status).toBe(200);
  });

  it("each worker follows the issuer folder: after a replacement every connection gets leaves from the new issuer", async () => {
    const issuerDir = path.join(dir, "live");
    await mkdir(issuerDir);
    await copyFile(path.join(dir, "issuer.crt"), path.join(issuerDir, "issuer.crt"));
    await copyFile(path.join(dir, "issuer.key"), path.join(issuerDir, "issuer.key"));
    const { proc } = await start(2, issuerDir);
    const b = decodeCertificates(await readFile(path.join(dir, "b", "issuer.crt"), "utf8"))[0]!;
    for (const name of ["issuer.crt", "issuer.key"]) await writeFile(path.join(issuerDir, `.${name}.new`), await readFile(path.join(dir, "b", name)));
    for (const name of ["issuer.crt", "issuer.key"]) await rename(path.join(issuerDir, `.${name}.new`), path.join(issuerDir, name));
    // Both workers log the reload of the new issuer.
    const loaded = () => proc.logs.filter((l) => l["msg"] === "issuer loaded");
    await until(() => loaded().length >= 4);
    expect(loaded().length).toBe(4);
    expect(loaded().slice(2).map((l) => l["worker"]).sort()).toEqual([1, 2]);
    // New connections land on both workers; all of them are served by issuer B.
    const connections = await Promise.all(Array.from({ length: 4 }, () => ownConnection(dir, proc.grpcAddress)));
    clients.push(...connections);
    for (const client of connections) {
      const answer = await certify(client, request());
      expect(Buffer.from(answer.intermediateCertificates[0] ?? []).equals(Buffer.from(b))).toBe(true);
    }
    const metrics = await (await fetch(`${proc.adminUrl}/metrics`)).text();
    expect(metricValue(metrics, "identity_issuer_loaded_total")).toBe(4);
  });

  it("a worker that dies is replaced (/ready 503 meanwhile); SIGTERM drains calls in flight on every worker, then all exit 0", async () => {
    const { proc, pids } = await start(2);
    process.kill(pids[0]!, "SIGKILL");
    await proc.waitForLog((l) => l["msg"] === "worker exited; starting another");
    expect((await fetch(`${proc.adminUrl}/ready`)).status).toBe(503);
    await proc.waitForLog((l) => l["msg"] === "worker listening" && !pids.includes(Number(l["pid"])));
    let readyStatus = 0;
    for (const deadline = Date.now() + 10_000; readyStatus !== 200 && Date.now() < deadline; ) {
      readyStatus = (await fetch(`${proc.adminUrl}/ready`)).status;
      if (readyStatus !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    expect(readyStatus).toBe(200);
    const workerPids = proc.logs.filter((l) => l["msg"] === "worker listening").map((l) => Number(l["pid"])).filter(isAlive);
    expect(workerPids.length).toBe(2);

    const connections = await Promise.all(Array.from({ length: 4 }, () => ownConnection(dir, proc.grpcAddress)));
    clients.push(...connections);
    for (const client of connections) await certify(client, request());
    // Calls in flight on every connection when SIGTERM arrives: all answered.
    const inFlight = connections.flatMap((client) => Array.from({ length: 8 }, () => certify(client, request())));
    await new Promise((r) => setTimeout(r, 5));
    const code = await proc.stop();
    const results = await Promise.allSettled(inFlight);
    expect(results.filter((r) => r.status === "fulfilled").length).toBe(inFlight.length);
    expect(code).toBe(0);
    await until(() => proc.logs.filter((l) => l["msg"] === "stopped").length >= 3);
    expect(proc.logs.filter((l) => l["msg"] === "stopped").length).toBe(3);
    expect(workerPids.filter(isAlive)).toEqual([]);
  });
});
