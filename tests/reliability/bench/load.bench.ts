// Load (not in CI): 10,000 concurrent connections through one proxy pair beside a naive node:tls pair, and
// 1,000 concurrent Certify calls beside signing the same leaves in process. Figures printed with ratios.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { CertifyRequest, CertifyResponse } from "@meshtls/api";
import { call, CERTIFY, tlsOptions } from "@meshtls/hostile-suite/test/support/grpc.ts";
import { grpcMessage } from "@meshtls/hostile-suite/test/support/http2-frames.ts";
import { Proc, repoRoot } from "@meshtls/hostile-suite/test/support/processes.ts";
import { createCsr, generateKeyPair, importPrivateKey, issueLeaf, toDer } from "@meshtls/pki";
import { afterAll, beforeAll, describe, it } from "vitest";
import { authorityB, freePort, identityOf, sleep, startMesh } from "../test/support/mesh.ts";
import type { Mesh } from "../test/support/mesh.ts";
import { record } from "../test/support/results.ts";

const CONNECTIONS = Number(process.env["RELIABILITY_CONNECTIONS"] ?? 10_000);
const CERTIFY_CALLS = Number(process.env["RELIABILITY_CERTIFY_CALLS"] ?? 1000);
/** Connections being opened at once (a listen backlog is finite). */
const OPENING = 100;

interface HeldConnections {
  ok: number;
  errors: Record<string, number>;
  /** From the first connect to the last response (ms). */
  allAnsweredMs: number;
  close(): void;
}

/**
 * Opens `n` connections to `address`, sends one keep-alive request on each and waits for its whole answer,
 * keeping every connection open until `close()`.
 */
async function holdConnections(addresses: string[], n: number, request: string): Promise<HeldConnections> {
  const sockets: net.Socket[] = [];
  const errors: Record<string, number> = {};
  let ok = 0;
  const started = performance.now();
  const one = (address: string): Promise<void> =>
    new Promise((resolve) => {
      const socket = net.connect({ host: address.slice(0, address.lastIndexOf(":")), port: Number(address.slice(address.lastIndexOf(":") + 1)) });
      sockets.push(socket);
      let answer = "";
      let settled = false;
      const settle = (error?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error === undefined) ok++;
        else errors[error] = (errors[error] ?? 0) + 1;
        resolve();
      };
      const timer = setTimeout(() => settle("timeout"), 60_000);
      socket.setEncoding("latin1");
      socket.on("connect", () => socket.write(request));
      socket.on("data", (chunk: string) => {
        answer += chunk;
        if (answer.includes("\r\n\r\n") && answer.endsWith("ok\n")) settle(answer.startsWith("HTTP/1.1 200") ? undefined : answer.slice(0, 12));
      });
      socket.on("error", (error: NodeJS.ErrnoException) => settle(error.code ?? error.message));
      socket.on("close", () => settle("closed before the answer"));
    });
  let next = 0;
  await Promise.all(
    Array.from({ length: OPENING }, async () => {
      while (next < n) {
        await one(addresses[next++ % addresses.length] ?? "");
      }
    }),
  );
  const allAnsweredMs = performance.now() - started;
  return { ok, errors, allAnsweredMs, close: () => sockets.forEach((s) => s.destroy()) };
}

