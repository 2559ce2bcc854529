// A Linkerd proxy's start-up, emulated step by step against the real
// meshtls-identity and meshtls-destination in `--control-namespace linkerd`
// mode. The client knows only the proxy API's messages (our protos,
// wire-identical to linkerd2-proxy-api's) and speaks gRPC over raw HTTP/2 on
// TLS without ALPN, as linkerd2-proxy does. Each rule it follows names the
// Linkerd source it comes from (read for LINKERD-FACTS.md; facts, not code):
//
// 1. Control-plane connections are TLS 1.3 with no ALPN at all
//    (linkerd2-proxy linkerd/tls/src/client.rs ClientTls::new,
//    linkerd/app/src/env.rs parse_control_addr).
// 2. The proxy verifies each control-plane service by the identity its
//    environment names: linkerd-identity.linkerd.serviceaccount.identity.linkerd.<td>,
//    linkerd-destination.linkerd.… (linkerd2 charts/partials/templates/_proxy.tpl,
//    LINKERD2_PROXY_IDENTITY_SVC_NAME / _DESTINATION_SVC_NAME); identity is
//    reached without a client certificate, destination and policy with the
//    certificate Certify gave.
// 3. Certify carries the identity `<sa>.<ns>.serviceaccount.identity.linkerd.<td>`,
//    the projected token (audience identity.l5d.io, LINKERD2_PROXY_IDENTITY_TOKEN_FILE)
//    and a DER CSR with one DNS SAN and no URI SAN (linkerd2 pkg/identity/service.go
//    checkCSR refuses URI SANs).
// 4. The proxy takes the leaf's *first* SAN as its identity
//    (linkerd2-proxy linkerd/meshtls/verifier/src/lib.rs): it must be the DNS name.
// 5. Outbound targets are looked up with GetProfile first, for names and for
//    IP:port (linkerd/app/outbound/src/discover.rs, linkerd/service-profiles/src/client.rs);
//    a service answers with fully_qualified_name, a pod IP with `endpoint`
//    (linkerd2 controller/api/destination/server.go); the scheme is empty and
//    the context token is {"ns","nodeName","pod"} (LINKERD2_PROXY_DESTINATION_CONTEXT).
// 6. A profile's fully_qualified_name is then resolved with Get(<fqn>:<port>)
//    (linkerd/app/outbound/src/discover.rs).
// 7. Inbound policy: WatchPort on io.linkerd.proxy.inbound.InboundServerPolicies
//    for each inbound port, workload {"ns","pod"} (linkerd/app/inbound/src/policy/api.rs).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";
import {
  CertifyRequest,
  CertifyResponse,
  DestinationProfile,
  GetDestination,
  PortSpec,
  InboundServer,
  tcpAddressToString,
  Update,
  type MessageFns,
} from "@meshtls/api";
import { parseCertificate } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, startDestination, waitFor, type DestinationProcess } from "./support.js";

const run = promisify(execFile);
const cliBin = path.join(repoRoot, "apps/cli/dist/main.js");
const identityBin = path.join(repoRoot, "apps/identity/dist/main.js");
const TD = "cluster.local";
const idOf = (sa: string, ns: string): string => `${sa}.${ns}.serviceaccount.identity.linkerd.${TD}`;
const IDENTITY_SVC = idOf("linkerd-identity", "linkerd");
const DESTINATION_SVC = idOf("linkerd-destination", "linkerd");
const PROXY_ID = idOf("web", "shop");

const REGISTRY = `services:
  - name: web
    namespace: shop
    clusterIP: 10.96.0.20
    ports: [{ port: 8080, targetPort: 8080 }]
    endpoints:
      - { address: 127.0.7.1, serviceAccount: web, pod: web-0 }
      - { address: 127.0.7.2, serviceAccount: web, pod: web-1 }
workloads:
  - name: web-0
    namespace: shop
    labels: { app: web }
    ports: [{ name: http, port: 8080 }]
servers:
  - name: web-http
    namespace: shop
    podSelector: { matchLabels: { app: web } }
    port: http
    proxyProtocol: HTTP/1
    accessPolicy: all-authenticated
`;

/** Rule 1: a TLS 1.3 connection offering no ALPN, then HTTP/2 on it. */
async function controlSession(port: number, serverName: string, ca: Buffer, client?: { cert: string; key: string }): Promise<http2.ClientHttp2Session> {
  const socket = tls.connect({ host: "127.0.0.1", port, servername: serverName, ca, minVersion: "TLSv1.3", ...(client ?? {}) });
  await once(socket, "secureConnect");
  expect(socket.alpnProtocol, "no ALPN was offered, none negotiated").toBe(false);
  const session = http2.connect(`https://${serverName}`, { createConnection: () => socket });
  session.on("error", () => undefined);
  return session;
}

