// A meshed but malicious peer against a real meshtls-proxy process: a client
// holding a valid certificate of the mesh's own issuer.
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { encodeHeader, TRANSPORT_ALPN } from "@meshtls/proxy-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bins, createMaterial, freePort, identityOf, issueFromDir, sample, scrape, startNode, tempDir, topLevelKeys } from "./harness.ts";
import type { Material, Proc } from "./harness.ts";

const B = identityOf("b");
const IP = "127.0.2.1";

describe("meshtls-proxy against a meshed client with a valid certificate (real processes on loopback)", () => {
  const procs: Proc[] = [];
  const servers: net.Server[] = [];
  let dir: string;
  let material: Material;
  let proxy: Proc;
  let args: string[];
  let addresses: { inbound: string; outbound: string; admin: string; route: string };
  let ports: { echo: number; declared: number; secret: number };
  let mallory: { certFile: string; keyFile: string };
  const secretSeen: string[] = [];

  async function listen(server: net.Server): Promise<number> {
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, IP, resolve));
    return (server.address() as net.AddressInfo).port;
  }

  beforeAll(async () => {
    dir = tempDir("meshtls-proxy-hardening-");
    material = await createMaterial(dir);
    const identity = startNode("identity", bins.identity, [
      "--trust-anchors", material.caFile, "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"),
      "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
    ]);
    procs.push(identity);
    const idListening = await identity.waitForMsg("listening");
    const registryFile = path.join(dir, "registry.yaml");
    writeFileSync(registryFile, "services: []\n");
    const destination = startNode("destination", bins.destination, ["--registry", registryFile, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"]);
    procs.push(destination);
    const destinationAddr = String((await destination.waitForMsg("listening"))["grpcAddress"]);

    const echo = (): net.Server => net.createServer((s) => s.on("error", () => undefined).pipe(s));
    // A service on the workload's host that is not one of its declared inbound ports.
    const secret = net.createServer((s) => {
      s.on("error", () => undefined);
      s.on("data", (d: Buffer) => secretSeen.push(String(d)));
      s.end("secret-service\n");
    });
    ports = { echo: await listen(echo()), declared: await listen(echo()), secret: await listen(secret) };
    mallory = await issueFromDir(dir, identityOf("mallory"), path.join(dir, "mallory"));

    args = [
      "--identity", B,
      "--token-file", await material.tokenFile("b"),
      "--trust-anchors", material.caFile,
      "--identity-addr", String(idListening["grpc"]),
      "--identity-name", String(idListening["serverName"]),
      "--destination-addr", destinationAddr,
      "--destination-insecure-plaintext",
      "--workload", `${IP}:${ports.echo}`,
      "--outbound-bind", IP,
      "--drain-timeout", "1s",
    ];
    const inboundPort = await freePort(IP);
    proxy = startNode("proxy-b", bins.proxy, [
      ...args,
      "--inbound", `${IP}:${inboundPort}`,
      "--outbound", `${IP}:0`,
      "--admin", `${IP}:0`,
      "--route", `${IP}:0=api.default.svc.cluster.local:80`,
      "--inbound-ports", String(ports.declared),
    ]);
    procs.push(proxy);
    const listening = await proxy.waitForMsg("listening");
    await proxy.waitForMsg("first certificate obtained: ready");
    addresses = {
      inbound: String(listening["inbound"]),
      outbound: String(listening["outbound"]),
      admin: String(listening["admin"]),
      route: String((listening["routes"] as string[])[0]),
    };
  }, 120_000);

  afterAll(async () => {
    for (const server of servers) server.close();
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  });

  const portOf = (address: string): number => Number(address.slice(address.lastIndexOf(":") + 1));

  /** Opaque transport with mallory's valid certificate: the header names `port`, then `payload`; what comes back before close (or "open:" + it after 2 s). */
  async function direct(port: number, payload: string): Promise<string> {
    const socket = tls.connect({
      host: IP,
      port: portOf(addresses.inbound),
      servername: B,
      ca: readFileSync(material.caFile),
      cert: readFileSync(mallory.certFile),
      key: readFileSync(mallory.keyFile),
      ALPNProtocols: [TRANSPORT_ALPN],
      checkServerIdentity: () => undefined,
    });
    await once(socket, "secureConnect");
    expect(socket.alpnProtocol).toBe(TRANSPORT_ALPN);
    socket.write(Buffer.concat([encodeHeader({ port }), Buffer.from(payload)]));
    return new Promise((resolve) => {
      let got = "";
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(`open:${got}`);
      }, 2000);
      socket.on("data", (d: Buffer) => (got += String(d)));
      socket.on("error", () => undefined);
      socket.on("close", () => {
        clearTimeout(timer);
        resolve(got);
      });
    });
  }

  it("a transport header naming the admin, outbound, inbound or a route port, or an undeclared service port, is refused and counted; /shutdown never runs", async () => {
    const shutdown = "POST /shutdown HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n";
    for (const address of [addresses.admin, addresses.outbound, addresses.inbound, addresses.route]) {
      expect(await direct(portOf(address), shutdown), address).toBe("");
    }
    expect(await direct(ports.secret, "GET /secret HTTP/1.0\r\n\r\n")).toBe("");
    expect(secretSeen).toEqual([]);

    const metrics = await scrape(addresses.admin);
    expect(sample(metrics, "inbound_tcp_errors_total", 'error="transport_header_proxy_port"')).toBe(4);
    expect(sample(metrics, "inbound_tcp_errors_total", 'error="transport_header_port_forbidden"')).toBe(1);
    await proxy.waitFor((l) => l["code"] === "ERR_TARGET_FORBIDDEN" && String(l["err"]).includes(`port ${portOf(addresses.admin)}`));
    expect(proxy.lines.some((l) => l.msg === "shutdown requested on the admin server")).toBe(false);
    expect(proxy.child.exitCode).toBeNull();
    expect((await fetch(`http://${addresses.admin}/live`)).status).toBe(200);
  });

  it("a declared inbound port and the workload port still work through the header", async () => {
    expect(await direct(ports.declared, "to-declared")).toBe("open:to-declared");
    expect(await direct(ports.echo, "to-workload")).toBe("open:to-workload");
  });

  it("GET /identity shows the identity, the chain presented and the anchors the proxy trusts", async () => {
    const res = await fetch(`http://${addresses.admin}/identity`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { identity: string; notAfter: string; certificateChainPem: string; trustAnchorsPem: string };
    expect(body.identity).toBe(B);
    const leaf = new X509Certificate(body.certificateChainPem);
    expect(leaf.subjectAltName).toContain(`DNS:${B}`);
    expect(new Date(leaf.validTo).getTime()).toBe(new Date(body.notAfter).getTime());
    expect(new X509Certificate(body.trustAnchorsPem).fingerprint256).toBe(new X509Certificate(readFileSync(material.caFile)).fingerprint256);
  });

  it("POST /renew from loopback renews now: a new key and certificate in use, answered with the new notAfter", async () => {
    const before = (await (await fetch(`http://${addresses.admin}/identity`)).json()) as { certificateChainPem: string };
    const res = await fetch(`http://${addresses.admin}/renew`, { method: "POST" });
    expect(res.status).toBe(200);
    const { notAfter } = (await res.json()) as { notAfter: string };
    const after = (await (await fetch(`http://${addresses.admin}/identity`)).json()) as { notAfter: string; certificateChainPem: string };
    expect(after.notAfter).toBe(notAfter);
    expect(after.certificateChainPem).not.toBe(before.certificateChainPem);
    const [oldLeaf, newLeaf] = [new X509Certificate(before.certificateChainPem), new X509Certificate(after.certificateChainPem)];
    expect(newLeaf.publicKey.export({ type: "spki", format: "der" }).equals(oldLeaf.publicKey.export({ type: "spki", format: "der" }))).toBe(false);
    expect((await fetch(`http://${addresses.admin}/renew`)).status).toBe(405);
  });

  it("every log line carries each key once (identity once, also on the certifier's and the TLS layer's lines)", async () => {
    const certified = proxy.raw.filter((line) => line.includes('"msg":"certified"') || line.includes('"msg":"mesh TLS credentials loaded"'));
    expect(certified.length).toBeGreaterThanOrEqual(2);
    for (const line of proxy.raw) {
      const keys = topLevelKeys(line);
      expect(keys.length, line).toBeGreaterThan(0);
      expect(new Set(keys).size, line).toBe(keys.length);
      expect(keys.filter((k) => k === "identity").length, line).toBe(1);
    }
  });

  it("a second proxy on a port still held (a draining proxy) says so in one line naming the port and exits 1", async () => {
    const second = startNode("proxy-second", bins.proxy, [...args, "--inbound", addresses.inbound, "--outbound", `${IP}:0`, "--admin", `${IP}:0`]);
    procs.push(second);
    expect(await second.exited).toBe(1);
    const errors = second.lines.filter((l) => Number(l["level"]) >= 50);
    expect(errors.length).toBe(1);
    expect(errors[0]?.msg).toBe(`port ${portOf(addresses.inbound)} is held by another process (perhaps a proxy still draining): exiting`);
    expect(errors[0]?.["address"]).toBe(addresses.inbound);
    expect(proxy.child.exitCode).toBeNull();
  });
});