/** `node file args`. */
function startScript(name: string, file: string, args: string[]): Proc {
  const child = spawn(process.execPath, [file, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  return new Proc(name, child);
}

const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;

describe("load", () => {
  let mesh: Mesh;

  beforeAll(async () => {
    mesh = await startMesh({
      name: "load",
      net: 7,
      endpoints: 1,
      clientArgs: ["--max-outbound-connections", String(2 * CONNECTIONS)],
      proxyArgs: () => ["--max-inbound-connections", String(2 * CONNECTIONS)],
    });
  });

  afterAll(async () => {
    await mesh.close();
  });

  it(`${CONNECTIONS} concurrent connections through one proxy pair, beside a naive node:tls pair`, async () => {
    const b = mesh.b[0];
    if (b === undefined) throw new Error("no endpoint");
    const pair = [mesh.a.proc, b.proxy.proc];
    const rssBefore = pair.reduce((sum, p) => sum + p.rssKiB(), 0);
    const meshtls = await holdConnections([mesh.a.outbound], CONNECTIONS, `GET http://${authorityB}/ HTTP/1.1\r\nHost: ${authorityB}\r\n\r\n`);
    await sleep(1000);
    const rssHeld = pair.reduce((sum, p) => sum + p.rssKiB(), 0);
    const open = (await (await fetch(`http://${mesh.a.admin}/metrics`)).text()).split("\n").find((l) => l.startsWith("tcp_open_connections") && l.includes('direction="outbound"') && l.includes('peer="src"'));
    meshtls.close();

    // The baseline: each connection a TLS connection of its own between two node:tls pipes (no detection, policy, discovery, metrics).
    const leaf = await mesh.files.material.leaf(identityOf("naive"));
    const ip = "127.0.7.200";
    const serverPort = await freePort(ip);
    // The naive client holds two descriptors per connection: two client processes, half the connections each,
    // keep every process under the machine's open-file limit (20,000 here, and prlimit may not raise it).
    const clientPorts = [await freePort(ip), await freePort(ip)];
    const naiveFile = path.join(repoRoot, "apps/proxy/bench/naive-pair.mjs");
    const naiveServer = startScript("naive-server", naiveFile, ["server", ip, String(serverPort), b.ip, String(b.app.port), "-", leaf.chainFile, leaf.keyFile, mesh.files.material.caFile]);
    const naiveClients = clientPorts.map((port, i) =>
      startScript(`naive-client-${i}`, naiveFile, ["client", ip, String(port), ip, String(serverPort), identityOf("naive"), leaf.chainFile, leaf.keyFile, mesh.files.material.caFile]),
    );
    const naivePair = [...naiveClients, naiveServer];
    await Promise.all(naivePair.map((p) => p.waitForMsg("listening")));
    const naiveBefore = naivePair.reduce((sum, p) => sum + p.rssKiB(), 0);
    const naive = await holdConnections(clientPorts.map((port) => `${ip}:${port}`), CONNECTIONS, `GET / HTTP/1.1\r\nHost: ${authorityB}\r\n\r\n`);
    await sleep(1000);
    const naiveHeld = naivePair.reduce((sum, p) => sum + p.rssKiB(), 0);
    naive.close();
    await Promise.all(naivePair.map((p) => p.stop()));

    const perConnection = ((rssHeld - rssBefore) * 1024) / CONNECTIONS;
    const naivePerConnection = ((naiveHeld - naiveBefore) * 1024) / CONNECTIONS;
    console.log(
      [
        `${CONNECTIONS} concurrent connections (each one keep-alive request, answered, then held open):`,
        `  meshtls-proxy pair: ${meshtls.ok} answered, errors ${JSON.stringify(meshtls.errors)}, all answered in ${(meshtls.allAnsweredMs / 1000).toFixed(2)} s; RSS A+B ${mib(rssBefore)} → ${mib(rssHeld)}: ${(perConnection / 1024).toFixed(1)} KiB per connection; A's gauge: ${open ?? "-"}`,
        `  naive node:tls pair: ${naive.ok} answered, errors ${JSON.stringify(naive.errors)}, all answered in ${(naive.allAnsweredMs / 1000).toFixed(2)} s; RSS ${mib(naiveBefore)} → ${mib(naiveHeld)}: ${(naivePerConnection / 1024).toFixed(1)} KiB per connection`,
        `  ratios meshtls/naive: time ${(meshtls.allAnsweredMs / naive.allAnsweredMs).toFixed(2)}, memory per connection ${(perConnection / naivePerConnection).toFixed(2)}`,
      ].join("\n"),
    );
    const failed = CONNECTIONS - meshtls.ok;
    record({
      case: `load: ${CONNECTIONS} concurrent connections through A → B`,
      sent: CONNECTIONS,
      failed,
      longestFailureMs: 0,
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssHeld,
      expected: "0 failed; figures beside a naive node:tls pair",
      holds: failed === 0,
      note: `all answered in ${(meshtls.allAnsweredMs / 1000).toFixed(1)} s (naive ${(naive.allAnsweredMs / 1000).toFixed(1)} s); ${(perConnection / 1024).toFixed(1)} KiB/connection (naive ${(naivePerConnection / 1024).toFixed(1)} KiB)`,
    });
  });

  it(`${CERTIFY_CALLS} concurrent Certify calls, beside signing the same leaves in process`, async () => {
    // One client address may hold 100 calls by default: this bench is one client standing for many proxies.
    await mesh.identity.kill();
    await mesh.identity.start(["--max-certify-calls-per-peer", String(CERTIFY_CALLS)]);
    const identity = `load.default.serviceaccount.identity.meshtls.cluster.local`;
    const token = Buffer.from(await mesh.files.material.token("load"));
    const keyPairs = await Promise.all(Array.from({ length: CERTIFY_CALLS }, () => generateKeyPair()));
    const bodies = await Promise.all(
      keyPairs.map(async (keyPair) =>
        grpcMessage(Buffer.from(CertifyRequest.encode({ identity, token, certificateSigningRequest: Buffer.from(await createCsr({ keyPair, identity })) }).finish())),
      ),
    );
    const rssBefore = mesh.identity.proc.rssKiB();
    let peak = rssBefore;
    const sampler = setInterval(() => (peak = Math.max(peak, mesh.identity.proc.rssKiB())), 100);
    const started = performance.now();
    const results = await Promise.all(bodies.map((body) => call(mesh.identity, CERTIFY, body, { tls: tlsOptions(mesh.identity, mesh.files.material), timeoutMs: 60_000 })));
    const elapsedMs = performance.now() - started;
    clearInterval(sampler);
    const rssAfter = mesh.identity.proc.rssKiB();
    const errors: Record<string, number> = {};
    let ok = 0;
    for (const r of results) {
      if (r.grpcStatus === 0 && r.data.length > 5 && CertifyResponse.decode(r.data.subarray(5)).leafCertificate.length > 0) ok++;
      else {
        const key = r.grpcStatus === undefined ? (r.error ?? (r.timedOut ? "timeout" : "?")) : `grpc-status ${r.grpcStatus}`;
        errors[key] = (errors[key] ?? 0) + 1;
      }
    }

    // The floor: the same number of leaves signed in this process, one after another, no TLS, no token check.
    const issuerCert = toDer(readFileSync(path.join(mesh.files.issuerDir, "issuer.crt"), "utf8"), "CERTIFICATE");
    const issuerKey = await importPrivateKey(readFileSync(path.join(mesh.files.issuerDir, "issuer.key"), "utf8"));
    const signStarted = performance.now();
    for (const keyPair of keyPairs) await issueLeaf({ issuer: { certificate: issuerCert, privateKey: issuerKey.privateKey }, publicKey: keyPair.publicKey, identity });
    const signMs = performance.now() - signStarted;
    console.log(
      [
        `${CERTIFY_CALLS} concurrent Certify calls (each its own TLS connection):`,
        `  meshtls-identity: ${ok} certified, errors ${JSON.stringify(errors)}, in ${(elapsedMs / 1000).toFixed(2)} s (${(CERTIFY_CALLS / (elapsedMs / 1000)).toFixed(0)}/s); RSS ${mib(rssBefore)} → peak ${mib(peak)} → ${mib(rssAfter)}`,
        `  baseline, issueLeaf in process: ${CERTIFY_CALLS} leaves in ${(signMs / 1000).toFixed(2)} s (${(CERTIFY_CALLS / (signMs / 1000)).toFixed(0)}/s)`,
        `  ratio Certify/issueLeaf time: ${(elapsedMs / signMs).toFixed(2)}`,
      ].join("\n"),
    );
    record({
      case: `load: ${CERTIFY_CALLS} concurrent Certify calls`,
      sent: CERTIFY_CALLS,
      failed: CERTIFY_CALLS - ok,
      longestFailureMs: 0,
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssAfter,
      expected: "0 failed; figures beside in-process signing",
      holds: ok === CERTIFY_CALLS,
      note: `${(elapsedMs / 1000).toFixed(1)} s (in-process signing ${(signMs / 1000).toFixed(1)} s); identity RSS peak ${mib(peak)}`,
    });
  });
});
