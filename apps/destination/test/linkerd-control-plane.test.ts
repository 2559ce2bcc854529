// A real meshtls-proxy (with meshtls-identity in `--control-namespace linkerd`
// mode) under a destination that answers as Linkerd's does, and peers that
// behave as Linkerd's inbound proxy, an external workload and a multicluster
// gateway. The emulation's rules, each with the Linkerd source it comes from
// (read for LINKERD-FACTS.md; facts, not code):
//
// Destination (linkerd2 controller/api/destination/server.go, endpoint_translator.go):
// D1. Get for an IP:port is INVALID_ARGUMENT ("IP queries not supported by Get API").
// D2. An authority without a port means port 80 (getHostAndPort).
// D3. An unknown service is NOT_FOUND ("Service %s.%s not found").
// D4. A service without endpoints gets no first message (no NoEndpoints is ever sent).
// D5. A meshed pod's endpoint carries dns_like_identity and server_name =
//     <sa>.<ns>.serviceaccount.identity.linkerd.<td>; on an opaque port the
//     `opaque` hint and opaque_transport{inbound_port: 4143}; metric labels
//     with control_plane_ns and zone_locality.
// D6. An external workload's endpoint carries uri_like_identity plus
//     server_name (linkerd2-proxy linkerd/proxy/api-resolve/src/pb.rs to_identity).
// D7. A mirrored service's endpoint is its gateway with the gateway's identity
//     and authority_override = the target's <fqn>:<port>.
// Peers:
// P1. Linkerd's inbound on 4143 takes TLS with ALPN transport.l5d.io/v1 and a
//     header naming the target port, without a name (linkerd2-proxy
//     outbound/src/tcp/tagged_transport.rs, inbound/src/direct.rs).
// P2. An external workload presents its SPIFFE URI SAN; the client checks it
//     (pb.rs: the URI identity is what is verified, server_name the SNI).
// P3. Linkerd's gateway refuses a connection without the transport ALPN and
//     a header whose `name` is the target (inbound/src/direct.rs).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";
import { Server, ServerCredentials, status, type ServerWritableStream } from "@grpc/grpc-js";
import {
  decodeTransportHeader,
  DestinationService,
  ipToTcpAddress,
  TRANSPORT_HEADER_ALPN,
  type DestinationServer,
  type GetDestination,
  type Update,
  type WeightedAddr,
} from "@meshtls/api";
import { exportPrivateKey, generateKeyPair, importPrivateKey, issueLeaf, pemEncode, toDer } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, waitFor } from "./support.js";

const run = promisify(execFile);
const cliBin = path.join(repoRoot, "apps/cli/dist/main.js");
const identityBin = path.join(repoRoot, "apps/identity/dist/main.js");
const proxyBin = path.join(repoRoot, "apps/proxy/dist/main.js");
const idOf = (sa: string, ns: string): string => `${sa}.${ns}.serviceaccount.identity.linkerd.cluster.local`;
const CLIENT_ID = idOf("client", "shop");
const WEB_ID = idOf("web", "shop");
const VM_ID = idOf("vm", "external");
const VM_URI = "spiffe://cluster.local/ns/external/sa/vm";
const GATEWAY_ID = idOf("linkerd-gateway", "linkerd-multicluster");

interface Seen {
  sni: string | false;
  alpn: string | false | null;
  clientSan: string;
  header?: { port: number; name?: string };
}

type LogLine = Record<string, unknown>;

/** A spawned process whose JSON log lines are collected. */
function startNode(bin: string, args: string[]): { child: ChildProcess; logs: LogLine[]; stderr: () => string } {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "" } });
  const logs: LogLine[] = [];
  let pending = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ raw: line });
      }
    }
  });
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  return { child, logs, stderr: () => stderr };
}

