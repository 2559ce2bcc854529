import { once } from "node:events";
import tls from "node:tls";
import { pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOwnSockets } from "../own-sockets.js";
import { createStaticPolicySource } from "../static-policy.js";
import { createTestMesh, identityOf, type TestMesh } from "../test-mesh.js";
import { encodeHeader, TRANSPORT_ALPN } from "../transport-header.js";
import { opaqueTransportLayer } from "./opaque-transport.js";
import type { InboundTarget, Refusal } from "./target.js";

// Linkerd's inbound (linkerd2-proxy inbound/src/direct.rs): a transport header
// with a name is gateway traffic; one without names a local port, and its
// session protocol says what the client speaks.

describe("opaqueTransportLayer and Linkerd's transport header", () => {
  let mesh: TestMesh;
  let server: tls.Server;
  let port = 0;
  const results: (InboundTarget | Refusal)[] = [];

  beforeAll(async () => {
    mesh = await createTestMesh();
    const leaf = await mesh.issue(identityOf("web", "shop"));
    const own = createOwnSockets();
    const policy = createStaticPolicySource();
    server = tls.createServer(
      { key: leaf.privateKeyPem, cert: leaf.certificateChainPem, ca: pemEncode("CERTIFICATE", mesh.anchor.certificate), requestCert: true, rejectUnauthorized: true, ALPNProtocols: [TRANSPORT_ALPN], minVersion: "TLSv1.3" },
      (socket) => {
        socket.on("error", () => undefined);
        const target: InboundTarget = {
          listenerPort: 4143,
          client: { address: "127.0.0.1", port: 1 },
          port: 4143,
          workload: { host: "127.0.0.1", port: 4143 },
          tls: { tls: "true", peerId: identityOf("client") },
          clientId: identityOf("client"),
          policy: policy.current(4143),
        };
        void opaqueTransportLayer(target, socket, { timeoutMs: 2000, workloadHost: "127.0.0.1", declaredPorts: new Set(), skipPorts: new Set(), own, policy }).then((result) => {
          results.push(result);
          socket.end();
        });
      },
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => server.close());

  async function send(header: Buffer): Promise<InboundTarget | Refusal> {
    const client = await mesh.issue(identityOf("client"));
    const before = results.length;
    const socket = tls.connect({ host: "127.0.0.1", port, servername: identityOf("web", "shop"), ca: pemEncode("CERTIFICATE", mesh.anchor.certificate), key: client.privateKeyPem, cert: client.certificateChainPem, ALPNProtocols: [TRANSPORT_ALPN], checkServerIdentity: () => undefined });
    await once(socket, "secureConnect");
    socket.write(header);
    const deadline = Date.now() + 5000;
    while (results.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    socket.destroy();
    return results[before]!;
  }

  it("keeps a header's session protocol on the target", async () => {
    const result = await send(encodeHeader({ port: 8080, sessionProtocol: "http2" }));
    expect(result).toMatchObject({ port: 8080, sessionProtocol: "http2", workload: { host: "127.0.0.1", port: 8080 } });
  });

  it("refuses a header that names a target (gateway traffic): this proxy is not a gateway", async () => {
    const result = await send(encodeHeader({ port: 8080, name: "web.shop.svc.cluster.local" }));
    expect(result).toMatchObject({ errorLabel: "transport_header_gateway", refused: { code: "ERR_TARGET_FORBIDDEN" } });
  });
});
