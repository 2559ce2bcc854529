import { once } from "node:events";
import net from "node:net";
import tls from "node:tls";
import { decodeTransportHeader } from "@meshtls/api";
import { pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectEndpoint } from "./connect-endpoint.js";
import { createTlsCredentials, type TlsCredentials } from "./credentials.js";
import { createBundle, createStore, createTestMesh, identityOf, type TestMesh } from "./test-mesh.js";
import { TRANSPORT_ALPN } from "./transport-header.js";

// What a Linkerd destination may send, and how Linkerd's proxy uses it
// (linkerd2-proxy linkerd/proxy/api-resolve/src/pb.rs, outbound/src/tcp/tagged_transport.rs):
// a URI identity is checked against the URI SAN with server_name as the SNI;
// an authority_override endpoint is a gateway, reached with the transport ALPN
// and a header whose name and port are the override's.

interface Seen {
  sni: string | false;
  alpn: string | false | null;
  header?: ReturnType<typeof decodeTransportHeader>;
  /** The first decrypted chunk: one TLS record. */
  first?: Buffer;
}

describe("connectEndpoint with Linkerd's URI identities and authority overrides", () => {
  let mesh: TestMesh;
  let credentials: TlsCredentials;
  const servers: tls.Server[] = [];

  /** A mesh TLS server presenting a leaf for `dnsName` (test-mesh adds a SPIFFE URI SAN), recording SNI, ALPN and any transport header. */
  async function serve(dnsName: string): Promise<{ port: number; seen: Seen[] }> {
    const leaf = await mesh.issue(dnsName);
    const seen: Seen[] = [];
    const server = tls.createServer(
      {
        key: leaf.privateKeyPem,
        cert: leaf.certificateChainPem,
        ca: pemEncode("CERTIFICATE", mesh.anchor.certificate),
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.3",
        ALPNProtocols: [TRANSPORT_ALPN],
      },
      (socket) => {
        const entry: Seen = { sni: (socket as tls.TLSSocket & { servername: string | false }).servername, alpn: socket.alpnProtocol };
        seen.push(entry);
        socket.on("error", () => undefined);
        socket.once("data", (chunk: Buffer) => {
          entry.first = chunk;
          if (entry.alpn === TRANSPORT_ALPN) entry.header = decodeTransportHeader(chunk);
          socket.end("ok");
        });
      },
    );
    servers.push(server);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return { port: (server.address() as { port: number }).port, seen };
  }

  beforeAll(async () => {
    mesh = await createTestMesh();
    credentials = createTlsCredentials({ credentials: createStore(await mesh.issue(identityOf("client"))), trustBundle: createBundle([mesh.anchor.certificate]) });
  });
  afterAll(() => {
    for (const server of servers) server.close();
    credentials.close();
  });

  it("sends server_name as the SNI and checks a URI identity against the peer's URI SAN, refusing another", async () => {
    // test-mesh's leaves carry the URI SAN spiffe://cluster.local/ns/<ns>/sa/<sa> after their DNS SAN.
    const { port, seen } = await serve("vm.external.serviceaccount.identity.linkerd.cluster.local");
    const uri = "spiffe://cluster.local/ns/external/sa/vm";
    const connection = await connectEndpoint({
      endpoint: { address: "127.0.0.1", port, weight: 1, labels: {}, identity: uri, serverName: "vm.external.serviceaccount.identity.linkerd.cluster.local" },
      credentials,
    });
    expect(connection.tls).toEqual({ tls: "true", peerId: uri });
    connection.socket.write("hello");
    await once(connection.socket, "data");
    connection.socket.destroy();
    expect(seen[0]?.sni).toBe("vm.external.serviceaccount.identity.linkerd.cluster.local");
    await expect(
      connectEndpoint({
        endpoint: { address: "127.0.0.1", port, weight: 1, labels: {}, identity: "spiffe://cluster.local/ns/external/sa/other", serverName: "vm.external.serviceaccount.identity.linkerd.cluster.local" },
        credentials,
      }),
    ).rejects.toMatchObject({ code: "ERR_TLS_IDENTITY_MISMATCH" });
  });

  it("reaches a gateway with the transport ALPN and a header naming the override's host and port, even without an opaque-transport hint", async () => {
    const gateway = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";
    const { port, seen } = await serve(gateway);
    const connection = await connectEndpoint({
      endpoint: { address: "127.0.0.1", port, weight: 1, labels: {}, identity: gateway, authorityOverride: "web.shop.svc.cluster.local:8080" },
      credentials,
      authority: "web-remote.shop.svc.cluster.local:80",
      sessionProtocol: "http2",
    });
    connection.socket.write("hello");
    await once(connection.socket, "data");
    connection.socket.destroy();
    expect(seen[0]?.alpn).toBe(TRANSPORT_ALPN);
    expect(seen[0]?.header).toMatchObject({ port: 8080, name: "web.shop.svc.cluster.local", sessionProtocol: "http2" });
  });

  it("names no target in the header of a plain opaque-transport connection, and refuses a gateway without identity or with a malformed override", async () => {
    const id = identityOf("web", "shop");
    const { port, seen } = await serve(id);
    const connection = await connectEndpoint({ endpoint: { address: "127.0.0.1", port: 9, weight: 1, labels: {}, identity: id, opaqueTransportPort: port }, credentials, authority: "web.shop.svc.cluster.local:9" });
    connection.socket.write("hello");
    await once(connection.socket, "data");
    connection.socket.destroy();
    expect(seen[0]?.header).toMatchObject({ port: 9 });
    expect(seen[0]?.header?.name).toBeUndefined();
    await expect(connectEndpoint({ endpoint: { address: "127.0.0.1", port, weight: 1, labels: {}, authorityOverride: "web.shop:80" }, credentials })).rejects.toMatchObject({ code: "ERR_TLS_UNAUTHORIZED" });
    await expect(connectEndpoint({ endpoint: { address: "127.0.0.1", port, weight: 1, labels: {}, identity: id, authorityOverride: "web.shop" }, credentials })).rejects.toMatchObject({ code: "ERR_TARGET_FORBIDDEN" });
  });

  it("sends the caller's first bytes with the transport header in one TLS record, asked for only once every check passed", async () => {
    const id = identityOf("web", "shop");
    const { port, seen } = await serve(id);
    const endpoint = { address: "127.0.0.1", port: 9, weight: 1, labels: {}, identity: id, opaqueTransportPort: port };
    for (let i = 0; i < 2; i++) {
      // Twice: the second connection sends the same header bytes, kept from the first.
      const connection = await connectEndpoint({ endpoint, credentials, firstBytes: () => Buffer.from("hello") });
      await once(connection.socket, "data");
      connection.socket.destroy();
      const header = seen[i]?.header;
      expect(header).toMatchObject({ port: 9 });
      expect(seen[i]?.first?.subarray(header?.byteLength).toString()).toBe("hello");
    }
    let asked = 0;
    const firstBytes = (): Buffer => (asked++, Buffer.from("secret"));
    await expect(connectEndpoint({ endpoint: { ...endpoint, identity: identityOf("other", "shop") }, credentials, firstBytes })).rejects.toMatchObject({ code: "ERR_TLS_IDENTITY_MISMATCH" });
    expect(asked).toBe(0);
  });

  it("an IPv6 endpoint (here one without an identity) is `[v6]:port` in `remote` (labels and messages), its host and port in `dialled`", async () => {
    const server = net.createServer((socket) => socket.end());
    server.listen(0, "::1");
    await once(server, "listening");
    const { port } = server.address() as net.AddressInfo;
    try {
      const connection = await connectEndpoint({ endpoint: { address: "::1", port, weight: 1, labels: {} }, credentials, authority: "plain.test:80", connectTimeoutMs: 2000 });
      connection.socket.destroy();
      expect(connection.remote).toBe(`[::1]:${port}`);
      expect(connection.dialled).toEqual({ host: "::1", port });
    } finally {
      server.close();
    }
  });
});
