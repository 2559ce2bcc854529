import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bins, createForeignPki, createMaterial, freePort, identityOf, issueFromDir, run, sample, scrape, startNode, tempDir } from "./harness.ts";
import type { Proc } from "./harness.ts";
import type { Material } from "./harness.ts";

const A = identityOf("a");
const B = identityOf("b");
const TCPDUMP = ["/usr/sbin/tcpdump", "/usr/bin/tcpdump"].find((p) => {
  try {
    readFileSync(p);
    return true;
  } catch {
    return false;
  }
});

interface Workload {
  proxy: Proc;
  inbound: string;
  outbound: string;
  admin: string;
}

describe("meshtls-proxy end to end (real processes on loopback)", () => {
  const procs: Proc[] = [];
  const others: ChildProcess[] = [];
  const servers: net.Server[] = [];
  let dir: string;
  let material: Material;
  let identityAddr: string;
  let identityName: string;
  let destinationAddr: string;
  let registryFile: string;
  let a: Workload;
  let b: Workload;
  let strict: Workload;
  let front: Workload;
  let appB: { port: number; seen: string[] };
  let echoPort: number;
  let plainPort: number;
  let impostorPort: number;
  let appTlsPort: number;

  async function startProxy(name: string, sa: string, ip: string, workloadPort: number, extra: string[] = []): Promise<Workload> {
    const inboundPort = await freePort(ip);
    const outboundPort = await freePort(ip);
    const proxy = startNode(name, bins.proxy, [
      "--identity", identityOf(sa),
      "--token-file", await material.tokenFile(sa),
      "--trust-anchors", material.caFile,
      "--identity-addr", identityAddr,
      "--identity-name", identityName,
      "--destination-addr", destinationAddr,
      "--destination-insecure-plaintext",
      "--context-token", '{"ns":"default"}',
      "--inbound", `${ip}:${inboundPort}`,
      "--outbound", `${ip}:${outboundPort}`,
      "--admin", `${ip}:0`,
      "--workload", `${ip}:${workloadPort}`,
      "--outbound-bind", ip,
      "--drain-timeout", "2s",
      ...extra,
    ]);
    procs.push(proxy);
    const listening = await proxy.waitForMsg("listening");
    await proxy.waitForMsg("first certificate obtained: ready");
    return { proxy, inbound: String(listening["inbound"]), outbound: String(listening["outbound"]), admin: String(listening["admin"]) };
  }

  async function listen(server: net.Server, host: string): Promise<number> {
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    return (server.address() as net.AddressInfo).port;
  }

  beforeAll(async () => {
    dir = tempDir("meshtls-proxy-e2e-");
    material = await createMaterial(dir);
    // 15-second leaves, no skew allowance: certificates rotate every ~10 s.
    const identity = startNode("identity", bins.identity, [
      "--trust-anchors", material.caFile, "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"),
      "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
      "--issuance-lifetime", "15s", "--clock-skew", "0s",
    ]);
    procs.push(identity);
    const idListening = await identity.waitForMsg("listening");
    identityAddr = String(idListening["grpc"]);
    identityName = String(idListening["serverName"]);

    // Workload apps: B's HTTP app and a TCP echo on 127.0.1.2; an unmeshed app on 127.0.1.4.
    appB = { port: 0, seen: [] };
    appB.port = await listen(
      http.createServer((req, res) => {
        appB.seen.push(String(req.headers["x-marker"] ?? ""));
        res.end(`b says ${String(req.headers["x-marker"] ?? "")}\n`);
      }),
      "127.0.1.2",
    );
    echoPort = await listen(net.createServer((s) => s.on("error", () => undefined).pipe(s)), "127.0.1.2");
    plainPort = await listen(http.createServer((_req, res) => res.end("unmeshed app\n")), "127.0.1.4");

    // Another identity's valid mesh certificate, served by openssl s_server (the impostor).
    const impostor = await issueFromDir(dir, identityOf("c"), path.join(dir, "c"));
    impostorPort = await freePort("127.0.1.3");
    const sServer = spawn("openssl", ["s_server", "-accept", `127.0.1.3:${impostorPort}`, "-cert", impostor.leafFile, "-cert_chain", impostor.chainFile, "-key", impostor.keyFile, "-tls1_3", "-quiet"], { stdio: ["ignore", "pipe", "pipe"] });
    others.push(sServer);
    let impostorOutput = "";
    sServer.stdout.on("data", (d: Buffer) => (impostorOutput += String(d)));
    (globalThis as { impostorOutput?: () => string }).impostorOutput = () => impostorOutput;

    // The application's own TLS behind a proxy: openssl s_server with a self-signed app.example certificate.
    await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path.join(dir, "app.key"), "-out", path.join(dir, "app.crt"), "-subj", "/CN=app.example", "-addext", "subjectAltName=DNS:app.example", "-days", "1"]);
    appTlsPort = await freePort("127.0.1.5");
    const appTls = spawn("openssl", ["s_server", "-accept", `127.0.1.5:${appTlsPort}`, "-cert", path.join(dir, "app.crt"), "-key", path.join(dir, "app.key"), "-www"], { stdio: ["ignore", "ignore", "ignore"] });
    others.push(appTls);

    const bInbound = await freePort("127.0.1.2");
    registryFile = path.join(dir, "registry.yaml");
    // B's inbound port is chosen now so that the registry can name it.
    writeFileSync(registryFile, "services: []\n");
    const destination = startNode("destination", bins.destination, ["--registry", registryFile, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"]);
    procs.push(destination);
    destinationAddr = String((await destination.waitForMsg("listening"))["grpcAddress"]);

    [a, b] = await Promise.all([
      startProxy("proxy-a", "a", "127.0.1.1", 1),
      startProxy("proxy-b", "b", "127.0.1.2", appB.port),
    ]);
    [strict, front] = await Promise.all([
      startProxy("proxy-strict", "b", "127.0.1.6", appB.port, ["--default-policy", "all-authenticated", "--workload", `127.0.1.2:${appB.port}`]),
      startProxy("proxy-front", "b", "127.0.1.5", appTlsPort),
    ]);
    void bInbound;
    const bIn = Number(b.inbound.split(":")[1]);
    writeFileSync(
      registryFile,
      [
        "services:",
        "  - name: b",
        `    ports: [{ port: 80, targetPort: ${appB.port} }]`,
        `    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: ${bIn} }]`,
        "  - name: echo",
        `    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: ${bIn} }]`,
        "  - name: wrong",
        `    ports: [{ port: 80, targetPort: 443 }]`,
        `    endpoints: [{ address: 127.0.1.3, serviceAccount: d, inboundPort: ${impostorPort} }]`,
        "  - name: plain",
        `    ports: [{ port: 80, targetPort: ${plainPort} }]`,
        "    endpoints: [{ address: 127.0.1.4, meshed: false }]",
        "",
      ].join("\n"),
    );
    await destination.waitFor((l) => /reload/i.test(String(l.msg)) && l["services"] !== 0, 15_000).catch(() => undefined);
  }, 120_000);

  afterAll(async () => {
    for (const child of others) child.kill("SIGKILL");
    for (const server of servers) server.close();
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  });

  const curl = async (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const { stdout, stderr } = await run("curl", ["-sS", "--max-time", "10", ...args], { timeout: 15_000 });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
    }
  };

  it("curl through A's outbound proxy reaches B's app; A shows server_id=B, B shows client_id=A; the wire between the proxies never carries the marker", async () => {
    const marker = `MARKER-${randomBytes(12).toString("hex")}`;
    const filter = `tcp and (port ${a.outbound.split(":")[1]} or port ${appB.port} or port ${b.inbound.split(":")[1]})`;
    const capture = path.join(dir, "lo.pcap");
    let tcpdump: ChildProcess | undefined;
    if (TCPDUMP !== undefined) {
      tcpdump = spawn(TCPDUMP, ["-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0", "-w", capture, filter], { stdio: ["ignore", "ignore", "pipe"] });
      others.push(tcpdump);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("tcpdump did not start")), 10_000);
        tcpdump?.stderr?.on("data", (d: Buffer) => {
          if (String(d).includes("listening on")) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
    }
    // Retried until the destination service has loaded the registry.
    let res = { code: 1, stdout: "", stderr: "" };
    for (let i = 0; i < 20 && !res.stdout.includes(marker); i++) {
      res = await curl(["-x", `http://${a.outbound}`, "-H", `x-marker: ${marker}`, `http://b.default.svc.cluster.local/${marker}`]);
      if (!res.stdout.includes(marker)) await new Promise((r) => setTimeout(r, 500));
    }
    expect(res.stdout).toBe(`b says ${marker}\n`);
    expect(appB.seen).toContain(marker);

    const aMetrics = await scrape(a.admin);
    expect(sample(aMetrics, "tcp_open_total", 'direction="outbound"', 'peer="dst"', 'tls="true"', `server_id="${B}"`)).toBeGreaterThanOrEqual(1);
    const bMetrics = await scrape(b.admin);
    expect(sample(bMetrics, "tcp_open_total", 'direction="inbound"', 'peer="src"', 'tls="true"', `client_id="${A}"`)).toBeGreaterThanOrEqual(1);
    // Two Node 24 proxies agree on the post-quantum hybrid, and each says so per handshake.
    expect(sample(aMetrics, "tls_handshakes_total", 'direction="outbound"', 'group="X25519MLKEM768"')).toBeGreaterThanOrEqual(1);
    expect(sample(bMetrics, "tls_handshakes_total", 'direction="inbound"', 'group="X25519MLKEM768"')).toBeGreaterThanOrEqual(1);

    if (tcpdump !== undefined && TCPDUMP !== undefined) {
      await new Promise((r) => setTimeout(r, 500));
      tcpdump.kill("SIGTERM");
      await new Promise((r) => tcpdump?.once("exit", r));
      const split = async (port: string, name: string): Promise<Buffer> => {
        const out = path.join(dir, name);
        await run(TCPDUMP, ["-r", capture, "-w", out, `tcp port ${port}`]);
        return readFileSync(out);
      };
      const meshLeg = await split(b.inbound.split(":")[1] ?? "", "mesh.pcap");
      const appLegA = await split(a.outbound.split(":")[1] ?? "", "app-a.pcap");
      const appLegB = await split(String(appB.port), "app-b.pcap");
      expect(meshLeg.length).toBeGreaterThan(2000); // the capture holds the mTLS leg
      expect(meshLeg.includes(marker)).toBe(false);
      expect(appLegA.includes(marker)).toBe(true);
      expect(appLegB.includes(marker)).toBe(true);
      expect(meshLeg.includes(B)).toBe(true); // SNI is in clear: this is the leg we think it is
    } else {
      throw new Error("tcpdump is not installed (CI installs it)");
    }
  });

  it("refuses a server with a valid mesh certificate for another identity: nothing sent, reason in metrics and logs", async () => {
    const secret = `SECRET-${randomBytes(8).toString("hex")}`;
    const res = await curl(["-x", `http://${a.outbound}`, "-i", "-H", `x-secret: ${secret}`, "http://wrong.default.svc.cluster.local/"]);
    expect(res.stdout).toMatch(/^HTTP\/1.1 502/);
    expect(res.stdout.toLowerCase()).toContain("l5d-proxy-error: err_tls_identity_mismatch");
    const impostorOutput = (globalThis as { impostorOutput?: () => string }).impostorOutput?.() ?? "";
    expect(impostorOutput).not.toContain(secret);
    const metrics = await scrape(a.admin);
    expect(sample(metrics, "outbound_tcp_errors_total", 'error="tls_identity_mismatch"', `target_addr="127.0.1.3:${impostorPort}"`)).toBeGreaterThanOrEqual(1);
    await a.proxy.waitFor((l) => l["code"] === "ERR_TLS_IDENTITY_MISMATCH" && String(l["err"]).includes(identityOf("d")));
  });

  it("sends plaintext to an endpoint without identity, labelled not_provided_by_service_discovery", async () => {
    const res = await curl(["-x", `http://${a.outbound}`, "http://plain.default.svc.cluster.local/"]);
    expect(res.stdout).toBe("unmeshed app\n");
    const metrics = await scrape(a.admin);
    expect(sample(metrics, "tcp_open_total", 'peer="dst"', `target_addr="127.0.1.4:${plainPort}"`, 'tls="no_identity"', 'no_tls_reason="not_provided_by_service_discovery"')).toBe(1);
  });

  it("inbound plaintext: forwarded under all-unauthenticated (no_tls_from_remote), refused and counted under all-authenticated", async () => {
    const ok = await curl([`http://${b.inbound}/direct`, "-H", "x-marker: plaintext"]);
    expect(ok.stdout).toBe("b says plaintext\n");
    const bMetrics = await scrape(b.admin);
    expect(sample(bMetrics, "tcp_open_total", 'peer="src"', 'tls="no_identity"', 'no_tls_reason="no_tls_from_remote"')).toBeGreaterThanOrEqual(1);

    const refused = await curl([`http://${strict.inbound}/direct`]);
    expect(refused.code).not.toBe(0);
    const strictMetrics = await scrape(strict.admin);
    expect(sample(strictMetrics, "inbound_tcp_authz_deny_total", 'policy="all-authenticated"', 'reason="unauthenticated"')).toBe(1);
    expect(sample(strictMetrics, "tcp_open_total", 'peer="src"', 'tls="no_identity"', 'no_tls_reason="no_tls_from_remote"')).toBe(1);
  });

  it("inbound: openssl s_client with a certificate from another trust anchor is refused; a TLS 1.2 client is refused", async () => {
    const foreignDir = tempDir("meshtls-foreign-");
    await createForeignPki(foreignDir);
    const foreign = await issueFromDir(foreignDir, A, path.join(foreignDir, "a"));
    const sClient = (args: string[]): Promise<{ code: number; out: string }> =>
      new Promise((resolve) => {
        const child = spawn("openssl", ["s_client", "-connect", strict.inbound, "-servername", B, "-CAfile", material.caFile, ...args], { stdio: ["pipe", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (d: Buffer) => (out += String(d)));
        child.stderr.on("data", (d: Buffer) => (out += String(d)));
        child.stdin.write("GET / HTTP/1.0\r\n\r\n");
        const timer = setTimeout(() => child.kill(), 8000);
        child.on("exit", (code) => {
          clearTimeout(timer);
          resolve({ code: code ?? -1, out });
        });
      });
    const before = sample(await scrape(strict.admin), "inbound_tcp_errors_total", 'error="tls_client_cert_unverified"');
    const withForeign = await sClient(["-cert", foreign.leafFile, "-cert_chain", foreign.chainFile, "-key", foreign.keyFile, "-tls1_3"]);
    expect(withForeign.out).not.toContain("b says");
    expect(sample(await scrape(strict.admin), "inbound_tcp_errors_total", 'error="tls_client_cert_unverified"')).toBe(before + 1);

    const tls12 = await sClient(["-tls1_2"]);
    expect(tls12.code).not.toBe(0);
    expect(tls12.out).toMatch(/alert protocol version|unsupported protocol|no protocols available/i);
  });

  it("inbound: TLS with another SNI passes through untouched to the application's own TLS server", async () => {
    const { stdout } = await run("sh", ["-c", `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client -connect ${front.inbound} -servername app.example -quiet 2>&1 | head -c 4000`], { timeout: 15_000 });
    expect(stdout).toMatch(/depth=0 CN = app\.example/);
    expect(stdout).toContain("HTTP/1.0 200 ok");
    const metrics = await scrape(front.admin);
    expect(sample(metrics, "tcp_open_total", 'peer="src"', 'tls="opaque"', 'sni="app.example"')).toBeGreaterThanOrEqual(1);
  });

  it("with 15-second certificates a long-lived stream keeps flowing across rotations, and new connections present the new certificate", async () => {
    const ca = readFileSync(material.caFile);
    const serverSerial = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: "127.0.1.2", port: Number(b.inbound.split(":")[1]), servername: B, ca, checkServerIdentity: () => undefined }, () => {
          const serial = new X509Certificate(s.getPeerCertificate().raw).serialNumber;
          s.destroy();
          resolve(serial);
        });
        s.once("error", reject);
      });
    const tunnel = net.connect(Number(a.outbound.split(":")[1]), "127.0.1.1");
    tunnel.write(`CONNECT echo.default.svc.cluster.local:${echoPort} HTTP/1.1\r\n\r\n`);
    await new Promise<void>((resolve) => tunnel.once("data", () => resolve()));
    let received = "";
    tunnel.on("data", (d: Buffer) => (received += String(d)));
    let closed = false;
    tunnel.on("close", () => (closed = true));

    const serials = new Set<string>([await serverSerial()]);
    const refreshesBefore = sample(await scrape(b.admin), "identity_cert_refreshes_total", 'result="ok"');
    let sent = "";
    const deadline = Date.now() + 42_000;
    let tick = 0;
    while (Date.now() < deadline) {
      const line = `tick-${tick++}\n`;
      sent += line;
      tunnel.write(line);
      await new Promise((r) => setTimeout(r, 500));
      if (tick % 10 === 0) serials.add(await serverSerial());
    }
    await new Promise((r) => setTimeout(r, 300));
    expect(closed).toBe(false);
    expect(received).toBe(sent);
    const refreshes = sample(await scrape(b.admin), "identity_cert_refreshes_total", 'result="ok"') - refreshesBefore;
    expect(refreshes).toBeGreaterThanOrEqual(3);
    expect(serials.size).toBeGreaterThanOrEqual(3);
    tunnel.destroy();
  }, 70_000);

  it("reloads a changed trust anchors file without restart: a second anchor's clients are then accepted", async () => {
    const foreignDir = tempDir("meshtls-second-anchor-");
    await createForeignPki(foreignDir);
    const second = await issueFromDir(foreignDir, A, path.join(foreignDir, "a"));
    const attempt = (): Promise<string> =>
      run("sh", ["-c", `printf 'GET /reload HTTP/1.0\\r\\nx-marker: second-anchor\\r\\n\\r\\n' | openssl s_client -connect ${strict.inbound} -servername ${B} -CAfile ${material.caFile} -cert ${second.leafFile} -cert_chain ${second.chainFile} -key ${second.keyFile} -tls1_3 -quiet 2>&1 | head -c 4000`], { timeout: 15_000 }).then((r) => r.stdout);
    expect(await attempt()).not.toContain("b says second-anchor");
    const original = readFileSync(material.caFile, "utf8");
    writeFileSync(material.caFile, original + readFileSync(path.join(foreignDir, "ca.crt"), "utf8"));
    await strict.proxy.waitFor((l) => l.msg === "trust anchors loaded" && l["anchors"] === 2, 15_000);
    expect(await attempt()).toContain("b says second-anchor");
    expect(strict.proxy.child.exitCode).toBeNull();
  });

  it("SIGTERM drains: an open stream keeps working until the drain time, then the proxy exits 0", async () => {
    const tunnel = net.connect(Number(a.outbound.split(":")[1]), "127.0.1.1");
    tunnel.write(`CONNECT echo.default.svc.cluster.local:${echoPort} HTTP/1.1\r\n\r\n`);
    await new Promise<void>((resolve) => tunnel.once("data", () => resolve()));
    const started = Date.now();
    a.proxy.child.kill("SIGTERM");
    await a.proxy.waitForMsg("draining");
    const echoed = await new Promise<string>((resolve) => {
      tunnel.once("data", (d: Buffer) => resolve(String(d)));
      tunnel.write("during-drain");
    });
    expect(echoed).toBe("during-drain");
    expect(await a.proxy.exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(8000);
    tunnel.destroy();
  });
});