/** gRPC on a raw HTTP/2 stream: length-prefixed messages out and in, grpc-status in the trailers. */
function grpcCall<Req, Res>(
  session: http2.ClientHttp2Session,
  method: string,
  request: Req,
  codecs: { req: MessageFns<Req>; res: MessageFns<Res> },
): { messages: Res[]; status: Promise<{ code: number; message: string }>; close(): void } {
  const body = Buffer.from(codecs.req.encode(request).finish());
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  const stream = session.request({ ":method": "POST", ":path": method, "content-type": "application/grpc", te: "trailers" });
  const messages: Res[] = [];
  let pending = Buffer.alloc(0);
  stream.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
      const length = pending.readUInt32BE(1);
      messages.push(codecs.res.decode(pending.subarray(5, 5 + length)));
      pending = pending.subarray(5 + length);
    }
  });
  const status = new Promise<{ code: number; message: string }>((resolve) => {
    let headers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (headers = h));
    stream.on("trailers", (t) => (headers = { ...headers, ...t }));
    stream.on("close", () => resolve({ code: Number(headers["grpc-status"] ?? -1), message: String(headers["grpc-message"] ?? "") }));
  });
  stream.on("error", () => undefined);
  stream.end(Buffer.concat([prefix, body]));
  return { messages, status, close: () => stream.close(http2.constants.NGHTTP2_CANCEL) };
}