describe("a meshtls proxy under a Linkerd-like destination", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "meshtls-linkerd-cp-"));
  const file = (name: string): string => path.join(dir, name);
  const children: ChildProcess[] = [];
  const servers: (net.Server | Server)[] = [];
  const getPaths: string[] = [];
  let routes: Record<string, string> = {};
  let proxyLogs: LogLine[] = [];

  /** A leaf from the mesh's issuer, as Linkerd's identity would issue it (DNS SAN first, then the SPIFFE ID). */
  async function leafFor(identity: string, spiffeId?: string): Promise<{ key: string; cert: string }> {
    const issuerCert = toDer(readFileSync(file("issuer.crt"), "utf8"), "CERTIFICATE");
    const issuerKey = await importPrivateKey(readFileSync(file("issuer.key"), "utf8"));
    const keyPair = await generateKeyPair();
    const leaf = await issueLeaf({ issuer: { certificate: issuerCert, privateKey: issuerKey.privateKey }, publicKey: keyPair.publicKey, identity, ...(spiffeId === undefined ? {} : { spiffeId }) });
    return { key: (await exportPrivateKey(keyPair.privateKey)) as string, cert: pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuerCert) };
  }

  /** A mesh TLS peer (P1-P3): requires a client certificate, records what the client sent, answers "<kind> ok". */
  async function peer(kind: string, identity: string, options: { spiffeId?: string; alpn?: string[] } = {}): Promise<{ port: number; seen: Seen[] }> {
    const leaf = await leafFor(identity, options.spiffeId);
    const seen: Seen[] = [];
    const server = tls.createServer(
      { ...leaf, ca: readFileSync(file("ca.crt")), requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3", ...(options.alpn ? { ALPNProtocols: options.alpn } : {}) },
      (socket) => {
        socket.on("error", () => undefined);
        const entry: Seen = {
          sni: (socket as tls.TLSSocket & { servername: string | false }).servername,
          alpn: socket.alpnProtocol,
          clientSan: socket.getPeerX509Certificate()?.subjectAltName ?? "",
        };
        seen.push(entry);
        if (options.alpn !== undefined && socket.alpnProtocol !== TRANSPORT_HEADER_ALPN) {
          socket.destroy(); // P3: no transport ALPN, no service.
          return;
        }
        let buffered = Buffer.alloc(0);
        socket.on("data", (chunk: Buffer) => {
          buffered = Buffer.concat([buffered, chunk]);
          if (options.alpn !== undefined && entry.header === undefined) {
            try {
              const header = decodeTransportHeader(buffered);
              entry.header = { port: header.port, ...(header.name === undefined ? {} : { name: header.name }) };
              buffered = buffered.subarray(header.byteLength);
            } catch {
              return;
            }
          }
          if (buffered.includes("\n")) socket.end(`${kind} ok\n`);
        });
      },
    );
    servers.push(server);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return { port: (server.address() as net.AddressInfo).port, seen };
  }

  /** Sends a line through one of the proxy's routes and returns what came back ("" when the proxy closed it). */
  function through(route: string, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve) => {
      const [host, port] = [routes[route]!.split(":")[0]!, Number(routes[route]!.split(":").pop())];
      const socket = net.connect(port, host);
      let got = "";
      const timer = setTimeout(() => socket.destroy(), timeoutMs);
      socket.on("data", (chunk: Buffer) => (got += chunk.toString()));
      socket.on("error", () => undefined);
      socket.on("close", () => {
        clearTimeout(timer);
        resolve(got);
      });
      socket.write("hello\n");
    });
  }

  let web: Awaited<ReturnType<typeof peer>>;
  let vm: Awaited<ReturnType<typeof peer>>;
  let gateway: Awaited<ReturnType<typeof peer>>;

  beforeAll(async () => {
    for (const bin of [cliBin, identityBin, proxyBin]) if (!existsSync(bin)) throw new Error(`${bin} is missing: build meshtls-identity, meshtls-proxy and the meshtls CLI first`);
    await run(process.execPath, [cliBin, "certs", "create", "--out", dir, "--control-namespace", "linkerd"]);
    await run(process.execPath, [cliBin, "token", "keygen", "--out", file("token")]);
    writeFileSync(file("client.token"), (await run(process.execPath, [cliBin, "token", "mint", "--key", file("token/token-signer.key"), "--namespace", "shop", "--service-account", "client"])).stdout.trim());

    web = await peer("web", WEB_ID, { alpn: [TRANSPORT_HEADER_ALPN] });
    vm = await peer("vm", VM_ID, { spiffeId: VM_URI });
    gateway = await peer("gateway", GATEWAY_ID, { alpn: [TRANSPORT_HEADER_ALPN] });

    const weighted = (port: number, extra: Partial<WeightedAddr>): WeightedAddr => ({
      addr: ipToTcpAddress("127.0.0.1", port), weight: 10000, metricLabels: {}, tlsIdentity: undefined, protocolHint: undefined, authorityOverride: undefined, ...extra,
    });
    const add = (addr: WeightedAddr, labels: Record<string, string>): Update => ({ update: { $case: "add", value: { addrs: [addr], metricLabels: labels } } });
    const answers: Record<string, Update | "silent"> = {
      // D5: an opaque port (5432 is in Linkerd's default opaque list).
      "web.shop.svc.cluster.local:5432": add(
        weighted(5432, {
          tlsIdentity: { strategy: { $case: "dnsLikeIdentity", value: { name: WEB_ID } }, serverName: { name: WEB_ID } },
          protocolHint: { protocol: { $case: "opaque", value: {} }, opaqueTransport: { inboundPort: web.port } },
          metricLabels: { pod: "web-0", serviceaccount: "web", control_plane_ns: "linkerd", zone_locality: "local" },
        }),
        { namespace: "shop", service: "web" },
      ),
      // D6 (the proxy's routes name their port; D2 is the server's reading of one that does not).
      "vm.external.svc.cluster.local:80": add(
        weighted(vm.port, { tlsIdentity: { strategy: { $case: "uriLikeIdentity", value: { uri: VM_URI } }, serverName: { name: VM_ID } } }),
        { namespace: "external", service: "vm" },
      ),
      "impostor.external.svc.cluster.local:80": add(
        weighted(vm.port, { tlsIdentity: { strategy: { $case: "uriLikeIdentity", value: { uri: "spiffe://cluster.local/ns/external/sa/other" } }, serverName: { name: VM_ID } } }),
        { namespace: "external", service: "impostor" },
      ),
      // D7.
      "web-west.shop.svc.cluster.local:8080": add(
        weighted(gateway.port, {
          tlsIdentity: { strategy: { $case: "dnsLikeIdentity", value: { name: GATEWAY_ID } }, serverName: { name: GATEWAY_ID } },
          authorityOverride: { authorityOverride: "web.shop.svc.cluster.west:8080" },
        }),
        { namespace: "shop", service: "web-west" },
      ),
      // D4.
      "empty.shop.svc.cluster.local:80": "silent",
    };
    const destination: DestinationServer = {
      get(call: ServerWritableStream<GetDestination, Update>) {
        const requested = call.request.path;
        getPaths.push(requested);
        const host = requested.includes(":") ? requested.slice(0, requested.lastIndexOf(":")) : requested;
        if (/^[0-9.]+$/.test(host) || host.startsWith("[")) {
          call.emit("error", { code: status.INVALID_ARGUMENT, details: `IP queries not supported by Get API: host=${host}` }); // D1
          return;
        }
        const path = requested.includes(":") ? requested : `${requested}:80`; // D2
        const answer = answers[path];
        if (answer === undefined) {
          call.emit("error", { code: status.NOT_FOUND, details: `Service ${host} not found` }); // D3
          return;
        }
        if (answer !== "silent") call.write(answer);
      },
      getProfile(call) {
        call.emit("error", { code: status.UNIMPLEMENTED, details: "not emulated" });
      },
    };
    const grpcServer = new Server();
    grpcServer.addService(DestinationService, destination);
    const destinationLeaf = await leafFor(idOf("linkerd-destination", "linkerd"));
    const destinationPort = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync("127.0.0.1:0", ServerCredentials.createSsl(readFileSync(file("ca.crt")), [{ cert_chain: Buffer.from(destinationLeaf.cert), private_key: Buffer.from(destinationLeaf.key) }], false), (error, port) =>
        error ? reject(error) : resolve(port),
      ),
    );
    servers.push(grpcServer);

    const identity = startNode(identityBin, ["--trust-anchors", file("ca.crt"), "--issuer-dir", dir, "--token-jwks", file("token/jwks.json"), "--token-issuer", "https://meshtls.local", "--control-namespace", "linkerd", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    children.push(identity.child);
    const identityListening = await waitFor(() => identity.logs.find((l) => l.msg === "listening"), 20_000, "meshtls-identity listening", () => (identity.child.exitCode === null ? undefined : identity.stderr()));

    const routeArgs = ["web.shop.svc.cluster.local:5432", "vm.external.svc.cluster.local:80", "impostor.external.svc.cluster.local:80", "web-west.shop.svc.cluster.local:8080", "empty.shop.svc.cluster.local:80", "missing.shop.svc.cluster.local:80"]
      .flatMap((authority) => ["--route", `127.0.0.1:0=${authority}`]);
    const proxy = startNode(proxyBin, [
      "--identity", CLIENT_ID,
      "--token-file", file("client.token"),
      "--trust-anchors", file("ca.crt"),
      "--identity-addr", String(identityListening.grpc),
      "--identity-name", idOf("linkerd-identity", "linkerd"),
      "--destination-addr", `127.0.0.1:${destinationPort}`,
      "--destination-name", idOf("linkerd-destination", "linkerd"),
      "--context-token", JSON.stringify({ ns: "shop", nodeName: "node-1", pod: "client-0" }),
      "--inbound", "127.0.0.1:0",
      "--outbound", "127.0.0.1:0",
      "--admin", "127.0.0.1:0",
      "--workload", "127.0.0.1:9",
      "--connect-timeout", "3s",
      ...routeArgs,
    ]);
    children.push(proxy.child);
    proxyLogs = proxy.logs;
    const listening = await waitFor(() => proxy.logs.find((l) => l.msg === "listening"), 20_000, "meshtls-proxy listening", () => (proxy.child.exitCode === null ? undefined : `${proxy.stderr()} ${JSON.stringify(proxy.logs.slice(-3))}`));
    await waitFor(() => proxy.logs.find((l) => String(l.msg).startsWith("first certificate obtained")), 20_000, "the proxy's certificate");
    const listeners = listening.routes as string[];
    routes = { web: listeners[0]!, vm: listeners[1]!, impostor: listeners[2]!, west: listeners[3]!, empty: listeners[4]!, missing: listeners[5]! };
  }, 90_000);

  afterAll(async () => {
    for (const child of children) child.kill("SIGTERM");
    for (const server of servers) {
      if (server instanceof Server) server.forceShutdown();
      else server.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("meshed traffic is mTLS with the right identities: SNI and checked peer = the endpoint's identity, client = the proxy's; opaque transport without a name (D5, P1)", async () => {
    expect(await through("web")).toBe("web ok\n");
    const seen = web.seen.at(-1)!;
    expect(seen.sni).toBe(WEB_ID);
    expect(seen.clientSan.split(", ")[0]).toBe(`DNS:${CLIENT_ID}`);
    expect(seen.alpn).toBe(TRANSPORT_HEADER_ALPN);
    expect(seen.header).toEqual({ port: 5432 });
  });

  it("a URI identity is checked against the URI SAN with server_name as the SNI, and another URI is refused (D6, P2)", async () => {
    expect(await through("vm")).toBe("vm ok\n");
    expect(vm.seen.at(-1)?.sni).toBe(VM_ID);
    expect(getPaths).toContain("vm.external.svc.cluster.local:80");
    expect(await through("impostor")).toBe("");
    // Same server, same certificate: the proxy refused it for its URI SAN.
    await waitFor(() => proxyLogs.find((l) => l.code === "ERR_TLS_IDENTITY_MISMATCH"), 5_000, "the identity mismatch in the proxy's log");
  });

  it("an authority override reaches the gateway over mTLS with the transport ALPN and a header naming the target (D7, P3)", async () => {
    expect(await through("west")).toBe("gateway ok\n");
    const seen = gateway.seen.at(-1)!;
    expect(seen.sni).toBe(GATEWAY_ID);
    expect(seen.alpn).toBe(TRANSPORT_HEADER_ALPN);
    expect(seen.header).toEqual({ port: 8080, name: "web.shop.svc.cluster.west" });
    expect(seen.clientSan.split(", ")[0]).toBe(`DNS:${CLIENT_ID}`);
  });

  it("an unknown service (NOT_FOUND) and a silent service (no first message) are refused promptly, not after the resolution timeout (D3, D4)", async () => {
    const started = Date.now();
    expect(await through("missing")).toBe("");
    expect(await through("empty")).toBe("");
    // NOT_FOUND at once, silence after the client's 3 s initial timeout; the proxy's own wait would be longer.
    expect(Date.now() - started).toBeLessThan(9_000);
    expect(getPaths.some((p) => p.startsWith("missing.shop.svc.cluster.local"))).toBe(true);
  });
});
