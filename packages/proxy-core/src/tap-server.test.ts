import net from "node:net";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { pemEncode } from "@meshtls/pki";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTlsCredentials } from "./credentials.js";
import type { TlsCredentials } from "./credentials.js";
import { createTapHub } from "./tap.js";
import type { TapEvent, TapHub } from "./tap.js";
import { createTapServer } from "./tap-server.js";
import type { TapServer } from "./tap-server.js";
import type { TrustBundleSource } from "./sources.js";
import { createBundle, createStore, createTestMesh, identityOf } from "./test-mesh.js";
import type { TestMesh } from "./test-mesh.js";

interface Client {
  /** `secure`, or the error that ended the connection. */
  result: Promise<{ status: number; body: string; lines: string[] } | { error: string }>;
  socket: tls.TLSSocket;
}

/** A raw HTTP/1.1 `GET /tap` over mutual TLS with `cert`/`key` (none: no client certificate), reading what comes back. */
function tapClient(address: AddressInfo, anchorsPem: string, client: { key: string; cert: string } | undefined): Client {
  const socket = tls.connect({ host: "127.0.0.1", port: address.port, ca: anchorsPem, ...client, checkServerIdentity: () => undefined, minVersion: "TLSv1.3", ALPNProtocols: ["http/1.1"] });
  const result = new Promise<{ status: number; body: string; lines: string[] } | { error: string }>((resolve) => {
    let text = "";
    let settled = false;
    const settle = (): void => {
      if (settled) return;
      const m = /^HTTP\/1\.1 (\d{3})[^\n]*\r\n[\s\S]*?\r\n\r\n([\s\S]*)$/.exec(text);
      if (m === null) return;
      settled = true;
      resolve({ status: Number(m[1]), body: m[2] ?? "", lines: (m[2] ?? "").split("\n").filter((l) => l.startsWith("{")) });
    };
    socket.setEncoding("utf8");
    socket.on("secureConnect", () => socket.write("GET /tap HTTP/1.1\r\nhost: tap\r\n\r\n"));
    socket.on("data", (chunk: string) => {
      text += chunk;
      // A 200 streams on: resolve at its first event line; any other status at its body.
      if (/^HTTP\/1\.1 200/.test(text) ? /\n\{.*\n/.test(text) : /\r\n\r\n[\s\S]*\n$/.test(text)) settle();
    });
    socket.on("error", (error) => {
      if (!settled) resolve({ error: (error as NodeJS.ErrnoException).code ?? error.message });
      settled = true;
    });
    socket.on("close", () => {
      if (!settled) resolve({ error: "closed" });
      settled = true;
    });
  });
  return { result, socket };
}

describe("createTapServer: tap over mutual TLS for allowed mesh identities only", () => {
  let mesh: TestMesh;
  let credentials: TlsCredentials;
  let bundle: TrustBundleSource;
  let hub: TapHub;
  let server: TapServer;
  let address: AddressInfo;
  let anchorsPem: string;
  let ops: { key: string; cert: string };
  let web: { key: string; cert: string };
  let foreign: { key: string; cert: string };

  beforeAll(async () => {
    mesh = await createTestMesh();
    anchorsPem = pemEncode("CERTIFICATE", mesh.anchor.certificate);
    const own = await mesh.issue(identityOf("api"));
    bundle = createBundle([mesh.anchor.certificate]);
    credentials = createTlsCredentials({ credentials: createStore(own), trustBundle: bundle });
    hub = createTapHub({ registry: new Registry() });
    server = createTapServer({ tap: hub, credentials, trustBundle: bundle, allow: [identityOf("ops", "tools")] });
    address = await server.listen({ host: "127.0.0.1", port: 0 });
    const asClient = (c: { privateKeyPem: string; certificateChainPem: string }): { key: string; cert: string } => ({ key: c.privateKeyPem, cert: c.certificateChainPem });
    ops = asClient(await mesh.issue(identityOf("ops", "tools")));
    web = asClient(await mesh.issue(identityOf("web")));
    const other = await createTestMesh();
    foreign = asClient(await other.issue(identityOf("ops", "tools")));
  }, 30_000);

  afterAll(async () => {
    await server?.close();
    credentials?.close();
  });

  it("no client certificate: the handshake fails (certificate required); nothing is subscribed", async () => {
    const { result } = tapClient(address, anchorsPem, undefined);
    expect(await result).toEqual({ error: "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED" });
    expect(hub.hasSubscribers()).toBe(false);
  });

  it("a certificate of another mesh (same identity name, foreign issuer): refused by the handshake", async () => {
    // TLS 1.3: the client's side of the handshake is done before the server's check; the connection is closed unanswered.
    const outcome = await tapClient(address, anchorsPem, foreign).result;
    expect(outcome).not.toHaveProperty("status");
    expect(hub.hasSubscribers()).toBe(false);
  });

  it("a valid mesh identity that --tap-allow does not name: 403, nothing subscribed", async () => {
    const outcome = await tapClient(address, anchorsPem, web).result;
    expect(outcome).toMatchObject({ status: 403 });
    expect((outcome as { body: string }).body).toContain(identityOf("web"));
    expect(hub.hasSubscribers()).toBe(false);
  });

  it("an allowed identity streams the events published after it subscribed", async () => {
    const client = tapClient(address, anchorsPem, ops);
    await new Promise<void>((resolve, reject) => {
      const until = Date.now() + 5_000;
      const poll = (): void => {
        if (hub.hasSubscribers()) resolve();
        else if (Date.now() > until) reject(new Error("no subscriber"));
        else setTimeout(poll, 10);
      };
      poll();
    });
    const event: TapEvent = { type: "authz", timeMs: Date.now(), direction: "inbound", proto: "tcp", targetAddr: "127.0.0.1:8080", allow: true, reason: "authenticated", server: { group: "", kind: "default", name: "all-authenticated" } };
    hub.publish(event);
    const outcome = await client.result;
    expect(outcome).toMatchObject({ status: 200 });
    expect(JSON.parse((outcome as { lines: string[] }).lines[0]!)).toEqual(event);
    client.socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(hub.hasSubscribers()).toBe(false);
  });

  it("default allow list is empty: even a valid mesh client is refused", async () => {
    const closed = createTapServer({ tap: hub, credentials, trustBundle: bundle });
    const at = await closed.listen({ host: "127.0.0.1", port: 0 });
    try {
      expect(await tapClient(at, anchorsPem, ops).result).toMatchObject({ status: 403 });
    } finally {
      await closed.close();
    }
  });

  it("connections beyond maxConnections are closed at once and reported by onRefused", async () => {
    let refused = 0;
    const capped = createTapServer({ tap: hub, credentials, trustBundle: bundle, maxConnections: 2, onRefused: () => refused++ });
    const at = await capped.listen({ host: "127.0.0.1", port: 0 });
    const sockets: net.Socket[] = [];
    try {
      const closedAtOnce = await Promise.all(
        Array.from({ length: 5 }, async (_, i) => {
          // One at a time: the first two are held (idle, before any handshake), the rest are beyond the cap.
          await new Promise((resolve) => setTimeout(resolve, i * 50));
          const socket = net.connect({ host: "127.0.0.1", port: at.port });
          sockets.push(socket);
          socket.on("error", () => undefined);
          return new Promise<boolean>((resolve) => {
            socket.once("close", () => resolve(true));
            setTimeout(() => resolve(false), 1500);
          });
        }),
      );
      expect(closedAtOnce.filter(Boolean).length).toBe(3);
      expect(refused).toBe(3);
    } finally {
      for (const socket of sockets) socket.destroy();
      await capped.close();
    }
  });
});