describe("a Linkerd proxy's start-up against meshtls-identity and meshtls-destination (--control-namespace linkerd)", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "meshtls-linkerd-proxy-"));
  const file = (name: string): string => path.join(dir, name);
  let identity: ChildProcess | undefined;
  let identityPort = 0;
  let destination: DestinationProcess | undefined;
  let anchors: Buffer;
  const sessions: http2.ClientHttp2Session[] = [];

  /** Rule 3: Certify as the proxy does; writes <name>.pem (leaf + intermediates) and returns it. */
  async function certify(sa: string, ns: string, name: string): Promise<{ leaf: Buffer; chainPem: string }> {
    const key = file(`${name}.key`);
    const csr = file(`${name}.csr.der`);
    await run("openssl", ["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", key, "-outform", "DER", "-out", csr, "-subj", "/", "-addext", `subjectAltName=DNS:${idOf(sa, ns)}`]);
    const token = (await run(process.execPath, [cliBin, "token", "mint", "--key", file("token/token-signer.key"), "--namespace", ns, "--service-account", sa])).stdout.trim();
    const session = await controlSession(identityPort, IDENTITY_SVC, anchors);
    sessions.push(session);
    const call = grpcCall(session, "/io.linkerd.proxy.identity.Identity/Certify",
      CertifyRequest.fromPartial({ identity: idOf(sa, ns), token: Buffer.from(token), certificateSigningRequest: readFileSync(csr) }),
      { req: CertifyRequest, res: CertifyResponse });
    const status = await call.status;
    expect(status.code, `Certify ${idOf(sa, ns)}: ${status.message}`).toBe(0);
    const response = call.messages[0]!;
    const pem = (der: Uint8Array): string => `-----BEGIN CERTIFICATE-----\n${Buffer.from(der).toString("base64").match(/.{1,64}/g)!.join("\n")}\n-----END CERTIFICATE-----\n`;
    const chainPem = pem(response.leafCertificate) + response.intermediateCertificates.map(pem).join("");
    writeFileSync(file(`${name}.pem`), chainPem);
    writeFileSync(file(`${name}.leaf.pem`), pem(response.leafCertificate));
    writeFileSync(file(`${name}.intermediates.pem`), response.intermediateCertificates.map(pem).join(""));
    return { leaf: Buffer.from(response.leafCertificate), chainPem };
  }

  beforeAll(async () => {
    for (const bin of [cliBin, identityBin]) if (!existsSync(bin)) throw new Error(`${bin} is missing: build meshtls-identity and the meshtls CLI first`);
    await run(process.execPath, [cliBin, "certs", "create", "--out", dir, "--control-namespace", "linkerd"]);
    await run(process.execPath, [cliBin, "token", "keygen", "--out", file("token")]);
    anchors = readFileSync(file("ca.crt"));
    identity = spawn(process.execPath, [identityBin, "--trust-anchors", file("ca.crt"), "--issuer-dir", dir, "--token-jwks", file("token/jwks.json"), "--token-issuer", "https://meshtls.local",
      "--control-namespace", "linkerd", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "" } });
    let out = "";
    identity.stdout!.setEncoding("utf8").on("data", (chunk: string) => (out += chunk));
    const listening = await waitFor(() => out.split("\n").map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return {}; } }).find((l) => l.msg === "listening"), 20_000, "meshtls-identity listening");
    expect(listening.serverName, "rule 2: the identity service's own name").toBe(IDENTITY_SVC);
    identityPort = Number(String(listening.grpc).split(":").pop());
    // The destination's own certificate comes from Certify too, as a Linkerd destination pod's would.
    await certify("linkerd-destination", "linkerd", "destination");
    writeFileSync(file("registry.yaml"), REGISTRY);
    destination = await startDestination({
      registryFile: file("registry.yaml"),
      args: ["--control-namespace", "linkerd", "--tls-cert", file("destination.pem"), "--tls-key", file("destination.key"), "--tls-client-ca", file("ca.crt")],
    });
  }, 60_000);

  afterAll(async () => {
    for (const session of sessions) session.destroy();
    identity?.kill("SIGTERM");
    await destination?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("certifies with a DER CSR of one DNS SAN over TLS without ALPN; the leaf's first SAN is the DNS identity and openssl verify accepts it", async () => {
    const { leaf } = await certify("web", "shop", "proxy");
    const summary = parseCertificate(new Uint8Array(leaf));
    expect(summary.san.dns[0], "rule 4").toBe(PROXY_ID);
    const text = (await run("openssl", ["x509", "-in", file("proxy.leaf.pem"), "-noout", "-ext", "subjectAltName"])).stdout;
    expect(text.split("\n")[1]?.trim().startsWith(`DNS:${PROXY_ID}`), text).toBe(true);
    const verify = await run("openssl", ["verify", "-CAfile", file("ca.crt"), "-untrusted", file("proxy.intermediates.pem"), "-purpose", "sslclient", file("proxy.leaf.pem")]);
    expect(verify.stdout.trim()).toBe(`${file("proxy.leaf.pem")}: OK`);
  });

  it("looks up a name, a ClusterIP and a pod IP with GetProfile, then resolves the profile's name with Get, over mTLS without ALPN", async () => {
    if (!existsSync(file("proxy.pem"))) await certify("web", "shop", "proxy");
    const client = { cert: readFileSync(file("proxy.pem"), "utf8"), key: readFileSync(file("proxy.key"), "utf8") };
    const session = await controlSession(destination!.grpcPort, DESTINATION_SVC, anchors, client);
    sessions.push(session);
    const context = JSON.stringify({ ns: "shop", nodeName: "node-1", pod: "web-0" });
    const profile = async (path: string): Promise<DestinationProfile> => {
      const call = grpcCall(session, "/io.linkerd.proxy.destination.Destination/GetProfile", { scheme: "", path, contextToken: context }, { req: GetDestination, res: DestinationProfile });
      await waitFor(() => call.messages[0], 10_000, `a profile for ${path}`);
      call.close();
      return call.messages[0]!;
    };
    // Rule 5.
    expect((await profile("web.shop.svc.cluster.local:8080")).fullyQualifiedName).toBe("web.shop.svc.cluster.local");
    expect((await profile("10.96.0.20:8080")).fullyQualifiedName).toBe("web.shop.svc.cluster.local");
    const pod = await profile("127.0.7.1:8080");
    expect(pod.fullyQualifiedName).toBe("");
    expect(pod.endpoint?.tlsIdentity?.strategy).toEqual({ $case: "dnsLikeIdentity", value: { name: PROXY_ID } });
    expect(pod.endpoint?.tlsIdentity?.serverName?.name).toBe(PROXY_ID);
    expect(pod.endpoint?.protocolHint?.opaqueTransport?.inboundPort).toBe(4143);
    // Rule 6.
    const get = grpcCall(session, "/io.linkerd.proxy.destination.Destination/Get", { scheme: "", path: "web.shop.svc.cluster.local:8080", contextToken: context }, { req: GetDestination, res: Update });
    const first = await waitFor(() => get.messages[0], 10_000, "the first Get update");
    get.close();
    expect(first.update?.$case).toBe("add");
    if (first.update?.$case !== "add") return;
    expect(first.update.value.addrs.map((a) => tcpAddressToString(a.addr!)).sort()).toEqual(["127.0.7.1:8080", "127.0.7.2:8080"]);
    expect(first.update.value.addrs.every((a) => a.tlsIdentity?.strategy?.$case === "dnsLikeIdentity" && a.tlsIdentity.strategy.value.name === PROXY_ID)).toBe(true);
  });

  it("watches its inbound port's policy with WatchPort over mTLS without ALPN", async () => {
    if (!existsSync(file("proxy.pem"))) await certify("web", "shop", "proxy");
    const client = { cert: readFileSync(file("proxy.pem"), "utf8"), key: readFileSync(file("proxy.key"), "utf8") };
    const session = await controlSession(destination!.policyPort, DESTINATION_SVC, anchors, client);
    sessions.push(session);
    // Rule 7.
    const watch = grpcCall(session, "/io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort", { workload: JSON.stringify({ ns: "shop", pod: "web-0" }), port: 8080 }, { req: PortSpec, res: InboundServer });
    const server = await waitFor(() => watch.messages[0], 10_000, "the port's first policy");
    watch.close();
    expect(server.protocol?.kind?.$case).toBe("http1");
    expect(JSON.stringify(server.labels)).toContain("web-http");
  });

  it("is refused without a client certificate by destination (mTLS), as Linkerd's proxy never connects without one", async () => {
    await expect(
      (async () => {
        const session = await controlSession(destination!.grpcPort, DESTINATION_SVC, anchors);
        sessions.push(session);
        const call = grpcCall(session, "/io.linkerd.proxy.destination.Destination/GetProfile", { scheme: "", path: "web.shop.svc.cluster.local:8080", contextToken: "" }, { req: GetDestination, res: DestinationProfile });
        const status = await call.status;
        if (status.code !== 0 || call.messages.length === 0) throw new Error(`refused: ${JSON.stringify(status)}`);
      })(),
    ).rejects.toThrow();
  });
});
